"""Routes on a site's parts: shared links, goals, custom properties and guests (§7.7 to §7.16)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote_plus

import plausible_rules as rules
from sandbox.http import Call, error, internal_error
from sandbox.pagination import paginate
from sandbox.sites import READ_ROLES, WRITE_ROLES, find_site
from sandbox.state import Goal, Guest, Site

PROPS_NOT_INCLUDED = "Your current subscription plan does not include Custom Properties"
#: Props Plausible uses itself; they are allowed without the Props feature.
INTERNAL_PROPS = frozenset({"url", "path", "search_query"})
MAX_PROPS_PER_SITE = 300
MAX_PROP_LENGTH = 300
_INTEGER = re.compile(r"[+-]?\d+")
_CURRENCY = re.compile(r"[A-Z]{3}")


def _expect(params: dict[str, Any], name: str, what: str) -> Any:
    """Plausible only checks that the key is present: a JSON null passes."""
    if name not in params:
        raise error(400, f"Parameter `{name}` is required to {what}")
    return params[name]


def find_or_create_shared_link(call: Call) -> dict[str, Any]:
    name = _expect(call.params, "name", "create a shared link")
    site = find_site(call, call.params["site_id"], WRITE_ROLES)
    if name is None:
        # Repo.get_by(name: nil) raises.
        raise internal_error()
    if name not in site.shared_links:
        if "SharedLinks" not in call.world.teams[site.team_id].features:
            raise error(402, "Your current subscription plan does not include Shared Links")
        if not isinstance(name, str):
            raise error(400, "is invalid")
        if name.strip() == "":
            raise error(400, "can't be blank")
        if name in rules.RESERVED_SHARED_LINK_NAMES:
            raise error(400, "This name is reserved. Please choose another one")
        site.shared_links[name] = call.world.nanoid()
    url = (
        f"{call.base_url}/share/{quote_plus(site.domain, safe='~')}?auth={site.shared_links[name]}"
    )
    return {"name": name, "url": url}


def _goal_entry(goal: Goal) -> dict[str, Any]:
    return {
        "id": goal.id,
        "display_name": goal.display_name,
        "goal_type": goal.goal_type,
        "event_name": goal.event_name,
        "page_path": goal.page_path,
        "custom_props": dict(goal.custom_props),
    }


def list_goals(call: Call) -> dict[str, Any]:
    site = find_site(call, call.params["site_id"], READ_ROLES)
    goals = sorted(call.world.site_goals(site), key=lambda g: -g.id)
    page, meta = paginate(goals, call.params, lambda g: g.id)
    return {"goals": [_goal_entry(g) for g in page], "meta": meta}


def _custom_props_error(props: Any) -> str | None:
    if not isinstance(props, dict):
        return "custom_props: is invalid"
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in props.items()):
        return "custom_props: must be a map with string keys and string values"
    if len(props) > 3:
        return "custom_props: use at most 3 properties per goal"
    if not all(1 <= len(k) <= 300 for k in props):
        return "custom_props: key length is 1..300 characters"
    if not all(1 <= len(v) <= 2000 for v in props.values()):
        return "custom_props: value length is 1..2000 characters"
    return None


def _scroll_threshold(raw: Any) -> int | str:
    if raw is None:
        return -1
    if isinstance(raw, str) and _INTEGER.fullmatch(raw):
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int):
        return "scroll_threshold: is invalid"
    if raw < -1:
        return "scroll_threshold: must be greater than or equal to -1"
    if raw > 100:
        return "scroll_threshold: must be less than or equal to 100"
    return raw


def _goal_errors(params: dict[str, Any], goal: Goal, over_limit: bool) -> list[str]:
    errors: list[str] = []
    if goal.event_name is not None:
        if goal.event_name in rules.RESERVED_EVENT_NAMES:
            errors.append("page_path: this field is required and must start with a /")
            errors.append(
                f"event_name: The event name '{goal.event_name}' is reserved and cannot be used as a goal"
            )
        elif len(goal.event_name) > rules.MAX_EVENT_NAME_LENGTH:
            errors.append("event_name: should be at most 120 character(s)")
        if params.get("page_path") not in (None, ""):
            errors.append("event_name: cannot co-exist with page_path")
    if over_limit:
        errors += [
            "event_name: Maximum number of goals reached",
            "page_path: Maximum number of goals reached",
        ]
    return errors


def _build_goal(call: Call, site: Site) -> Goal:
    params = call.params
    goal_type = params["goal_type"]
    event_name: str | None = None
    page_path: str | None = None
    threshold: int | str = -1
    if goal_type == "event":
        raw_event = params.get("event_name")
        if not isinstance(raw_event, str):
            raise error(400, "Parameter `event_name` is required to create a goal")
        event_name = rules.normalise_event_name(raw_event)
    elif goal_type == "page":
        if "page_path" not in params:
            raise error(400, "Parameter `page_path` is required to create a goal")
        raw_path = params["page_path"]
        if raw_path is None:
            raise error(400, "page_path: this field is required and must start with a /")
        if not isinstance(raw_path, str):
            raise error(400, "page_path: is invalid")
        page_path = rules.normalise_page_path(raw_path)
        threshold = _scroll_threshold(params.get("scroll_threshold"))
        if isinstance(threshold, str):
            raise error(400, threshold)
    else:
        # A FunctionClauseError in Plausible.Goals.
        raise internal_error()
    if "custom_props" in params and params["custom_props"] is None:
        raise internal_error()
    props = params.get("custom_props", {})
    features = call.world.teams[site.team_id].features
    currency = params.get("currency") if goal_type == "event" else None
    if (props != {} and "Props" not in features) or (
        currency is not None and "RevenueGoals" not in features
    ):
        raise error(402, PROPS_NOT_INCLUDED)
    props_error = _custom_props_error(props)
    if props_error:
        raise error(400, props_error)
    if currency is not None and not (isinstance(currency, str) and _CURRENCY.fullmatch(currency)):
        raise error(400, "currency: is invalid")
    display = params.get("display_name")
    if display is not None and not isinstance(display, str):
        raise error(400, "display_name: is invalid")
    display = display.strip() if display and display.strip() else None
    display = display or rules.default_display_name(event_name=event_name, page_path=page_path)
    return Goal(0, site.id, event_name, page_path, int(threshold), display, props, currency)


def find_or_create_goal(call: Call) -> dict[str, Any]:
    _expect(call.params, "goal_type", "create a goal")
    site = find_site(call, call.params["site_id"], WRITE_ROLES)
    goal = _build_goal(call, site)
    existing = call.world.site_goals(site)
    same = [
        g
        for g in existing
        if g.event_name == goal.event_name
        and g.page_path == goal.page_path
        and g.custom_props == goal.custom_props
        and (goal.event_name is not None or g.scroll_threshold == goal.scroll_threshold)
    ]
    over_limit = not same and len(existing) >= call.settings.max_goals_per_site
    errors = _goal_errors(call.params, goal, over_limit)
    if errors:
        raise error(400, ", ".join(errors))
    if goal.event_name is not None and goal.currency is not None:
        for other in same:
            if other.currency not in (None, goal.currency):
                raise error(
                    400,
                    f"event_name: '{goal.event_name}' (with currency: {other.currency}) has already been taken",
                )
    if same or any(g.display_name == goal.display_name for g in existing):
        # ON CONFLICT DO NOTHING, then a lookup by event name or page path alone.
        matches = [
            g
            for g in existing
            if (
                g.event_name == goal.event_name
                if goal.event_name
                else g.page_path == goal.page_path
            )
        ]
        if not matches:
            raise internal_error(404)
        if len(matches) > 1:
            raise internal_error()
        goal = matches[0]
    else:
        goal.id = call.world.new_id()
        call.world.goals[goal.id] = goal
    return {**_goal_entry(goal), "domain": site.domain}


def delete_goal(call: Call) -> dict[str, Any]:
    site = find_site(call, call.params["site_id"], WRITE_ROLES)
    raw_id = call.params["goal_id"]
    if not isinstance(raw_id, str) or not _INTEGER.fullmatch(raw_id):
        # Ecto.Query.CastError inside the controller.
        raise internal_error(400)
    goal = call.world.goals.get(int(raw_id))
    if goal is None or goal.site_id != site.id:
        raise error(404, "Goal could not be found")
    del call.world.goals[goal.id]
    return {"deleted": True}


def list_custom_props(call: Call) -> dict[str, Any]:
    site = find_site(call, call.params["site_id"], READ_ROLES)
    return {"custom_properties": [{"property": p} for p in sorted(site.custom_props)]}


def add_custom_prop(call: Call) -> dict[str, Any]:
    raw = _expect(call.params, "property", "create a custom property")
    site = find_site(call, call.params["site_id"], WRITE_ROLES)
    if raw is None:
        raise internal_error()
    if not isinstance(raw, str):
        raise error(400, "Parameter `property` is invalid")
    prop = raw.strip()
    if prop not in INTERNAL_PROPS and "Props" not in call.world.teams[site.team_id].features:
        raise error(402, PROPS_NOT_INCLUDED)
    if prop == "" or len(prop) > MAX_PROP_LENGTH:
        raise error(400, "Parameter `property` is too long")
    if prop not in site.custom_props and len(site.custom_props) >= MAX_PROPS_PER_SITE:
        raise error(400, "Can't add any more custom properties")
    site.custom_props = [prop, *(p for p in site.custom_props if p != prop)]
    return {"created": True}


def delete_custom_prop(call: Call) -> dict[str, Any]:
    site = find_site(call, call.params["site_id"], WRITE_ROLES)
    prop = "/".join(call.params["property"])
    site.custom_props = [p for p in site.custom_props if p != prop]
    return {"deleted": True}


def _guest_entry(guest: Guest) -> dict[str, Any]:
    return {"email": guest.email, "role": guest.role, "status": guest.status}


def list_guests(call: Call) -> dict[str, Any]:
    site = find_site(call, call.params["site_id"], READ_ROLES)
    accepted = sorted((g for g in site.guests if g.status == "accepted"), key=lambda g: -g.id)
    invited = sorted((g for g in site.guests if g.status == "invited"), key=lambda g: g.id)
    ordered = accepted + invited
    # Cursor positions must decrease along the list, whatever the mixed order.
    rank = {id(g): len(ordered) - i for i, g in enumerate(ordered)}
    page, meta = paginate(ordered, call.params, lambda g: rank[id(g)])
    return {"guests": [_guest_entry(g) for g in page], "meta": meta}


def find_or_create_guest(call: Call) -> dict[str, Any]:
    params = call.params
    email = _expect(params, "email", "create guest")
    if params.get("role") not in ("viewer", "editor"):
        raise error(
            400,
            "Parameter `role` is required to create guest. Possible values: `viewer` or `editor`",
        )
    site = find_site(call, params["site_id"], ("owner", "admin"))
    existing = next((g for g in site.guests if g.email == email), None)
    if existing is None:
        if not isinstance(email, str) or email in call.world.member_emails(site.team_id):
            # The invite is refused and the controller's case has no clause for it.
            raise internal_error()
        existing = Guest(call.world.new_id(), email, params["role"])
        site.guests.append(existing)
    return _guest_entry(existing)


def delete_guest(call: Call) -> dict[str, Any]:
    site = find_site(call, call.params["site_id"], ("owner", "admin"))
    site.guests = [g for g in site.guests if g.email != call.params["email"]]
    return {"deleted": True}

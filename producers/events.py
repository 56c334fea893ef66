"""Signup events: the one place that turns a producer's input into a provisioning request.

An event is a JSON object (a JSON Lines row, a CSV row mapped to one, an HTTP body, a stream
entry):

    {"id": "evt_123", "type": "site.provision", "domain": "shop.example.com",
     "timezone": "Europe/Berlin",
     "goals": [{"goal_type": "event", "event_name": "Signup"},
               {"goal_type": "page", "page_path": "/pricing/*"}],
     "shared_links": ["WordPress"]}

``site.provision`` may also name ``custom_props`` (property names) and ``guests``
(``{"email", "role"}``). ``site.delete`` takes a ``domain``; ``goal.delete`` takes a ``domain`` and
a goal, as ``goal_id`` (an integer >= 1) or as ``event_name`` / ``page_path``;
``custom_prop.delete`` a ``domain`` and a ``property``; ``guest.delete`` a ``domain`` and an
``email``; ``tracker.set`` a ``domain`` and the ``tracker_script_configuration`` settings to
change (which ``site.provision`` may also name, to create the site with). ``id`` is the idempotency key
(a string or an integer, trimmed; ``parse_key``); without one the key is derived from the request.
Any event may name its ``account`` (default ``default``) and its ``priority`` class
(``interactive`` or ``bulk``; without one the producer decides), and a ``callback_url`` to POST
the job to once it is done (``worker.webhooks``: an http(s) URL with a host, no user name or
password, at most 2048 characters, on a host ``PROVISIONER_WEBHOOK_ALLOWED_HOSTS`` allows, that
resolves to public addresses only: ``worker.egress``).
Validation applies Plausible's own rules (``plausible_rules``), so an event that passes here is not
refused by Plausible for its shape. Every string anywhere in the event, keys included, must be
encodable as UTF-8 (no lone surrogate) and hold no NUL character; the event may nest at most
``MAX_DEPTH`` levels. Any problem raises InvalidRequestError naming the field.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import plausible_rules as rules
from worker.egress import Targets
from worker.errors import InvalidRequestError
from worker.jobs.intake import NewJob
from worker.jobs.specs import GoalSpec, GuestSpec, JobRequest
from worker.jobs.states import DEFAULT_ACCOUNT, Operation, Priority
from worker.settings import get_settings

EVENT_TYPES: dict[str, Operation] = {
    "site.provision": Operation.provision_site,
    "site.delete": Operation.delete_site,
    "goal.delete": Operation.delete_goal,
    "custom_prop.delete": Operation.delete_prop,
    "guest.delete": Operation.delete_guest,
    "tracker.set": Operation.set_tracker,
}
MAX_KEY_LENGTH = 255
MAX_CUSTOM_PROPS = 3
#: Plausible's default per-site goal limit; a request above it can never fully succeed.
MAX_GOALS = 1000
#: Shared links per site; each is one API call, and a site rarely needs more than a few.
MAX_SHARED_LINKS = 100
#: Plausible's per-site limit of custom properties (§7.12) and a property name's length.
MAX_SITE_CUSTOM_PROPS = 300
MAX_CUSTOM_PROP_LENGTH = 300
#: Guests per event; each is one API call (and one invitation email).
MAX_GUESTS = 100
GUEST_ROLES = ("viewer", "editor")
#: The event field (and Plausible's) of a site's tracker script settings.
TRACKER = "tracker_script_configuration"
#: Deepest nesting an event can need is 4 (event > goals > goal > custom_props).
MAX_DEPTH = 8
#: Plausible's goal ids are PostgreSQL bigints.
MAX_GOAL_ID = 2**63 - 1


@dataclass(frozen=True)
class Event:
    key: str | None
    request: JobRequest
    #: The class the event asked for; None lets the producer choose.
    priority: Priority | None = None

    def job(self, default: Priority) -> NewJob:
        return NewJob(self.key, self.request, self.priority or default)


def parse_event(
    data: object,
    *,
    accounts: Collection[str] | None = None,
    targets: Targets | None = None,
) -> Event:
    """Validate one event; raises InvalidRequestError naming the field at fault. With
    ``accounts``, an account outside it is refused. ``targets`` are the rules a ``callback_url``
    is held to (``worker.egress``); None: the process's settings."""
    if not isinstance(data, Mapping):
        raise InvalidRequestError("an event must be a JSON object", field=None)
    check_strings(data)
    key = parse_key(data.get("id"))
    account = _account(data.get("account"), accounts)
    callback_url = _callback_url(data.get("callback_url"), targets)
    priority = _priority(data.get("priority"))
    kind = data.get("type", "site.provision")
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        raise InvalidRequestError(
            f"unknown type {_shown(kind)}; expected one of {', '.join(EVENT_TYPES)}", field="type"
        )
    operation = EVENT_TYPES[kind]
    domain = parse_domain(data.get("domain"))
    if operation is Operation.provision_site:
        request = JobRequest(
            operation=operation,
            domain=domain,
            timezone=_timezone(data.get("timezone")),
            goals=_goals(data.get("goals")),
            shared_links=_links(data.get("shared_links")),
            custom_props=parse_custom_props(data.get("custom_props"), field="custom_props"),
            guests=parse_guests(data.get("guests"), field="guests"),
            tracker_script_configuration=parse_tracker(data.get(TRACKER), field=TRACKER),
            account=account,
        )
    elif operation is Operation.set_tracker:
        if data.get(TRACKER) is None:
            raise InvalidRequestError(f"{kind} needs {TRACKER}", field=TRACKER)
        tracker = parse_tracker(data.get(TRACKER), field=TRACKER)
        request = JobRequest(
            operation=operation,
            domain=domain,
            tracker_script_configuration=tracker,
            account=account,
        )
    elif operation is Operation.delete_prop:
        prop = parse_custom_prop(data.get("property"), field="property")
        request = JobRequest(operation=operation, domain=domain, custom_prop=prop, account=account)
    elif operation is Operation.delete_guest:
        email = parse_email(data.get("email"), field="email")
        request = JobRequest(operation=operation, domain=domain, email=email, account=account)
    elif operation is Operation.delete_site:
        request = JobRequest(operation=operation, domain=domain, account=account)
    else:
        request = _goal_delete(data, domain).model_copy(update={"account": account})
    if callback_url is not None:
        request = request.model_copy(update={"callback_url": callback_url})
    return Event(key, request, priority)


def _callback_url(value: object, targets: Targets | None) -> str | None:
    if value is None:
        return None
    if targets is None:
        targets = Targets.of(get_settings())
    problem = targets.problem(value)
    if problem is not None:
        raise InvalidRequestError(f"callback_url {problem}", field="callback_url")
    assert isinstance(value, str)
    return value.strip()


def _account(value: object, known: Collection[str] | None) -> str:
    if value is None:
        return DEFAULT_ACCOUNT
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError("account must be a non-empty string", field="account")
    name = value.strip()
    if known is not None and name not in known:
        raise InvalidRequestError(
            f"unknown account {name!r}; configured: {', '.join(sorted(known))}", field="account"
        )
    return name


def _priority(value: object) -> Priority | None:
    if value is None:
        return None
    if value not in ("interactive", "bulk"):
        raise InvalidRequestError(
            f"unknown priority {_shown(value)}; expected 'interactive' or 'bulk'", field="priority"
        )
    return Priority(value)


def parse_domain(value: object) -> str:
    if value is None or value == "":
        raise InvalidRequestError("domain is required", field="domain")
    if not isinstance(value, str):
        raise InvalidRequestError("domain must be a string", field="domain")
    domain = rules.normalise_domain(value)
    problem = rules.domain_error(domain)
    if problem is not None:
        raise InvalidRequestError(problem.removeprefix("domain: "), field="domain")
    if len(domain) > rules.MAX_DOMAIN_LENGTH:
        raise InvalidRequestError(
            f"domain is {len(domain)} characters long; at most {rules.MAX_DOMAIN_LENGTH} allowed",
            field="domain",
        )
    return domain


def check_strings(value: object, field: str | None = None, depth: int = 0) -> None:
    """Refuse any string, at any depth (mapping keys too), that no database can store: one with
    a NUL character or a lone surrogate (not encodable as UTF-8). Also bounds the nesting."""
    if isinstance(value, str):
        _check_text(value, field)
    elif isinstance(value, Mapping | list | tuple):
        if depth >= MAX_DEPTH:
            raise InvalidRequestError(f"nested more than {MAX_DEPTH} levels deep", field=field)
        if isinstance(value, Mapping):
            for name, item in value.items():
                if isinstance(name, str):
                    _check_text(name, field, what=f"a key of {field or 'the event'}")
                    check_strings(item, name if field is None else f"{field}.{name}", depth + 1)
                else:
                    check_strings(item, field, depth + 1)
        else:
            for index, item in enumerate(value):
                check_strings(item, f"{field or ''}[{index}]", depth + 1)


def _check_text(text: str, field: str | None, *, what: str | None = None) -> None:
    subject = what or field or "the event"
    if "\x00" in text:
        raise InvalidRequestError(f"{subject} contains a NUL character", field=field)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(
            f"{subject} is not valid Unicode (lone surrogate {text[exc.start]!r} at position "
            f"{exc.start})",
            field=field,
        ) from None


def parse_key(value: object) -> str | None:
    """An idempotency key as given (a string or an integer), trimmed; None if absent."""
    if value is None:
        return None
    if isinstance(value, int) and abs(value) >= 10**MAX_KEY_LENGTH:  # str() fails past 4300 digits
        raise InvalidRequestError(f"id is longer than {MAX_KEY_LENGTH} characters", field="id")
    if not isinstance(value, str | int) or isinstance(value, bool) or str(value).strip() == "":
        raise InvalidRequestError("id must be a non-empty string", field="id")
    key = str(value).strip()
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidRequestError(f"id is longer than {MAX_KEY_LENGTH} characters", field="id")
    return key


def _shown(value: object) -> str:
    """``repr(value)`` for a message; an integer too long to print (over 4300 digits) is not."""
    try:
        return repr(value)
    except ValueError:
        return f"(a {type(value).__name__} too large to show)"


def _timezone(value: object) -> str | None:
    if value is None:
        return None  # Plausible defaults an omitted timezone to Etc/UTC
    if not rules.is_valid_timezone(value):
        raise InvalidRequestError(
            f"{_shown(value)} is not an IANA timezone such as 'Europe/Berlin'", field="timezone"
        )
    assert isinstance(value, str)
    return value


def _goals(value: object) -> tuple[GoalSpec, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidRequestError("goals must be a list", field="goals")
    if len(value) > MAX_GOALS:
        raise InvalidRequestError(f"at most {MAX_GOALS} goals per site", field="goals")
    goals: dict[str, GoalSpec] = {}
    display_names: dict[str, int] = {}
    for index, item in enumerate(value):
        goal = parse_goal(item, field=f"goals[{index}]")
        if goal.natural_key in goals:
            continue  # Plausible would return the same goal twice
        # Plausible keeps display names unique per site; a clash with a different goal makes its
        # find-or-create fail (a 404 "internal server error"), so refuse it here.
        name = goal.display_name or rules.default_display_name(
            event_name=goal.event_name, page_path=goal.page_path
        )
        if name in display_names:
            raise InvalidRequestError(
                f"display name {name!r} is also that of goals[{display_names[name]}]; "
                "Plausible needs a distinct display_name per goal",
                field=f"goals[{index}].display_name",
            )
        display_names[name] = index
        goals[goal.natural_key] = goal
    return tuple(goals.values())


def parse_goal(item: object, *, field: str) -> GoalSpec:
    if not isinstance(item, Mapping):
        raise InvalidRequestError("a goal must be an object", field=field)
    goal_type = item.get("goal_type")
    if goal_type not in ("event", "page"):
        raise InvalidRequestError(
            f"unknown goal_type {_shown(goal_type)}; expected 'event' or 'page'",
            field=f"{field}.goal_type",
        )
    event_name = page_path = None
    if goal_type == "event":
        raw = item.get("event_name")
        if not isinstance(raw, str) or not rules.normalise_event_name(raw):
            raise InvalidRequestError("event goals need an event_name", field=f"{field}.event_name")
        event_name = rules.normalise_event_name(raw)
        if len(event_name) > rules.MAX_EVENT_NAME_LENGTH:
            raise InvalidRequestError(
                f"event_name is longer than {rules.MAX_EVENT_NAME_LENGTH} characters",
                field=f"{field}.event_name",
            )
        if event_name in rules.RESERVED_EVENT_NAMES:
            raise InvalidRequestError(
                f"event name {event_name!r} is reserved", field=f"{field}.event_name"
            )
    else:
        raw = item.get("page_path")
        if not isinstance(raw, str) or not raw.strip():
            raise InvalidRequestError("page goals need a page_path", field=f"{field}.page_path")
        page_path = rules.normalise_page_path(raw)
    display_name = item.get("display_name")
    if display_name is not None and (not isinstance(display_name, str) or not display_name.strip()):
        raise InvalidRequestError(
            "display_name must be a non-empty string", field=f"{field}.display_name"
        )
    return GoalSpec(
        goal_type=goal_type,
        event_name=event_name,
        page_path=page_path,
        display_name=display_name.strip() if isinstance(display_name, str) else None,
        custom_props=_custom_props(item.get("custom_props"), field=f"{field}.custom_props"),
    )


def _custom_props(value: object, *, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidRequestError("custom_props must map strings to strings", field=field)
    if len(value) > MAX_CUSTOM_PROPS:
        raise InvalidRequestError(
            f"use at most {MAX_CUSTOM_PROPS} custom properties per goal", field=field
        )
    for k, v in value.items():
        if not 1 <= len(k) <= 300:
            raise InvalidRequestError("custom property names are 1..300 characters", field=field)
        if not 1 <= len(v) <= 2000:
            raise InvalidRequestError("custom property values are 1..2000 characters", field=field)
    return dict(value)


def _links(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidRequestError("shared_links must be a list of names", field="shared_links")
    if len(value) > MAX_SHARED_LINKS:
        raise InvalidRequestError(
            f"at most {MAX_SHARED_LINKS} shared links per site", field="shared_links"
        )
    names: list[str] = []
    for index, name in enumerate(value):
        where = f"shared_links[{index}]"
        if not isinstance(name, str) or not name.strip():
            raise InvalidRequestError("a shared link name must be a non-empty string", field=where)
        name = name.strip()
        if name in rules.RESERVED_SHARED_LINK_NAMES:
            raise InvalidRequestError(f"the name {name!r} is reserved by Plausible", field=where)
        if name not in names:
            names.append(name)
    return tuple(names)


def parse_custom_props(value: object, *, field: str) -> tuple[str, ...]:
    """A site's custom properties: names Plausible accepts (trimmed, 1..300 characters), each
    once, at most ``MAX_SITE_CUSTOM_PROPS``."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidRequestError("custom_props must be a list of property names", field=field)
    if len(value) > MAX_SITE_CUSTOM_PROPS:
        raise InvalidRequestError(
            f"at most {MAX_SITE_CUSTOM_PROPS} custom properties per site", field=field
        )
    props = [parse_custom_prop(item, field=f"{field}[{n}]") for n, item in enumerate(value)]
    return tuple(dict.fromkeys(props))


def parse_custom_prop(value: object, *, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError("a custom property must be a non-empty string", field=field)
    prop = value.strip()
    if len(prop) > MAX_CUSTOM_PROP_LENGTH:
        raise InvalidRequestError(
            f"a custom property is at most {MAX_CUSTOM_PROP_LENGTH} characters", field=field
        )
    return prop


def parse_guests(value: object, *, field: str) -> tuple[GuestSpec, ...]:
    """Guests to invite: ``{"email": ..., "role": "viewer" | "editor"}``, one per email."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidRequestError("guests must be a list of objects", field=field)
    if len(value) > MAX_GUESTS:
        raise InvalidRequestError(f"at most {MAX_GUESTS} guests per site", field=field)
    guests: dict[str, GuestSpec] = {}
    for index, item in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(item, Mapping):
            raise InvalidRequestError("a guest must be an object with email and role", field=where)
        email = parse_email(item.get("email"), field=f"{where}.email")
        role = item.get("role")
        if role not in GUEST_ROLES:
            raise InvalidRequestError(
                f"unknown role {_shown(role)}; expected 'viewer' or 'editor'", field=f"{where}.role"
            )
        if email in guests and guests[email].role != role:
            raise InvalidRequestError(f"{email} is listed twice with different roles", field=where)
        guests[email] = GuestSpec(email=email, role=role)
    return tuple(guests.values())


def parse_tracker(value: object, *, field: str) -> dict[str, Any] | None:
    """Tracker script settings to change (Plausible merges them into the site's, §10):
    ``installation_type`` (``manual``, ``wordpress``, ``gtm``, ``npm`` or null) and switches,
    each true or false; at least one. Returned in Plausible's cast order."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or not value:
        raise InvalidRequestError(
            'must be an object naming at least one setting, such as {"outbound_links": true}',
            field=field,
        )
    for name in value:
        if name != "installation_type" and name not in rules.TRACKER_BOOLEANS:
            expected = ", ".join(("installation_type", *rules.TRACKER_BOOLEANS))
            raise InvalidRequestError(
                f"unknown setting {_shown(name)}; expected one of {expected}",
                field=f"{field}.{name}",
            )
    settings: dict[str, Any] = {}
    if "installation_type" in value:
        kind = value["installation_type"]
        if kind is not None and kind not in rules.INSTALLATION_TYPES:
            raise InvalidRequestError(
                f"unknown installation_type {_shown(kind)}; expected null or one of "
                f"{', '.join(rules.INSTALLATION_TYPES)}",
                field=f"{field}.installation_type",
            )
        settings["installation_type"] = kind
    for name in rules.TRACKER_BOOLEANS:
        if name in value:
            if not isinstance(value[name], bool):
                raise InvalidRequestError("must be true or false", field=f"{field}.{name}")
            settings[name] = value[name]
    return settings


def parse_email(value: object, *, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError("an email address is required", field=field)
    email = value.strip()
    local, _, host = email.rpartition("@")
    if not local or not host or any(ch.isspace() for ch in email) or len(email) > 254:
        raise InvalidRequestError(f"{email!r} is not an email address", field=field)
    return email


def _goal_delete(data: Mapping[str, Any], domain: str) -> JobRequest:
    goal_id = data.get("goal_id")
    if goal_id is not None:
        if isinstance(goal_id, str) and goal_id.strip().isascii() and goal_id.strip().isdigit():
            goal_id = int(goal_id.strip()) if len(goal_id.strip()) <= 19 else MAX_GOAL_ID + 1
        if isinstance(goal_id, bool) or not isinstance(goal_id, int):
            raise InvalidRequestError("goal_id must be an integer", field="goal_id")
        if not 1 <= goal_id <= MAX_GOAL_ID:
            raise InvalidRequestError(
                f"goal_id must be between 1 and {MAX_GOAL_ID}", field="goal_id"
            )
        return JobRequest(operation=Operation.delete_goal, domain=domain, goal_id=goal_id)
    if data.get("event_name") is not None:
        goal = parse_goal({"goal_type": "event", "event_name": data["event_name"]}, field="goal")
    elif data.get("page_path") is not None:
        goal = parse_goal({"goal_type": "page", "page_path": data["page_path"]}, field="goal")
    else:
        raise InvalidRequestError(
            "goal.delete needs goal_id, event_name or page_path", field="goal_id"
        )
    return JobRequest(operation=Operation.delete_goal, domain=domain, goal=goal)

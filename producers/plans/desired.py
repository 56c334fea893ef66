"""The desired-state file: TOML, or JSON with the same structure (a file ending in ``.json``).

    set = "agency-sites"      # which resources this file owns; prune touches nothing else
    account = "default"       # optional

    [defaults]                # every site's, unless it says inherit = false
    timezone = "Europe/Berlin"
    goals = [{ event = "Signup" }, { page = "/checkout/success" }]
    shared_links = ["Client dashboard"]
    custom_props = ["plan"]
    tracker_script_configuration = { outbound_links = true }   # settings to change

    [[sites]]
    domain = "shop.example.com"
    goals = [{ event = "Purchase", display_name = "Purchases", custom_props = { plan = "pro" } }]
    guests = [{ email = "owner@shop.example.com", role = "viewer" }]

A site's goals are added to the defaults, the site's winning for the same event or page: a
site has one goal per event or page (its natural key), whatever its ``custom_props``. Every value
is checked with the rules a signup event is held to (``producers.events``); a file with any
problem is refused whole, one line per problem naming the site and the field.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plausible_rules as rules
from producers.events import (
    MAX_GOALS,
    MAX_SHARED_LINKS,
    MAX_SITE_CUSTOM_PROPS,
    TRACKER,
    check_strings,
    parse_custom_props,
    parse_domain,
    parse_goal,
    parse_guests,
    parse_tracker,
)
from worker.errors import InvalidRequestError
from worker.jobs.specs import GoalSpec, GuestSpec
from worker.jobs.states import DEFAULT_ACCOUNT

#: A set names a batch and is stored beside every resource it made.
SET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TOP = frozenset({"set", "account", "defaults", "sites"})
_DEFAULTS = frozenset({"timezone", "goals", "shared_links", "custom_props", "guests", TRACKER})
_SITE = _DEFAULTS | {"domain", "inherit"}
_GOAL = frozenset({"event", "page", "display_name", "custom_props"})
#: Tracker settings in Plausible's cast order, as ``parse_tracker`` returns them.
_TRACKER_ORDER = ("installation_type", *rules.TRACKER_BOOLEANS)


class DesiredStateError(Exception):
    """The file is refused: ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class DesiredSite:
    domain: str
    #: None: Plausible's default (Etc/UTC) when created; an existing site is not compared.
    timezone: str | None
    goals: tuple[GoalSpec, ...]
    shared_links: tuple[str, ...]
    custom_props: tuple[str, ...] = ()
    guests: tuple[GuestSpec, ...] = ()
    #: Tracker script settings (``producers.events.parse_tracker``); None: left as they are.
    tracker: dict[str, Any] | None = None


@dataclass(frozen=True)
class DesiredState:
    set: str
    account: str
    sites: tuple[DesiredSite, ...]

    def site(self, domain: str) -> DesiredSite | None:
        return next((site for site in self.sites if site.domain == domain), None)


def load(path: Path, *, accounts: Collection[str] | None = None) -> DesiredState:
    """Read and check ``path``; raises DesiredStateError listing every problem."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DesiredStateError([f"cannot be read: {exc}"]) from None
    try:
        data: object = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, RecursionError) as exc:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise DesiredStateError([f"not valid {kind}: {exc}"]) from None
    return parse(data, accounts=accounts)


def parse(data: object, *, accounts: Collection[str] | None = None) -> DesiredState:
    """Check a decoded file; raises DesiredStateError listing every problem."""
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise DesiredStateError(["the file must hold a table (a JSON object)"])
    try:
        check_strings(data)
    except InvalidRequestError as exc:
        raise DesiredStateError([f"{exc.field or 'file'}: {exc.message}"]) from None
    _unknown(data, _TOP, "", problems)
    set_name = data.get("set")
    if not isinstance(set_name, str) or not SET_NAME.fullmatch(set_name):
        problems.append(
            "set: required: a name of 1 to 64 letters, digits, '.', '_' or '-' "
            "(it names what this file owns)"
        )
    account = data.get("account", DEFAULT_ACCOUNT)
    if not isinstance(account, str) or not account.strip():
        problems.append("account: must be a non-empty string")
        account = DEFAULT_ACCOUNT
    elif accounts is not None and account.strip() not in accounts:
        known = ", ".join(sorted(accounts))
        problems.append(f"account: unknown account {account!r}; configured: {known}")
    defaults_data = data.get("defaults", {})
    if not isinstance(defaults_data, Mapping):
        problems.append("defaults: must be a table")
        defaults_data = {}
    _unknown(defaults_data, _DEFAULTS, "defaults: ", problems)
    defaults = _Parts.of(defaults_data, "defaults: ", problems)
    raw_sites = data.get("sites", [])
    if not isinstance(raw_sites, list):
        problems.append("sites: must be a list of tables ([[sites]])")
        raw_sites = []
    sites: list[DesiredSite] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_sites):
        site = _site(raw, index, defaults, problems)
        if site is None:
            continue
        if site.domain in seen:
            problems.append(
                f"sites[{index}] {site.domain}: domain: also that of sites[{seen[site.domain]}]"
            )
            continue
        seen[site.domain] = index
        sites.append(site)
    if problems:
        raise DesiredStateError(problems)
    assert isinstance(set_name, str)
    assert isinstance(account, str)
    return DesiredState(set_name, account.strip(), tuple(sites))


@dataclass(frozen=True)
class _Parts:
    """What a site or the defaults say, each field checked on its own."""

    timezone: str | None
    goals: tuple[GoalSpec, ...]
    shared_links: tuple[str, ...]
    custom_props: tuple[str, ...] = ()
    guests: tuple[GuestSpec, ...] = ()
    tracker: dict[str, Any] | None = None

    @classmethod
    def of(cls, data: Mapping[str, Any], where: str, problems: list[str]) -> _Parts:
        timezone = data.get("timezone")
        if timezone is not None and not rules.is_valid_timezone(timezone):
            problems.append(f"{where}timezone: {timezone!r} is not an IANA timezone")
            timezone = None
        props: tuple[str, ...] = ()
        guests: tuple[GuestSpec, ...] = ()
        tracker: dict[str, Any] | None = None
        try:
            tracker = parse_tracker(data.get(TRACKER), field=TRACKER)
        except InvalidRequestError as exc:
            problems.append(f"{where}{exc.field}: {exc.message}")
        try:
            props = parse_custom_props(data.get("custom_props"), field="custom_props")
        except InvalidRequestError as exc:
            problems.append(f"{where}{exc.field}: {exc.message}")
        try:
            guests = parse_guests(data.get("guests"), field="guests")
        except InvalidRequestError as exc:
            problems.append(f"{where}{exc.field}: {exc.message}")
        return cls(
            timezone,
            _goals(data.get("goals"), where, problems),
            _links(data.get("shared_links"), where, problems),
            props,
            guests,
            tracker,
        )


def _site(raw: object, index: int, defaults: _Parts, problems: list[str]) -> DesiredSite | None:
    if not isinstance(raw, Mapping):
        problems.append(f"sites[{index}]: must be a table")
        return None
    try:
        domain = parse_domain(raw.get("domain"))
    except InvalidRequestError as exc:
        problems.append(f"sites[{index}]: domain: {exc.message}")
        domain = None
    label = domain or (raw.get("domain") if isinstance(raw.get("domain"), str) else None)
    where = f"sites[{index}] {label}: " if label else f"sites[{index}]: "
    _unknown(raw, _SITE, where, problems)
    inherit = raw.get("inherit", True)
    if not isinstance(inherit, bool):
        problems.append(f"{where}inherit: must be true or false")
        inherit = True
    own = _Parts.of(raw, where, problems)
    if domain is None:
        return None
    base = defaults if inherit else _Parts(None, (), ())
    props = tuple(dict.fromkeys((*base.custom_props, *own.custom_props)))
    if len(props) > MAX_SITE_CUSTOM_PROPS:
        problems.append(f"{where}custom_props: at most {MAX_SITE_CUSTOM_PROPS} per site")
    guests = {guest.email: guest for guest in (*base.guests, *own.guests)}  # the site's win
    goals = {goal.natural_key: goal for goal in (*base.goals, *own.goals)}  # the site's win
    if len(goals) > MAX_GOALS:
        problems.append(f"{where}goals: at most {MAX_GOALS} goals per site")
    names: dict[str, str] = {}
    for key, goal in goals.items():
        name = goal.display_name or rules.default_display_name(
            event_name=goal.event_name, page_path=goal.page_path
        )
        if name in names:
            problems.append(
                f"{where}goals: {key}: display name {name!r} is also that of {names[name]}; "
                "Plausible needs a distinct display_name per goal"
            )
        names.setdefault(name, key)
    merged = {**(base.tracker or {}), **(own.tracker or {})}  # the site's win
    tracker = {k: merged[k] for k in _TRACKER_ORDER if k in merged} or None
    links = tuple(dict.fromkeys((*base.shared_links, *own.shared_links)))
    if len(links) > MAX_SHARED_LINKS:
        problems.append(f"{where}shared_links: at most {MAX_SHARED_LINKS} per site")
    return DesiredSite(
        domain,
        own.timezone or base.timezone,
        tuple(goals.values()),
        links,
        props,
        tuple(guests.values()),
        tracker,
    )


def _goals(value: object, where: str, problems: list[str]) -> tuple[GoalSpec, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.append(f"{where}goals: must be a list of tables such as {{ event = 'Signup' }}")
        return ()
    goals: list[GoalSpec] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(value):
        field = f"goals[{index}]"
        if not isinstance(item, Mapping):
            problems.append(f"{where}{field}: must be a table such as {{ event = 'Signup' }}")
            continue
        _unknown(item, _GOAL, f"{where}{field}.", problems)
        if ("event" in item) == ("page" in item):
            problems.append(f"{where}{field}: give exactly one of event and page")
            continue
        event = (
            {"goal_type": "event", "event_name": item["event"]}
            if "event" in item
            else {"goal_type": "page", "page_path": item["page"]}
        )
        event.update({k: item[k] for k in ("display_name", "custom_props") if k in item})
        try:
            goal = parse_goal(event, field=field)
        except InvalidRequestError as exc:
            named = (exc.field or field).replace(".event_name", ".event")
            problems.append(f"{where}{named.replace('.page_path', '.page')}: {exc.message}")
            continue
        if goal.natural_key in seen:
            # Plausible would hold both (custom properties set goals apart), but a plan knows a
            # goal by its event or page alone.
            problems.append(
                f"{where}{field}: {goal.natural_key} is also goals[{seen[goal.natural_key]}]; "
                "one goal per event or page, its custom_props in one table"
            )
            continue
        seen[goal.natural_key] = index
        goals.append(goal)
    return tuple(goals)


def _links(value: object, where: str, problems: list[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.append(f"{where}shared_links: must be a list of names")
        return ()
    names: list[str] = []
    for index, name in enumerate(value):
        field = f"{where}shared_links[{index}]"
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{field}: must be a non-empty string")
        elif name.strip() in rules.RESERVED_SHARED_LINK_NAMES:
            problems.append(f"{field}: the name {name.strip()!r} is reserved by Plausible")
        else:
            names.append(name.strip())
    return tuple(names)


def _unknown(
    data: Mapping[str, Any], allowed: frozenset[str], where: str, problems: list[str]
) -> None:
    for key in data:
        if key not in allowed:
            problems.append(
                f"{where}{key}: unknown field; expected one of {', '.join(sorted(allowed))}"
            )

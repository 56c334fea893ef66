"""A typed, synchronous client for Plausible's Sites API (``/api/v1/sites…``).

This is the only module of the project that imports httpx: everything else sees typed results
(frozen dataclasses below) and the error tree of :mod:`worker.errors`. The authority for routes,
statuses and messages is ``shared/plausible-sites-api.md`` (section numbers below refer to it).

Usage::

    with PlausibleClient(base_url="https://plausible.io", api_key=key) as client:
        site = client.create_site("example.com", timezone="Europe/London")
        client.ensure_goal(site.domain, goal_type="event", event_name="Signup")

Design points:

- One call is one HTTP request. Retry policy belongs to the pipeline, which decides from
  ``PlausibleError.retryable`` and, for 429s, ``RateLimitedError.reset_at``.
- A client bound to a ``RequestGate`` (``client.using(gate)``) asks the gate before every
  request it sends, list pages included, and tells it every outcome: that is where quota
  permits are taken (``worker.quota.permits``).
- Every non-200 response goes through :func:`error_from_response`, the single mapping from a
  response to the error tree; network failures become ``PlausibleConnectionError``.
- Every request is counted and timed in ``worker.metrics``, labelled with its route template
  (``GET /api/v1/sites/:site_id``) and status, never with a domain.
- The API key travels only in the ``Authorization`` header. It is kept out of reprs, log records,
  error messages and exception chains (httpx exceptions hold the request, headers included, so
  they are never chained onto ours).
"""

from __future__ import annotations

import copy
import email.utils
import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType, TracebackType
from typing import Any, Final, Protocol, Self, TypeVar
from urllib.parse import quote

import httpx

from worker import metrics
from worker.errors import (
    AuthenticationError,
    BadRequestError,
    DomainTakenError,
    ForbiddenError,
    NotFoundError,
    PaymentRequiredError,
    PermanentError,
    PlausibleConnectionError,
    PlausibleError,
    RateLimitedError,
    ServerError,
)

__all__ = [
    "Goal",
    "Guest",
    "PlausibleClient",
    "SharedLink",
    "Site",
    "SiteSummary",
    "Team",
    "error_from_response",
]

logger = logging.getLogger("worker.plausible")

_T = TypeVar("_T")

SITES: Final = "/api/v1/sites"

#: The server silently replaces any ``limit`` outside 1..100 with 100 (§6), so a larger page size
#: would be a lie; we refuse it instead.
MAX_PAGE_SIZE: Final = 100

#: Raw (non-JSON) error bodies can be whole HTML pages; an error message needs only the start.
_RAW_MESSAGE_LIMIT: Final = 500

#: A Retry-After far in the future is more likely a bug than a plan; no quota window is longer.
_RETRY_AFTER_CAP_HOURS: Final = 1.0

_BURST_WINDOW = re.compile(r"per (\d+(?:\.\d+)?) seconds?")
# RFC 7230 token68-ish: printable ASCII without spaces. Anything else would make httpx/h11 raise an
# error whose text quotes the header value, i.e. the key.
_API_KEY_SHAPE = re.compile(r"[\x21-\x7e]+")


class RequestGate(Protocol):
    """Asked before every request a bound client sends, and told how each one ended."""

    def before_request(self) -> None:
        """Return to let the request go; raise to stop it before anything is sent."""

    def after_response(self, error: PlausibleError | None) -> None:
        """The request ended: None for a 200, else the error it raised."""


# --------------------------------------------------------------------------------------------
# Typed results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    """A site as returned by create, get and update (§7.3).

    ``domain`` is the server's normalised domain: use it, not the caller's input, as ``site_id``.
    """

    domain: str
    timezone: str
    custom_properties: tuple[str, ...]
    tracker_script_configuration: Mapping[str, Any]


@dataclass(frozen=True)
class SiteSummary:
    """One entry of the sites list (§7.1): the list carries only these two fields."""

    domain: str
    timezone: str


@dataclass(frozen=True)
class Goal:
    """A goal (§7.9). ``domain`` is set by find-or-create and ``None`` in list entries."""

    id: int
    goal_type: str
    event_name: str | None
    page_path: str | None
    display_name: str
    custom_props: Mapping[str, str]
    domain: str | None


@dataclass(frozen=True)
class SharedLink:
    """A shared dashboard link (§7.7)."""

    name: str
    url: str


@dataclass(frozen=True)
class Team:
    """A team the key can see (§7.2). ``api_available`` reports the *Stats* API feature."""

    id: str
    name: str
    api_available: bool


@dataclass(frozen=True)
class Guest:
    """A guest membership or pending invitation (§7.14): ``status`` is accepted or invited."""

    email: str
    role: str
    status: str


# --------------------------------------------------------------------------------------------
# Response -> error tree
# --------------------------------------------------------------------------------------------

# Ordered (substring, code) tables: the first substring found in the server's message wins.
_BAD_REQUEST_CODES: Final = (
    ("Missing site ID", "missing_site_id"),
    ("You must select a team", "team_required"),
    ("This name is reserved", "reserved_name"),
    ("unavailable for a consolidated view", "consolidated_view"),
)
_PAYMENT_CODES: Final = (
    ("does not have access to Sites API", "sites_api_unavailable"),
    ("does not have access to Stats API", "stats_api_unavailable"),
    ("Your account has reached the limit", "site_limit_reached"),
    ("locked due to missing active subscription", "site_locked"),
    ("does not include Shared Links", "shared_links_unavailable"),
    ("does not include Custom Properties", "custom_props_unavailable"),
)
_NOT_FOUND_CODES: Final = (
    ("Site could not be found", "site_not_found"),
    ("Goal could not be found", "goal_not_found"),
)
_DOMAIN_TAKEN: Final = "This domain cannot be registered"


def _code_for(message: str, table: tuple[tuple[str, str], ...], default: str) -> str:
    return next((code for needle, code in table if needle in message), default)


def _server_message(response: httpx.Response) -> str:
    """What the server said: ``{"error": …}``, the framework's ``{"message", "status"}``, or raw text."""
    try:
        body = response.json()
    except (ValueError, RecursionError):  # RecursionError: JSON nested too deeply
        body = None
    if isinstance(body, dict):
        for key in ("error", "message"):
            if isinstance(body.get(key), str):
                return str(body[key])
    try:
        text = response.text
    except (ValueError, LookupError):  # e.g. a charset=utf-16 body without a BOM
        text = response.content.decode("utf-8", "replace")
    return text[:_RAW_MESSAGE_LIMIT]


def error_from_response(
    response: httpx.Response, *, now: float, hour_seconds: float = 3600.0
) -> PlausibleError:
    """Map a non-200 response to the error tree (the one place that does so).

    ``now`` (epoch seconds) and ``hour_seconds`` place a 429's ``reset_at`` on the right window
    boundary; they come from the client's injected clock so tests can pin them.
    """
    status = response.status_code
    message = _server_message(response)
    if status == 429:
        return _rate_limited(response, message, now=now, hour_seconds=hour_seconds)
    if status >= 500:
        return ServerError(message, status=status)
    if status == 400:
        if _DOMAIN_TAKEN in message:
            return DomainTakenError(message, status=status)
        code = _code_for(message, _BAD_REQUEST_CODES, "validation_error")
        return BadRequestError(message, status=status, code=code)
    if status == 401:
        code = "missing_api_key" if "Missing API key" in message else "invalid_api_key"
        return AuthenticationError(message, status=status, code=code)
    if status == 402:
        code = _code_for(message, _PAYMENT_CODES, "payment_required")
        return PaymentRequiredError(message, status=status, code=code)
    if status == 403:
        return ForbiddenError(message, status=status, code="team_forbidden")
    if status == 404:
        code = _code_for(message, _NOT_FOUND_CODES, "not_found")
        return NotFoundError(message, status=status, code=code)
    # 406 (Accept excludes JSON), unrouted methods, and anything else the API never documents.
    return PermanentError(message, status=status, code="api_error")


def _rate_limited(
    response: httpx.Response, message: str, *, now: float, hour_seconds: float
) -> RateLimitedError:
    """Build the 429 error: which quota is spent, and when its fixed window rolls over (§4)."""
    burst = _BURST_WINDOW.search(message)
    if "in a short period of time" in message:
        limit = "burst"
        # The cloud's burst window is 10 s; fall back to it if the text ever loses the number (or
        # gives one no window can have: 0 would divide by zero, a huge one overflow the date).
        period = float(burst.group(1)) if burst else 10.0
        if not 0 < period <= hour_seconds:
            period = 10.0
    else:
        # "per hour" (current and legacy texts) or an unknown text: assume the hourly quota, since
        # waiting too long costs latency while waiting too little burns the shared quota.
        limit = "hourly"
        period = hour_seconds
    # Windows are aligned to the epoch (floor(now / window)), so the reset is the next multiple.
    reset = (math.floor(now / period) + 1) * period
    retry_after = _parse_retry_after(response.headers.get("retry-after"), now=now)
    if retry_after is not None:
        # Plausible sends no Retry-After today (§4); if it ever does, it knows better than we do.
        reset = now + min(retry_after, _RETRY_AFTER_CAP_HOURS * hour_seconds)
    return RateLimitedError(
        message, status=429, limit=limit, reset_at=datetime.fromtimestamp(reset, tz=UTC)
    )


def _parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if unusable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²".isdigit() too, but float("²") raises
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less one is read as such.
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


# --------------------------------------------------------------------------------------------
# Response body -> typed results
# --------------------------------------------------------------------------------------------


class _Malformed(Exception):
    """A 200 body lacks a field or has the wrong type; turned into ``unexpected_response``."""


def _field(obj: Any, key: str, kind: type[_T]) -> _T:
    if not isinstance(obj, dict):
        raise _Malformed(f"expected an object holding {key!r}, got {type(obj).__name__}")
    value = obj.get(key)
    # bool is an int subclass; a boolean where an int is due is a shape error, not a number.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _Malformed(f"{key!r} should be {kind.__name__}, got {type(value).__name__}")
    return value


def _optional_str(obj: Any, key: str) -> str | None:
    value = obj.get(key) if isinstance(obj, dict) else None
    if value is not None and not isinstance(value, str):
        raise _Malformed(f"{key!r} should be a string or null, got {type(value).__name__}")
    return value


def _flag(body: Any, key: str) -> bool:
    """``deleted``/``created``: boolean true (the code) or the string "true" (the docs, §12b)."""
    value = body.get(key) if isinstance(body, dict) else None
    if value is True or value == "true":
        return True
    raise _Malformed(f"{key!r} should be true, got {value!r}")


def _goal_id(value: Any) -> int:
    # The docs show "id": "1" while the code sends 1 (§12b); accept both, nothing else.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise _Malformed(f"goal 'id' should be an integer, got {value!r}")


def _parse_site(body: Any) -> Site:
    props = _field(body, "custom_properties", list)
    if not all(isinstance(p, str) for p in props):
        raise _Malformed("'custom_properties' should be a list of strings")
    config = _field(body, "tracker_script_configuration", dict)
    return Site(
        domain=_field(body, "domain", str),
        timezone=_field(body, "timezone", str),
        custom_properties=tuple(props),
        tracker_script_configuration=MappingProxyType(dict(config)),
    )


def _parse_site_summary(item: Any) -> SiteSummary:
    return SiteSummary(domain=_field(item, "domain", str), timezone=_field(item, "timezone", str))


def _parse_goal(item: Any) -> Goal:
    props = item.get("custom_props", {}) if isinstance(item, dict) else None
    if not isinstance(props, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in props.items()
    ):
        raise _Malformed("'custom_props' should be an object of strings")
    return Goal(
        id=_goal_id(item.get("id")),
        goal_type=_field(item, "goal_type", str),
        event_name=_optional_str(item, "event_name"),
        page_path=_optional_str(item, "page_path"),
        display_name=_field(item, "display_name", str),
        custom_props=MappingProxyType(dict(props)),
        domain=_optional_str(item, "domain"),
    )


def _parse_shared_link(body: Any) -> SharedLink:
    return SharedLink(name=_field(body, "name", str), url=_field(body, "url", str))


def _parse_team(item: Any) -> Team:
    return Team(
        id=_field(item, "id", str),
        name=_field(item, "name", str),
        api_available=_field(item, "api_available", bool),
    )


def _parse_guest(item: Any) -> Guest:
    return Guest(
        email=_field(item, "email", str),
        role=_field(item, "role", str),
        status=_field(item, "status", str),
    )


def _parse_custom_props(body: Any) -> list[str]:
    return [_field(item, "property", str) for item in _field(body, "custom_properties", list)]


def _segment(value: str, what: str) -> str:
    """Encode one path segment. A domain may contain ``/`` (§8), so nothing is left unescaped."""
    if not value:
        # An empty segment silently routes elsewhere (``DELETE /api/v1/sites/`` is not a site).
        raise ValueError(f"{what} must not be empty")
    return quote(value, safe="")


def _page_size(page_size: int) -> int:
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be within 1..{MAX_PAGE_SIZE}, got {page_size}")
    return page_size


def _without_none(**params: Any) -> dict[str, Any]:
    # Omitted and null differ on the server (a null timezone is rejected, §7.3): never send null.
    return {key: value for key, value in params.items() if value is not None}


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


class PlausibleClient:
    """Synchronous client for the Sites API; one method per route of §7.0.

    Parameters:

    - ``base_url``: e.g. ``https://plausible.io`` (no ``/api/v1`` suffix).
    - ``api_key``: a Sites API key; sent only as ``Authorization: Bearer …``.
    - ``connect_timeout`` / ``read_timeout``: seconds; write uses the read bound, pool the connect
      bound, so no phase of a request can hang.
    - ``transport``: an ``httpx`` transport, e.g. ``httpx.MockTransport`` in tests.
    - ``hour_seconds``: the length of the server's hourly window, for sandboxes whose hour is
      compressed; it also caps a ``Retry-After``.
    - ``clock``: epoch seconds, used only to compute a 429's ``reset_at``.

    Methods raise :class:`worker.errors.PlausibleError` subclasses; a 200 whose body has the wrong
    shape raises ``PermanentError`` with code ``unexpected_response``.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        transport: httpx.BaseTransport | None = None,
        total_timeout: float = 20.0,
        hour_seconds: float = 3600.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not _API_KEY_SHAPE.fullmatch(api_key):
            # Deliberately does not echo the value.
            raise ValueError("api_key must be non-empty printable ASCII without whitespace")
        if hour_seconds <= 0:
            raise ValueError("hour_seconds must be positive")
        self._gate: RequestGate | None = None
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._hour_seconds = hour_seconds
        self._clock = clock
        self._monotonic = monotonic
        # httpx bounds each socket operation, not a whole request: a server trickling its body
        # could hold a call indefinitely. This bounds the body; the head is one read.
        self._total_timeout = total_timeout
        self._http = httpx.Client(
            base_url=self._base_url,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=httpx.Timeout(
                connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
            ),
            transport=transport,
            # Plausible never redirects the API; following one could replay the key elsewhere.
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"PlausibleClient(base_url={self._base_url!r})"

    def using(self, gate: RequestGate | None) -> PlausibleClient:
        """This client with every request passing ``gate`` first. It shares this client's
        connection pool: close this one, not the copy."""
        bound = copy.copy(self)
        bound._gate = gate
        return bound

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool. The client cannot be used afterwards."""
        self._http.close()

    # -- sites ---------------------------------------------------------------------------------

    def create_site(
        self,
        domain: str,
        *,
        timezone: str | None = None,
        team_id: str | None = None,
        tracker_script_configuration: Mapping[str, Any] | None = None,
    ) -> Site:
        """``POST /api/v1/sites``. Not idempotent: a repeat raises ``DomainTakenError``."""
        body = _without_none(
            domain=domain,
            timezone=timezone,
            team_id=team_id,
            tracker_script_configuration=_plain(tracker_script_configuration),
        )
        return self._call("POST", SITES, _parse_site, route=SITES, json_body=body)

    def get_site(self, site_id: str) -> Site:
        """``GET /api/v1/sites/:site_id`` (current domain, or the old one for 72 h after a change)."""
        path = f"{SITES}/{_segment(site_id, 'site_id')}"
        return self._call("GET", path, _parse_site, route=f"{SITES}/:site_id")

    def update_site(
        self,
        site_id: str,
        *,
        domain: str | None = None,
        tracker_script_configuration: Mapping[str, Any] | None = None,
    ) -> Site:
        """``PUT /api/v1/sites/:site_id``: change the domain and/or merge tracker settings."""
        body = _without_none(
            domain=domain, tracker_script_configuration=_plain(tracker_script_configuration)
        )
        path = f"{SITES}/{_segment(site_id, 'site_id')}"
        return self._call("PUT", path, _parse_site, route=f"{SITES}/:site_id", json_body=body)

    def delete_site(self, site_id: str) -> bool:
        """``DELETE /api/v1/sites/:site_id`` (owner only). A repeat raises ``NotFoundError``."""
        path = f"{SITES}/{_segment(site_id, 'site_id')}"
        return self._call(
            "DELETE", path, lambda body: _flag(body, "deleted"), route=f"{SITES}/:site_id"
        )

    def list_sites(
        self, *, team_id: str | None = None, page_size: int = MAX_PAGE_SIZE
    ) -> Iterator[SiteSummary]:
        """``GET /api/v1/sites``, newest first, fetched page by page as the iterator advances."""
        params = _without_none(team_id=team_id)
        return self._paginate(SITES, "sites", _parse_site_summary, params, _page_size(page_size))

    def list_teams(self, *, page_size: int = MAX_PAGE_SIZE) -> Iterator[Team]:
        """``GET /api/v1/sites/teams``, lazily paginated."""
        return self._paginate(f"{SITES}/teams", "teams", _parse_team, {}, _page_size(page_size))

    # -- shared links and goals ----------------------------------------------------------------

    def ensure_shared_link(self, site_id: str, name: str) -> SharedLink:
        """``PUT /api/v1/sites/shared-links``: find or create the link called ``name``."""
        body = {"site_id": site_id, "name": name}
        path = f"{SITES}/shared-links"
        return self._call("PUT", path, _parse_shared_link, route=path, json_body=body)

    def ensure_goal(
        self,
        site_id: str,
        *,
        goal_type: str,
        event_name: str | None = None,
        page_path: str | None = None,
        display_name: str | None = None,
        custom_props: Mapping[str, str] | None = None,
    ) -> Goal:
        """``PUT /api/v1/sites/goals``: find or create. An existing goal is returned unchanged."""
        body = _without_none(
            site_id=site_id,
            goal_type=goal_type,
            event_name=event_name,
            page_path=page_path,
            display_name=display_name,
            custom_props=_plain(custom_props),
        )
        path = f"{SITES}/goals"
        return self._call("PUT", path, _parse_goal, route=path, json_body=body)

    def delete_goal(self, site_id: str, goal_id: int) -> bool:
        """``DELETE /api/v1/sites/goals/:goal_id``. A repeat raises ``NotFoundError``."""
        path = f"{SITES}/goals/{_segment(str(goal_id), 'goal_id')}"
        return self._call(
            "DELETE",
            path,
            lambda body: _flag(body, "deleted"),
            route=f"{SITES}/goals/:goal_id",
            params={"site_id": site_id},
        )

    def list_goals(self, site_id: str, *, page_size: int = MAX_PAGE_SIZE) -> Iterator[Goal]:
        """``GET /api/v1/sites/goals``, newest first, lazily paginated (entries have no domain)."""
        params = {"site_id": site_id}
        return self._paginate(f"{SITES}/goals", "goals", _parse_goal, params, _page_size(page_size))

    # -- custom properties ---------------------------------------------------------------------

    def list_custom_props(self, site_id: str) -> list[str]:
        """``GET /api/v1/sites/custom-props``: allowed property names, sorted (not paginated)."""
        path = f"{SITES}/custom-props"
        return self._call("GET", path, _parse_custom_props, route=path, params={"site_id": site_id})

    def add_custom_prop(self, site_id: str, prop: str) -> bool:
        """``PUT /api/v1/sites/custom-props``; idempotent."""
        body = {"site_id": site_id, "property": prop}
        path = f"{SITES}/custom-props"
        return self._call("PUT", path, lambda b: _flag(b, "created"), route=path, json_body=body)

    def delete_custom_prop(self, site_id: str, prop: str) -> bool:
        """``DELETE /api/v1/sites/custom-props/*property``; true even if the prop was absent."""
        if not prop:
            raise ValueError("prop must not be empty")
        # The route is a wildcard that re-joins segments with "/" (§7.13), so slashes stay raw.
        path = f"{SITES}/custom-props/{quote(prop, safe='/')}"
        return self._call(
            "DELETE",
            path,
            lambda b: _flag(b, "deleted"),
            route=f"{SITES}/custom-props/*property",
            params={"site_id": site_id},
        )

    # -- guests --------------------------------------------------------------------------------

    def list_guests(self, site_id: str, *, page_size: int = MAX_PAGE_SIZE) -> Iterator[Guest]:
        """``GET /api/v1/sites/guests``: guests first, then pending invitations; lazily paginated."""
        params = {"site_id": site_id}
        path = f"{SITES}/guests"
        return self._paginate(path, "guests", _parse_guest, params, _page_size(page_size))

    def ensure_guest(self, site_id: str, email: str, role: str) -> Guest:
        """``PUT /api/v1/sites/guests``: invite, or return the existing guest (role unchanged)."""
        body = {"site_id": site_id, "email": email, "role": role}
        path = f"{SITES}/guests"
        return self._call("PUT", path, _parse_guest, route=path, json_body=body)

    def delete_guest(self, site_id: str, email: str) -> bool:
        """``DELETE /api/v1/sites/guests/:email``; true also when nothing matched."""
        path = f"{SITES}/guests/{_segment(email, 'email')}"
        return self._call(
            "DELETE",
            path,
            lambda b: _flag(b, "deleted"),
            route=f"{SITES}/guests/:email",
            params={"site_id": site_id},
        )

    # -- plumbing ------------------------------------------------------------------------------

    def _paginate(
        self,
        path: str,
        key: str,
        parse: Callable[[Any], _T],
        params: Mapping[str, Any],
        page_size: int,
    ) -> Iterator[_T]:
        """Follow ``meta.after`` cursors until it is null, one request per page, on demand."""
        query: dict[str, Any] = {**params, "limit": page_size}
        seen: set[str] = set()
        while True:
            # Paginated routes have no path parameters: the path is the route.
            items, after = self._call(
                "GET", path, _page_parser(key, parse), route=path, params=query
            )
            yield from items
            if after is None:
                return
            if after in seen:  # a server bug must not turn into an endless loop of requests
                raise PermanentError(
                    f"GET {path}: pagination cursor repeated",
                    status=200,
                    code="unexpected_response",
                )
            seen.add(after)
            query["after"] = after

    def _call(
        self,
        method: str,
        path: str,
        parse: Callable[[Any], _T],
        *,
        route: str,
        params: Mapping[str, Any] | None = None,
        json_body: Mapping[str, Any] | None = None,
    ) -> _T:
        """Send one request; return the parsed 200 body or raise the mapped error.

        ``route`` is the path's template (``/api/v1/sites/:site_id``): metrics are labelled
        with it, never with a domain."""
        gate = self._gate
        if gate is not None:
            gate.before_request()
        try:
            response = self._send(method, path, route=route, params=params, json_body=json_body)
        except PlausibleConnectionError as exc:
            if gate is not None:
                gate.after_response(exc)
            raise
        if response.status_code != 200:
            error = error_from_response(
                response, now=self._clock(), hour_seconds=self._hour_seconds
            )
            if gate is not None:
                gate.after_response(error)
            raise error
        if gate is not None:
            gate.after_response(None)
        try:
            return parse(response.json())
        except (_Malformed, ValueError, RecursionError) as exc:
            # Chaining is safe here (neither exception holds the request), and keeps the detail.
            raise PermanentError(
                f"{method} {path}: unexpected response body: {exc}",
                status=response.status_code,
                code="unexpected_response",
            ) from exc

    def _send(
        self,
        method: str,
        path: str,
        *,
        route: str,
        params: Mapping[str, Any] | None,
        json_body: Mapping[str, Any] | None,
    ) -> httpx.Response:
        request = self._http.build_request(method, path, params=params, json=json_body)
        shown = request.url.raw_path.decode("ascii")
        started = self._monotonic()
        failure: PlausibleConnectionError | None = None
        try:
            response = self._receive(request, deadline=started + self._total_timeout)
        except httpx.RequestError as exc:
            failure = self._connection_error(method, shown, exc)
        except _DeadlineExceeded:
            failure = PlausibleConnectionError(
                f"{method} {shown}: no complete response within {self._total_timeout:g}s",
                status=None,
                code="timeout",
            )
        elapsed = self._monotonic() - started
        elapsed_ms = elapsed * 1000
        labelled = f"{method} {route}"
        metrics.API_REQUEST_SECONDS.labels(labelled).observe(elapsed)
        outcome = failure.code if failure is not None else str(response.status_code)
        metrics.API_REQUESTS.labels(labelled, outcome).inc()
        if failure is not None:
            logger.debug("%s %s -> %s in %.1f ms", method, shown, failure.code, elapsed_ms)
            # Raised outside the except block on purpose: the httpx exception carries the request
            # (and its Authorization header), so it must not end up as __cause__ or __context__.
            raise failure
        logger.debug("%s %s -> %d in %.1f ms", method, shown, response.status_code, elapsed_ms)
        return response

    def _receive(self, request: httpx.Request, *, deadline: float) -> httpx.Response:
        """Send ``request`` and read its body, giving up once ``deadline`` has passed."""
        response = self._http.send(request, stream=True)
        try:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if self._monotonic() > deadline:
                    raise _DeadlineExceeded
        finally:
            response.close()
        # The body is decoded already: the copy must not claim an encoding or the old length.
        headers = response.headers.copy()
        for name in ("content-encoding", "content-length"):
            headers.pop(name, None)
        return httpx.Response(
            response.status_code, headers=headers, content=bytes(body), request=request
        )

    def _connection_error(
        self, method: str, path: str, exc: httpx.RequestError
    ) -> PlausibleConnectionError:
        code = "timeout" if isinstance(exc, httpx.TimeoutException) else "network_error"
        detail = str(exc).replace(self._api_key, "[redacted]")
        return PlausibleConnectionError(
            f"{method} {path}: {type(exc).__name__}: {detail}", status=None, code=code
        )


class _DeadlineExceeded(Exception):
    """The response did not complete within the client's total timeout."""


def _page_parser(
    key: str, parse: Callable[[Any], _T]
) -> Callable[[Any], tuple[list[_T], str | None]]:
    """Parse one page: the items under ``key`` and the ``meta.after`` cursor (None on the last)."""

    def parse_page(body: Any) -> tuple[list[_T], str | None]:
        items = [parse(item) for item in _field(body, key, list)]
        return items, _optional_str(_field(body, "meta", dict), "after")

    return parse_page


def _plain(mapping: Mapping[str, _T] | None) -> dict[str, _T] | None:
    # json.dumps rejects Mapping types that aren't dicts (e.g. MappingProxyType from a Site).
    return None if mapping is None else dict(mapping)

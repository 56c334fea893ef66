"""Reading Plausible's responses: a non-200 becomes an error of the tree in
:mod:`worker.errors` (:func:`error_from_response`, the one place that maps them), a 200 body
becomes a typed result or ``Malformed`` when its shape is wrong."""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, TypeVar

import httpx

from worker.errors import (
    AuthenticationError,
    BadRequestError,
    DomainTakenError,
    ForbiddenError,
    NotFoundError,
    NotTheApiError,
    PaymentRequiredError,
    PermanentError,
    PlausibleError,
    RateLimitedError,
    ServerError,
)
from worker.plausible.results import Goal, Guest, SharedLink, Site, SiteSummary, Team

_T = TypeVar("_T")

#: Raw (non-JSON) error bodies can be whole HTML pages; an error message needs only the start.
_RAW_MESSAGE_LIMIT: Final = 500

#: A Retry-After far in the future is more likely a bug than a plan; no quota window is longer.
_RETRY_AFTER_CAP_HOURS: Final = 1.0

_BURST_WINDOW = re.compile(r"per (\d+(?:\.\d+)?) seconds?")

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
#: Paths a base URL may wrongly end with: the client adds ``/api/v1/sites`` itself.
_API_SUFFIXES: Final = ("/api/v1/sites", "/api/v1", "/api")


def _code_for(message: str, table: tuple[tuple[str, str], ...], default: str) -> str:
    return next((code for needle, code in table if needle in message), default)


def _json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, RecursionError):  # RecursionError: JSON nested too deeply
        return None


def api_error_message(response: httpx.Response) -> str | None:
    """The Sites API's own error message, or None when the body is not its ``{"error": string}``
    (§5): a router's 404 (Phoenix's ``{"message", "status"}`` or ``{"errors": {…}}``), an HTML
    page, a proxy's answer. The one test of whether a 404 is Plausible's API saying so."""
    body = _json_body(response)
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return None


def _server_message(response: httpx.Response) -> str:
    """What the server said: ``{"error": …}``, the framework's ``{"message", "status"}``, or raw text."""
    message = api_error_message(response)
    if message is not None:
        return message
    body = _json_body(response)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    try:
        text = response.text
    except (ValueError, LookupError):  # e.g. a charset=utf-16 body without a BOM
        text = response.content.decode("utf-8", "replace")
    return text[:_RAW_MESSAGE_LIMIT]


def error_from_response(
    response: httpx.Response,
    *,
    now: float,
    hour_seconds: float = 3600.0,
    base_url: str | None = None,
) -> PlausibleError:
    """Map a non-200 response to the error tree (the one place that does so).

    ``now`` (epoch seconds) and ``hour_seconds`` place a 429's ``reset_at`` on the right window
    boundary; they come from the client's injected clock so tests can pin them. ``base_url``
    (the client's) is named in the message of a 404 that is not the API's.
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
        if api_error_message(response) is None:
            answered = f"{status} {response.reason_phrase}".strip()
            return NotTheApiError(not_the_api(base_url, answered), status=status)
        code = _code_for(message, _NOT_FOUND_CODES, "not_found")
        return NotFoundError(message, status=status, code=code)
    # 406 (Accept excludes JSON), unrouted methods, and anything else the API never documents.
    return PermanentError(message, status=status, code="api_error")


def not_the_api(base_url: str | None, answered: str) -> str:
    """What to set when ``base_url`` answered something that is not the Sites API's."""
    fix = (
        "is this Plausible? PLAUSIBLE_BASE_URL should be the site's root, e.g. "
        "https://plausible.io (Community Edition has no Sites API)"
    )
    shown = ""
    if base_url is not None:
        try:
            url = httpx.URL(base_url).copy_with(userinfo=b"", query=None, fragment=None)
        except (httpx.InvalidURL, TypeError):
            url = None
        if url is not None:
            shown = f" {str(url).rstrip('/')}"
            path = url.path.rstrip("/")
            suffix = next((s for s in _API_SUFFIXES if path.lower().endswith(s)), None)
            if suffix is not None:
                root = str(url.copy_with(path=path[: -len(suffix)] or "/")).rstrip("/")
                fix = f"set PLAUSIBLE_BASE_URL={root} (without {path[-len(suffix) :]})"
    return f"PLAUSIBLE_BASE_URL{shown} answered {answered}, which is not Plausible's API: {fix}"


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


class Malformed(Exception):
    """A 200 body lacks a field or has the wrong type; turned into ``unexpected_response``."""


def _field(obj: Any, key: str, kind: type[_T]) -> _T:
    if not isinstance(obj, dict):
        raise Malformed(f"expected an object holding {key!r}, got {type(obj).__name__}")
    value = obj.get(key)
    # bool is an int subclass; a boolean where an int is due is a shape error, not a number.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise Malformed(f"{key!r} should be {kind.__name__}, got {type(value).__name__}")
    return value


def _optional_str(obj: Any, key: str) -> str | None:
    value = obj.get(key) if isinstance(obj, dict) else None
    if value is not None and not isinstance(value, str):
        raise Malformed(f"{key!r} should be a string or null, got {type(value).__name__}")
    return value


def parse_flag(body: Any, key: str) -> bool:
    """``deleted``/``created``: boolean true (the code) or the string "true" (the docs, §12b)."""
    value = body.get(key) if isinstance(body, dict) else None
    if value is True or value == "true":
        return True
    raise Malformed(f"{key!r} should be true, got {value!r}")


def _goal_id(value: Any) -> int:
    # The docs show "id": "1" while the code sends 1 (§12b); accept both, nothing else.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise Malformed(f"goal 'id' should be an integer, got {value!r}")


def parse_site(body: Any) -> Site:
    props = _field(body, "custom_properties", list)
    if not all(isinstance(p, str) for p in props):
        raise Malformed("'custom_properties' should be a list of strings")
    config = _field(body, "tracker_script_configuration", dict)
    return Site(
        domain=_field(body, "domain", str),
        timezone=_field(body, "timezone", str),
        custom_properties=tuple(props),
        tracker_script_configuration=MappingProxyType(dict(config)),
    )


def parse_site_summary(item: Any) -> SiteSummary:
    return SiteSummary(domain=_field(item, "domain", str), timezone=_field(item, "timezone", str))


def parse_goal(item: Any) -> Goal:
    props = item.get("custom_props", {}) if isinstance(item, dict) else None
    if not isinstance(props, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in props.items()
    ):
        raise Malformed("'custom_props' should be an object of strings")
    return Goal(
        id=_goal_id(item.get("id")),
        goal_type=_field(item, "goal_type", str),
        event_name=_optional_str(item, "event_name"),
        page_path=_optional_str(item, "page_path"),
        display_name=_field(item, "display_name", str),
        custom_props=MappingProxyType(dict(props)),
        domain=_optional_str(item, "domain"),
    )


def parse_shared_link(body: Any) -> SharedLink:
    return SharedLink(name=_field(body, "name", str), url=_field(body, "url", str))


def parse_team(item: Any) -> Team:
    return Team(
        id=_field(item, "id", str),
        name=_field(item, "name", str),
        api_available=_field(item, "api_available", bool),
    )


def parse_guest(item: Any) -> Guest:
    return Guest(
        email=_field(item, "email", str),
        role=_field(item, "role", str),
        status=_field(item, "status", str),
    )


def parse_custom_props(body: Any) -> list[str]:
    return [_field(item, "property", str) for item in _field(body, "custom_properties", list)]


def page_parser(
    key: str, parse: Callable[[Any], _T]
) -> Callable[[Any], tuple[list[_T], str | None]]:
    """Parse one page: the items under ``key`` and the ``meta.after`` cursor (None on the last)."""

    def parse_page(body: Any) -> tuple[list[_T], str | None]:
        items = [parse(item) for item in _field(body, key, list)]
        return items, _optional_str(_field(body, "meta", dict), "after")

    return parse_page

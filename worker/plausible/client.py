"""``PlausibleClient``: one method per route of the Sites API (§7.0), each one request through
its :class:`~worker.plausible.wire.Wire`."""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, Final, Self, TypeVar
from urllib.parse import quote

import httpx

from worker.plausible.responses import (
    parse_custom_props,
    parse_flag,
    parse_goal,
    parse_guest,
    parse_shared_link,
    parse_site,
    parse_site_summary,
    parse_team,
)
from worker.plausible.results import Goal, Guest, SharedLink, Site, SiteSummary, Team
from worker.plausible.wire import RequestGate, Wire

_T = TypeVar("_T")

SITES: Final = "/api/v1/sites"

#: The server silently replaces any ``limit`` outside 1..100 with 100 (§6), so a larger page size
#: would be a lie; we refuse it instead.
MAX_PAGE_SIZE: Final = 100

# RFC 7230 token68-ish: printable ASCII without spaces. Anything else would make httpx/h11 raise an
# error whose text quotes the header value, i.e. the key.
_API_KEY_SHAPE = re.compile(r"[\x21-\x7e]+")


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
        self._base_url = base_url.rstrip("/")
        self._wire = Wire(
            base_url=self._base_url,
            api_key=api_key,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            transport=transport,
            total_timeout=total_timeout,
            hour_seconds=hour_seconds,
            clock=clock,
            monotonic=monotonic,
        )

    def __repr__(self) -> str:
        return f"PlausibleClient(base_url={self._base_url!r})"

    def using(self, gate: RequestGate | None) -> PlausibleClient:
        """This client with every request passing ``gate`` first. It shares this client's
        connection pool: close this one, not the copy."""
        bound = copy.copy(self)
        bound._wire = self._wire.using(gate)
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
        self._wire.close()

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
        return self._wire.call("POST", SITES, parse_site, route=SITES, json_body=body)

    def get_site(self, site_id: str) -> Site:
        """``GET /api/v1/sites/:site_id`` (current domain, or the old one for 72 h after a change)."""
        path = f"{SITES}/{_segment(site_id, 'site_id')}"
        return self._wire.call("GET", path, parse_site, route=f"{SITES}/:site_id")

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
        return self._wire.call("PUT", path, parse_site, route=f"{SITES}/:site_id", json_body=body)

    def delete_site(self, site_id: str) -> bool:
        """``DELETE /api/v1/sites/:site_id`` (owner only). A repeat raises ``NotFoundError``."""
        path = f"{SITES}/{_segment(site_id, 'site_id')}"
        return self._wire.call(
            "DELETE", path, lambda body: parse_flag(body, "deleted"), route=f"{SITES}/:site_id"
        )

    def list_sites(
        self, *, team_id: str | None = None, page_size: int = MAX_PAGE_SIZE
    ) -> Iterator[SiteSummary]:
        """``GET /api/v1/sites``, newest first, fetched page by page as the iterator advances."""
        params = _without_none(team_id=team_id)
        return self._wire.paginate(
            SITES, "sites", parse_site_summary, params, _page_size(page_size)
        )

    def list_teams(self, *, page_size: int = MAX_PAGE_SIZE) -> Iterator[Team]:
        """``GET /api/v1/sites/teams``, lazily paginated."""
        return self._wire.paginate(f"{SITES}/teams", "teams", parse_team, {}, _page_size(page_size))

    # -- shared links and goals ----------------------------------------------------------------

    def ensure_shared_link(self, site_id: str, name: str) -> SharedLink:
        """``PUT /api/v1/sites/shared-links``: find or create the link called ``name``."""
        body = {"site_id": site_id, "name": name}
        path = f"{SITES}/shared-links"
        return self._wire.call("PUT", path, parse_shared_link, route=path, json_body=body)

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
        return self._wire.call("PUT", path, parse_goal, route=path, json_body=body)

    def delete_goal(self, site_id: str, goal_id: int) -> bool:
        """``DELETE /api/v1/sites/goals/:goal_id``. A repeat raises ``NotFoundError``."""
        path = f"{SITES}/goals/{_segment(str(goal_id), 'goal_id')}"
        return self._wire.call(
            "DELETE",
            path,
            lambda body: parse_flag(body, "deleted"),
            route=f"{SITES}/goals/:goal_id",
            params={"site_id": site_id},
        )

    def list_goals(self, site_id: str, *, page_size: int = MAX_PAGE_SIZE) -> Iterator[Goal]:
        """``GET /api/v1/sites/goals``, newest first, lazily paginated (entries have no domain)."""
        params = {"site_id": site_id}
        return self._wire.paginate(
            f"{SITES}/goals", "goals", parse_goal, params, _page_size(page_size)
        )

    # -- custom properties ---------------------------------------------------------------------

    def list_custom_props(self, site_id: str) -> list[str]:
        """``GET /api/v1/sites/custom-props``: allowed property names, sorted (not paginated)."""
        path = f"{SITES}/custom-props"
        return self._wire.call(
            "GET", path, parse_custom_props, route=path, params={"site_id": site_id}
        )

    def add_custom_prop(self, site_id: str, prop: str) -> bool:
        """``PUT /api/v1/sites/custom-props``; idempotent."""
        body = {"site_id": site_id, "property": prop}
        path = f"{SITES}/custom-props"
        return self._wire.call(
            "PUT", path, lambda b: parse_flag(b, "created"), route=path, json_body=body
        )

    def delete_custom_prop(self, site_id: str, prop: str) -> bool:
        """``DELETE /api/v1/sites/custom-props/*property``; true even if the prop was absent."""
        if not prop:
            raise ValueError("prop must not be empty")
        # The route is a wildcard that re-joins segments with "/" (§7.13), so slashes stay raw.
        path = f"{SITES}/custom-props/{quote(prop, safe='/')}"
        return self._wire.call(
            "DELETE",
            path,
            lambda b: parse_flag(b, "deleted"),
            route=f"{SITES}/custom-props/*property",
            params={"site_id": site_id},
        )

    # -- guests --------------------------------------------------------------------------------

    def list_guests(self, site_id: str, *, page_size: int = MAX_PAGE_SIZE) -> Iterator[Guest]:
        """``GET /api/v1/sites/guests``: guests first, then pending invitations; lazily paginated."""
        params = {"site_id": site_id}
        path = f"{SITES}/guests"
        return self._wire.paginate(path, "guests", parse_guest, params, _page_size(page_size))

    def ensure_guest(self, site_id: str, email: str, role: str) -> Guest:
        """``PUT /api/v1/sites/guests``: invite, or return the existing guest (role unchanged)."""
        body = {"site_id": site_id, "email": email, "role": role}
        path = f"{SITES}/guests"
        return self._wire.call("PUT", path, parse_guest, route=path, json_body=body)

    def delete_guest(self, site_id: str, email: str) -> bool:
        """``DELETE /api/v1/sites/guests/:email``; true also when nothing matched."""
        path = f"{SITES}/guests/{_segment(email, 'email')}"
        return self._wire.call(
            "DELETE",
            path,
            lambda b: parse_flag(b, "deleted"),
            route=f"{SITES}/guests/:email",
            params={"site_id": site_id},
        )


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


def _plain(mapping: Mapping[str, _T] | None) -> dict[str, _T] | None:
    # json.dumps rejects Mapping types that aren't dicts (e.g. MappingProxyType from a Site).
    return None if mapping is None else dict(mapping)

"""Where the dashboard lives and where it sends a browser next: its prefix, and the only
addresses it redirects to (its own paths)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request

PREFIX = "/ui"
#: The parts of pages that ``static/dashboard.js`` refreshes; they answer a missing session with
#: 401 instead of a redirect.
FRAGMENTS = f"{PREFIX}/fragments/"
SIGN_IN = f"{PREFIX}/login"


def safe_next(value: str | None) -> str:
    """Where to go after signing in or an action: a dashboard path only (no open redirect)."""
    if (
        value
        and value.startswith(PREFIX)
        and not value.startswith("//")
        and "\\" not in value
        and (len(value) == len(PREFIX) or value[len(PREFIX)] in "/?")
    ):
        return value
    return PREFIX


def with_query(path: str, **params: Any) -> str:
    joiner = "&" if "?" in path else "?"
    return f"{path}{joiner}{urlencode(params)}"


def here(request: Request) -> str:
    """The path and query the request asked for."""
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def is_fragment(request: Request) -> bool:
    return request.url.path.startswith(FRAGMENTS)

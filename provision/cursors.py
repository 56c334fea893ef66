"""The one cursor of every keyset page (the HTTP service's job lists, the dashboard's pages): a
position ``(created_at, id)`` as an opaque URL-safe string."""

from __future__ import annotations

import base64
from datetime import datetime

from worker.errors import InvalidRequestError
from worker.times import as_utc

Cursor = tuple[datetime, str]


def encode(cursor: Cursor | None) -> str | None:
    if cursor is None:
        return None
    stamp, key = cursor
    return base64.urlsafe_b64encode(f"{stamp.isoformat()}|{key}".encode()).decode()


def decode(value: str | None) -> Cursor | None:
    """The position ``value`` encodes; None for no cursor (the first page). A cursor this module
    did not make is refused (InvalidRequestError on ``cursor``), never read as the first page."""
    if not value:
        return None
    try:
        stamp, key = base64.urlsafe_b64decode(value.encode()).decode().split("|", 1)
        parsed = as_utc(datetime.fromisoformat(stamp))
    except (ValueError, UnicodeError):
        parsed = None
    if parsed is None:
        raise InvalidRequestError("cursor is not one this service returned", field="cursor")
    return parsed, key

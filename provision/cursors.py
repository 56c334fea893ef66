"""The one cursor of every keyset page (the HTTP service's job and site lists, the dashboard's
pages): a position of two parts as an opaque URL-safe string. Job pages are positioned by
``(created_at, id)``; site pages by ``(domain, account)``."""

from __future__ import annotations

import base64
from datetime import datetime

from worker.errors import InvalidRequestError
from worker.times import as_utc

Cursor = tuple[datetime, str]
Pair = tuple[str, str]

_REFUSED = "cursor is not one this service returned"


def encode(cursor: Cursor | Pair | None) -> str | None:
    if cursor is None:
        return None
    first, second = cursor
    text = first.isoformat() if isinstance(first, datetime) else first
    return base64.urlsafe_b64encode(f"{text}|{second}".encode()).decode()


def decode_pair(value: str | None) -> Pair | None:
    """The two parts ``value`` encodes; None for no cursor (the first page). A cursor this
    module did not make is refused (InvalidRequestError on ``cursor``), never read as the
    first page."""
    if not value:
        return None
    try:
        first, second = base64.urlsafe_b64decode(value.encode()).decode().split("|", 1)
    except (ValueError, UnicodeError):
        raise InvalidRequestError(_REFUSED, field="cursor") from None
    return first, second


def decode(value: str | None) -> Cursor | None:
    """A job page's position, ``(created_at, id)`` (``decode_pair``)."""
    pair = decode_pair(value)
    if pair is None:
        return None
    try:
        stamp = as_utc(datetime.fromisoformat(pair[0]))
    except ValueError:
        stamp = None
    if stamp is None:
        raise InvalidRequestError(_REFUSED, field="cursor")
    return stamp, pair[1]

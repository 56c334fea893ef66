"""Cursor pagination with Plausible's meta: ``after``/``before`` cursors and the used ``limit``.

Cursors are base64url with padding; their content is opaque to clients. A cursor that does not
decode, or a ``limit`` that is not an integer, is an exception in Plausible, hence a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sandbox.http import internal_error

T = TypeVar("T")
DEFAULT_LIMIT = 100
_INTEGER = re.compile(r"[+-]?\d+")


def encode_cursor(position: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"id": position}).encode()).decode()


def decode_cursor(cursor: Any) -> int:
    try:
        if not isinstance(cursor, str):
            raise ValueError(cursor)
        value = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
        position = value["id"]
        if not isinstance(position, int):
            raise ValueError(cursor)
        return position
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise internal_error() from exc


def effective_limit(raw: Any) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not isinstance(raw, str) or not _INTEGER.fullmatch(raw):
        raise internal_error()
    limit = int(raw)
    return limit if 1 <= limit <= 100 else DEFAULT_LIMIT


def paginate(
    items: Sequence[T], params: dict[str, Any], position: Callable[[T], int]
) -> tuple[list[T], dict[str, Any]]:
    """One page of ``items`` (already sorted; ``position`` strictly decreases along them)."""
    limit = effective_limit(params.get("limit"))
    after, before = params.get("after"), params.get("before")
    meta: dict[str, Any] = {"after": None, "before": None, "limit": limit}
    if after is not None:
        mark = decode_cursor(after)
        rest = [item for item in items if position(item) < mark]
        page = rest[:limit]
        if len(rest) > limit:
            meta["after"] = encode_cursor(position(page[-1]))
        if page:
            meta["before"] = encode_cursor(position(page[0]))
    elif before is not None:
        mark = decode_cursor(before)
        earlier = [item for item in items if position(item) > mark]
        page = earlier[-limit:]
        if len(earlier) > limit:
            meta["before"] = encode_cursor(position(page[0]))
        if page:
            meta["after"] = encode_cursor(position(page[-1]))
    else:
        page = list(items[:limit])
        if len(items) > limit:
            meta["after"] = encode_cursor(position(page[-1]))
    return page, meta

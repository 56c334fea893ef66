"""Time as the status database keeps it: aware datetimes in UTC."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

#: What tells the time: ``utcnow``, or a test's fake clock.
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every datetime we store is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)

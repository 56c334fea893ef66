"""The quota gate: after one 429, every worker holds its calls until the window reopens.

Plausible counts refused requests against the quota, so a fleet of workers that keeps calling
after a 429 keeps the window shut. The first worker refused closes the gate (a row in the status
database, so it is shared by every worker on every host, whatever the broker); the others then
park their jobs without calling. This is the seed of the global quota scheduler: it reacts to
429s rather than counting requests ahead of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import or_, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from worker.errors import RateLimitedError
from worker.models import QuotaGateRow, utcnow
from worker.store import as_utc

#: An open gate is re-read at most this often per process; a closed one is trusted until it opens.
RECHECK_SECONDS = 1.0


class QuotaGate:
    def __init__(
        self,
        engine: Engine,
        *,
        name: str = "default",
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.name = name
        self.clock = clock
        self.monotonic = monotonic
        self._closed_until: datetime | None = None
        self._checked_at = float("-inf")

    def check(self) -> None:
        """Raise RateLimitedError while the gate is closed; return when calls may go out."""
        until = self.closed_until()
        if until is not None:
            raise RateLimitedError(
                f"quota closed until {until.isoformat()} after a 429; not calling",
                status=None,
                code="quota_closed",
                limit="gate",
                reset_at=until,
            )

    def closed_until(self) -> datetime | None:
        now = self.clock()
        stale = self.monotonic() - self._checked_at >= RECHECK_SECONDS
        if stale and (self._closed_until is None or self._closed_until <= now):
            with Session(self.engine) as session:
                row = session.get(QuotaGateRow, self.name)
            self._closed_until = as_utc(row.closed_until) if row is not None else None
            self._checked_at = self.monotonic()
        if self._closed_until is not None and self._closed_until > now:
            return self._closed_until
        return None

    def close(self, error: RateLimitedError) -> None:
        """Record a 429: closed until its window resets (never shortening a longer closure)."""
        until = error.reset_at
        self._closed_until = max(until, self._closed_until or until)
        values: dict[str, Any] = {
            "closed_until": until,
            "reason": f"{error.limit}: {error.message}"[:500],
            "updated_at": self.clock(),
        }
        if self._extend(until, values):
            return
        try:
            with Session(self.engine) as session:
                session.add(QuotaGateRow(name=self.name, **values))
                session.commit()
        except IntegrityError:
            self._extend(until, values)  # another worker created the row first

    def _extend(self, until: datetime, values: dict[str, Any]) -> bool:
        """Move the closure to ``until`` unless it already ends later; False if there is no row
        or it ends later."""
        t = QuotaGateRow
        with Session(self.engine) as session:
            changed = session.execute(
                update(t)
                .where(col(t.name) == self.name)
                .where(or_(col(t.closed_until).is_(None), col(t.closed_until) < until))
                .values(**values)
            ).rowcount  # type: ignore[attr-defined]
            session.commit()
        return bool(changed)

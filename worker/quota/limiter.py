"""The limiter: permits for Plausible requests, counted in the status database.

Every request takes a permit in each window it may be counted in (``windows.span``) before it
goes out, with one conditional UPDATE per window in one transaction: a window's ``used`` never
exceeds its limit, whichever process on whichever host asks. The count lives in the status
database, not in the broker, so flushing or restarting Redis cannot reset it into overspending,
and embedded mode uses the same code on SQLite.

Limits depend on the class asking. Interactive jobs may use a whole window; bulk jobs leave
``interactive_reserve`` of it alone until shortly before the window ends, when the part of it
above one typical interactive job (``reserve_floor`` calls) is released to them. That one job's
calls are never released (``held``): a signup may arrive at any moment until the window leaves
its span, and had bulk calls taken them it would wait until then (two guards at least, however
late the release). So a window is spent to the last call only when a signup comes; an import
alone leaves those few calls. However small the limits, the reserve holds that one job, unless
it is off (0).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col

from worker.accounts import Quota
from worker.jobs.db import insert_ignoring
from worker.jobs.models import QuotaWindowRow
from worker.jobs.states import Priority
from worker.quota import windows
from worker.quota.windows import BURST, HOUR, Window
from worker.times import utcnow

#: A site, two goals and a shared link: what the reserve holds at least, until the scheduler
#: sees what the waiting signups need.
TYPICAL_JOB_CALLS = 4


@dataclass(frozen=True)
class Refusal:
    """Why permits were refused: the window without room, and when asking again may succeed
    (epoch seconds, our clock)."""

    window: Window
    retry_at: float
    spent: bool = False


@dataclass(frozen=True)
class WindowUsage:
    window: Window
    used: int
    limit: int
    spent: bool
    resets_at: float

    @property
    def remaining(self) -> int:
        return 0 if self.spent else max(0, self.limit - self.used)


class Limiter:
    def __init__(
        self,
        engine: Engine,
        *,
        interactive_reserve: float = 0.1,
        release_seconds: float = 0.1,
        guard: float = 0.6,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.interactive_reserve = interactive_reserve
        #: The calls of a typical interactive job; the scheduler raises it to what the signups
        #: waiting need.
        self.reserve_floor = TYPICAL_JOB_CALLS
        self.release_seconds = release_seconds
        self.guard = guard
        self.clock = clock

    # -- the arithmetic ------------------------------------------------------------------------

    def span(self, quota: Quota, at: float | None = None) -> list[Window]:
        """The windows a request sent now (or at ``at``) must be charged to."""
        return windows.span(quota, self.clock() if at is None else at, self.guard)

    def budget(self, quota: Quota, kind: str) -> int:
        return quota.hourly_budget if kind == HOUR else quota.burst_limit

    def reserve(self, quota: Quota, kind: str) -> int:
        """Permits of a window kept for interactive jobs: ``interactive_reserve`` of it, and
        at least one typical job's calls (never the whole window)."""
        budget = self.budget(quota, kind)
        if not self.interactive_reserve:
            return 0
        share = math.ceil(budget * self.interactive_reserve)
        return max(share, self.held(quota, kind))

    def held(self, quota: Quota, kind: str) -> int:
        """Permits of a window bulk jobs never take: one typical interactive job's calls (never
        the whole window), free for the next signup until the window is over."""
        if not self.interactive_reserve:
            return 0
        return min(self.reserve_floor, self.budget(quota, kind) - 1)

    def releases(self, quota: Quota, kind: str) -> bool:
        """Whether part of the reserve goes to bulk jobs before the window ends."""
        return self.reserve(quota, kind) > self.held(quota, kind)

    def release_at(self, quota: Quota, window: Window) -> float:
        """When the window's unused interactive reserve, but for the job it always holds
        (``held``), is released to bulk jobs: early enough for them to spend it before the
        window closes."""
        if window.kind == BURST:
            lead = self.release_seconds
        else:
            # The hour's release is spent at the burst rate: give it that many burst windows.
            released = self.reserve(quota, HOUR) - self.held(quota, HOUR)
            burst_windows = math.ceil(released / quota.burst_limit) + 1
            lead = min(burst_windows * quota.burst_seconds, quota.hour_seconds / 4)
        return windows.end(quota, window) - self.guard - lead

    def limit(self, quota: Quota, window: Window, priority: Priority, at: float) -> int:
        """How many permits the window may have handed out once ``priority`` takes one."""
        budget = self.budget(quota, window.kind)
        if priority is Priority.interactive:
            return budget
        if at >= self.release_at(quota, window):
            return budget - self.held(quota, window.kind)
        return budget - self.reserve(quota, window.kind)

    def capacity(self, quota: Quota, priority: Priority) -> int:
        """The most permits one job of ``priority`` can hold in a fresh window of each kind."""
        at = 0.0  # any moment before the release: the class's limit in a window without reserve
        return min(self.limit(quota, Window(kind, 1), priority, at) for kind in (HOUR, BURST))

    def next_change(self, quota: Quota, at: float | None = None) -> float:
        """The next moment the room in ``quota`` grows by the clock alone: a window leaves the
        span of a request sent then, or a reserve is released."""
        at = self.clock() if at is None else at
        moments = []
        for kind in (HOUR, BURST):
            oldest = windows.current(quota, kind, at - self.guard)
            moments.append(windows.end(quota, oldest) + self.guard)
            release = self.release_at(quota, windows.current(quota, kind, at))
            if release > at and self.releases(quota, kind):
                moments.append(release)
        return min(moments)

    def next_room(self, quota: Quota) -> float:
        """The next moment the clock alone may give ``quota`` room: its ``next_change``, or
        while the hour is used up (or spent), not before that hour is over, whatever the burst
        windows do meanwhile."""
        at = self.clock()
        hours = [w for w in self.span(quota, at) if w.kind == HOUR]
        budget = self.budget(quota, HOUR)
        full = [
            windows.end(quota, w) + self.guard
            for w, (used, spent) in self._read(quota, hours).items()
            if spent or used >= budget
        ]
        return max([self.next_change(quota, at), *full])

    def _retry_at(self, quota: Quota, window: Window, priority: Priority, at: float) -> float:
        release = self.release_at(quota, window)
        if priority is Priority.bulk and at < release and self.releases(quota, window.kind):
            return release
        # Once the window is over, a request no longer needs a permit in it.
        return windows.end(quota, window) + self.guard

    # -- the shared counts ---------------------------------------------------------------------

    def take(
        self, quota: Quota, span: Iterable[Window], n: int, priority: Priority
    ) -> Refusal | None:
        """Take ``n`` permits in every window of ``span``, all or none; None when taken."""
        wanted = sorted(set(span))  # one lock order for every process: no deadlocks
        at = self.clock()
        now = utcnow()
        t = QuotaWindowRow.__table__  # type: ignore[attr-defined]
        with Session(self.engine) as session:
            self._ensure_rows(session, quota, wanted)
            for window in wanted:
                changed = session.execute(
                    update(t)
                    .where(_row(quota.name, window))
                    .where(t.c.spent.is_(False))
                    .where(t.c.used + n <= self.limit(quota, window, priority, at))
                    .values(used=t.c.used + n, updated_at=now)
                ).rowcount  # type: ignore[attr-defined]
                if changed != 1:
                    session.rollback()
                    spent = bool(
                        session.execute(select(t.c.spent).where(_row(quota.name, window))).scalar()
                    )
                    return Refusal(window, self._retry_at(quota, window, priority, at), spent)
            session.commit()
        return None

    def give_back(self, quota: Quota, held: Mapping[Window, int]) -> None:
        """Return unused permits to windows that are still open (a job ended early)."""
        at = self.clock()
        back = {w: n for w, n in held.items() if n > 0 and windows.end(quota, w) > at}
        if not back:
            return
        t = QuotaWindowRow.__table__  # type: ignore[attr-defined]
        with Session(self.engine) as session:
            for window, n in sorted(back.items()):
                session.execute(
                    update(t)
                    .where(_row(quota.name, window), t.c.spent.is_(False), t.c.used >= n)
                    .values(used=t.c.used - n, updated_at=utcnow())
                )
            session.commit()

    def mark_spent(self, quota: Quota, window: Window) -> None:
        """Plausible refused a request in ``window`` (someone else spends the same quota):
        nothing more goes out in it, from any process."""
        t = QuotaWindowRow.__table__  # type: ignore[attr-defined]
        with Session(self.engine) as session:
            self._ensure_rows(session, quota, [window])
            session.execute(
                update(t).where(_row(quota.name, window)).values(spent=True, updated_at=utcnow())
            )
            session.commit()

    def _ensure_rows(self, session: Session, quota: Quota, wanted: list[Window]) -> None:
        """Create the windows' rows (nothing taken yet) unless they exist."""
        t = QuotaWindowRow.__table__  # type: ignore[attr-defined]
        now = utcnow()
        session.execute(
            insert_ignoring(t, self.engine.dialect.name, ["quota", "kind", "window"]),
            [
                {
                    "quota": quota.name,
                    "kind": w.kind,
                    "window": w.index,
                    "used": 0,
                    "spent": False,
                    "updated_at": now,
                }
                for w in wanted
            ],
        )

    def usage(self, quota: Quota, priority: Priority = Priority.interactive) -> list[WindowUsage]:
        """The windows of each kind current now, as ``priority`` sees them."""
        at = self.clock()
        current = [windows.current(quota, kind, at) for kind in (HOUR, BURST)]
        rows = self._read(quota, current)
        return [
            WindowUsage(
                w,
                *rows[w][:1],
                self.limit(quota, w, priority, at),
                rows[w][1],
                windows.end(quota, w),
            )
            for w in current
        ]

    def room(self, quota: Quota, priority: Priority) -> int:
        """Permits ``priority`` could take for a request sent now (0 while any window of its span
        is full or spent)."""
        at = self.clock()
        span = self.span(quota, at)
        rows = self._read(quota, span)
        free = [
            0 if spent else self.limit(quota, w, priority, at) - used
            for w, (used, spent) in rows.items()
        ]
        return max(0, min(free))

    def _read(self, quota: Quota, wanted: list[Window]) -> dict[Window, tuple[int, bool]]:
        """(used, spent) of each window; windows without a row have taken nothing."""
        t = QuotaWindowRow
        found: dict[Window, tuple[int, bool]] = dict.fromkeys(wanted, (0, False))
        with Session(self.engine) as session:
            for kind, index, used, spent in session.execute(
                select(col(t.kind), col(t.window), col(t.used), col(t.spent)).where(
                    col(t.quota) == quota.name,
                    or_(*(and_(col(t.kind) == w.kind, col(t.window) == w.index) for w in wanted)),
                )
            ).all():
                found[Window(kind, index)] = (int(used), bool(spent))
        return found

    def prune(self) -> int:
        """Forget windows nobody has touched for two hours (every window is at most an hour)."""
        t = QuotaWindowRow
        with Session(self.engine) as session:
            removed = session.execute(
                delete(t).where(col(t.updated_at) < utcnow() - timedelta(hours=2))
            ).rowcount  # type: ignore[attr-defined]
            session.commit()
        return int(removed)


def _row(quota: str, window: Window) -> ColumnElement[bool]:
    t = QuotaWindowRow.__table__  # type: ignore[attr-defined]
    return and_(t.c.quota == quota, t.c.kind == window.kind, t.c.window == window.index)

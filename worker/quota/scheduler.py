"""The scheduler: which queued job goes to the workers next, and when.

Every tick, for every quota: interactive jobs first, oldest first; then bulk jobs, one from
each batch in turn (round-robin, resuming after the batch served last), so a small import is not
stuck behind a large one. A job is dispatched only once the calls it still needs are reserved in
the current windows (``Limiter.take``); when they do not fit, the class waits for the next tick.
A tick costs the same whatever the backlog: the batches with work come from the counts, the
candidates from one query of index range scans, their permits from one reservation and their
admission from one UPDATE.
Nothing waits in a worker slot, in a broker countdown or under a lease: waiting jobs are rows.
At most ``ahead`` dispatched jobs wait in the broker at once (a quota far above what the workers
can do would otherwise move the whole backlog there, behind which nothing can go first).

Several schedulers (one per worker) may run at once: permits are taken atomically and a job is
marked dispatched with a conditional UPDATE, so each job is dispatched once and no window is
overspent. A scheduler that loses the race for a job gives its permits back.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence

from worker.accounts import Accounts, Quota
from worker.dispatch import Dispatcher
from worker.errors import ConfigurationError
from worker.jobs.dispatch import BatchPosition, Dispatching, Ready
from worker.jobs.states import Priority
from worker.pauses import Pauses
from worker.quota.limiter import TYPICAL_JOB_CALLS, Limiter
from worker.quota.windows import Window

log = logging.getLogger(__name__)

#: Jobs admitted per class and quota in one tick, at most: a lifted quota admits the rest at the
#: next ticks, which follow at once while work and room remain.
MAX_PER_TICK = 500
#: Admitted jobs are published this many at a time.
PUBLISH_EVERY = 32
#: How often the reserve's release is fitted to how long jobs take.
TUNE_EVERY_SECONDS = 2.0


class Scheduler:
    def __init__(
        self,
        store: Dispatching,
        limiter: Limiter,
        accounts: Accounts,
        dispatcher: Dispatcher,
        pauses: Pauses | None = None,
        *,
        ahead: int | None = None,
    ) -> None:
        self.store = store
        #: Dispatched jobs no worker has started, at most (None: no bound but the quota's).
        self.ahead = ahead
        self.limiter = limiter
        self.accounts = accounts
        self.dispatcher = dispatcher
        #: Paused accounts get nothing admitted (for the site limit: no new site).
        self.pauses = pauses
        self._keys_checked_at = float("-inf")
        #: Per quota: the bulk batch served last, so the next round starts after it.
        self._last_batch: dict[str, BatchPosition] = {}
        #: Per quota: the batches asked for jobs at the last round, by id.
        self._positions: dict[str, dict[str, BatchPosition]] = {}
        self._release_floor = limiter.release_seconds
        self._tuned_at = float("-inf")

    def tick(self) -> list[str]:
        """Admit what fits now in every quota and publish it; returns the ids dispatched."""
        self._tune_release()
        self._resume_changed_keys()
        paused = self.pauses.active() if self.pauses is not None else {}
        admitted: list[str] = []
        #: How many more jobs may wait in the broker (None: as many as the quota allows).
        slots = None
        if self.ahead is not None:
            slots = self.ahead - self.store.unstarted_dispatched()
            if slots <= 0:
                return admitted
        for quota in self.accounts.quotas.values():
            names = [
                name
                for name in self.accounts.of_quota(quota.name)
                if name not in paused or paused[name].scope != "all"
            ]
            no_new_sites = [name for name in names if name in paused]
            if not names:
                continue
            for priority, jobs in (
                (Priority.interactive, self._interactive(names, no_new_sites)),
                (Priority.bulk, self._round_robin(quota, names, no_new_sites)),
            ):
                left = None if slots is None else slots - len(admitted)
                admitted += self._admit(quota, priority, jobs, left)
        return admitted

    def _publish(
        self,
        quota: Quota,
        job_ids: list[str],
        held: Mapping[str, tuple[Sequence[Window], int]],
        *,
        first: bool = False,
        bulk: bool = False,
    ) -> None:
        if not job_ids:
            return
        try:
            self.dispatcher.publish(job_ids, first=first, bulk=bulk)
        except Exception:
            # Offered again at the next tick, which reserves their calls anew: give these back.
            self.store.release_dispatch(job_ids)
            for job_id in job_ids:
                span, n = held[job_id]
                self.limiter.give_back(quota, dict.fromkeys(span, n))
            raise

    def _tune_release(self) -> None:
        """Release the interactive reserve early enough for the bulk jobs it admits to finish
        before the window closes: as long before as jobs have lately taken (their slowest tenth),
        never less than the configured lead nor more than a quarter of a burst window."""
        now = self.limiter.clock()
        if now - self._tuned_at < TUNE_EVERY_SECONDS:
            return
        self._tuned_at = now
        took = sorted(self.store.recent_run_seconds(self.accounts.names))
        slow = took[int(len(took) * 0.9)] if took else 0.0
        shortest = min(q.burst_seconds for q in self.accounts.quotas.values())
        self.limiter.release_seconds = min(max(self._release_floor, slow), shortest / 4)
        # The reserve holds at least one of the signups waiting, on average.
        jobs, calls = self.store.open_work(self.accounts.names, Priority.interactive)
        typical = math.ceil(calls / jobs) if jobs else 0
        self.limiter.reserve_floor = max(TYPICAL_JOB_CALLS, typical)

    def next_wake(self) -> float:
        """When the next tick should run at the latest, for work to start the moment room
        appears (epoch seconds)."""
        return min(self.limiter.next_room(quota) for quota in self.accounts.quotas.values())

    def _admit(
        self,
        quota: Quota,
        priority: Priority,
        candidates: Callable[[int], list[Ready]],
        slots: int | None = None,
    ) -> list[str]:
        """Admit, in ``candidates``' order, the jobs whose calls fit in the room left; stop at the
        first that does not (it goes first next time)."""
        room = self.limiter.room(quota, priority)
        if room <= 0 or (slots is not None and slots <= 0):
            return []
        cap = self.limiter.capacity(quota, priority)
        wanted = min(room, MAX_PER_TICK, room if slots is None else slots)
        chosen: list[tuple[Ready, int]] = []
        total = 0
        for job in candidates(wanted):
            n = max(1, min(job.calls, cap))
            if total + n > room or len(chosen) >= wanted:
                break
            chosen.append((job, n))
            total += n
        if not chosen:
            return []
        span = self.limiter.span(quota)
        if self.limiter.take(quota, span, total, priority) is not None:
            return []  # another scheduler took the room first: the next tick sees what is left
        admitted = self.store.admit({job.id: {w.key: n for w in span} for job, n in chosen})
        lost = sum(n for job, n in chosen if job.id not in admitted)
        if lost:
            self.limiter.give_back(quota, dict.fromkeys(span, lost))
        order = [job for job, _ in chosen if job.id in admitted]
        if priority is Priority.bulk and order:
            served = self._positions.get(quota.name, {}).get(order[-1].batch_id or "")
            if served is not None:
                self._last_batch[quota.name] = served
        ids = [job.id for job in order]
        held = {job.id: (span, n) for job, n in chosen if job.id in admitted}
        # Jobs that ran before (handed back from a dead worker) go ahead of the waiting messages;
        # whether they did is read as they are dispatched, so the sweeper finds the lane of each
        # message from its job's row.
        resumed = [job.id for job in order if admitted[job.id]]
        fresh = [job.id for job in order if not admitted[job.id]]
        for group, first in ((resumed, True), (fresh, False)):
            for start in range(0, len(group), PUBLISH_EVERY):
                batch = group[start : start + PUBLISH_EVERY]
                self._publish(quota, batch, held, first=first, bulk=priority is Priority.bulk)
        return ids

    def _resume_changed_keys(self) -> None:
        """An account paused for a refused key resumes once its key is another one."""
        now = self.limiter.clock()
        if self.pauses is None or now - self._keys_checked_at < TUNE_EVERY_SECONDS:
            return
        self._keys_checked_at = now
        keys = {}
        for account in self.accounts:
            try:
                keys[account.name] = account.api_key().get_secret_value()
            except ConfigurationError:
                continue
        for name in self.pauses.resume_changed_keys(keys):
            log.warning("account %s resumed: its key changed", name)

    def _interactive(
        self, accounts: list[str], no_provision: list[str]
    ) -> Callable[[int], list[Ready]]:
        def oldest(wanted: int) -> list[Ready]:
            return self.store.ready_jobs(
                accounts, Priority.interactive, limit=wanted, no_provision=no_provision
            )

        return oldest

    def _round_robin(
        self, quota: Quota, accounts: list[str], no_provision: list[str]
    ) -> Callable[[int], list[Ready]]:
        def in_turn(wanted: int) -> list[Ready]:
            """The next ``wanted`` jobs, one from each batch in turn from the batch after the one
            served last: the oldest jobs of just enough batches, in one query."""
            last = self._last_batch.get(quota.name)
            asked = self.store.pending_batches(accounts, Priority.bulk, after=last, limit=wanted)
            if len(asked) < wanted:  # round again from the oldest batch
                more = self.store.pending_batches(accounts, Priority.bulk, limit=wanted)
                asked += [batch for batch in more if batch not in asked][: wanted - len(asked)]
            if not asked:
                return []
            per_batch = -(-wanted // len(asked))
            queues: dict[str | None, deque[Ready]] = {batch.id: deque() for batch in asked}
            for job in self.store.ready_jobs(
                accounts,
                Priority.bulk,
                limit=per_batch,
                batch_ids=[batch.id for batch in asked],
                no_provision=no_provision,
            ):
                queues[job.batch_id].append(job)
            self._positions[quota.name] = {batch.id: batch for batch in asked}
            out: list[Ready] = []
            while len(out) < wanted and any(queues.values()):
                for batch in asked:
                    if queues[batch.id] and len(out) < wanted:
                        out.append(queues[batch.id].popleft())
            return out

        return in_turn

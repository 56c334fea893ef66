"""The scheduler: which queued job goes to the workers next, and when.

Every tick, for every quota: interactive jobs first, oldest first; then bulk jobs, one from
each batch in turn (round-robin, resuming after the batch served last), so a small import is not
stuck behind a large one. A job is dispatched only once the calls it still needs are reserved in
the current windows (``Limiter.take``); when they do not fit, the class waits for the next tick.
Nothing waits in a worker slot, in a broker countdown or under a lease: waiting jobs are rows.

Several schedulers (one per worker) may run at once: permits are taken atomically and a job is
marked dispatched with a conditional UPDATE, so each job is dispatched once and no window is
overspent. A scheduler that loses the race for a job gives its permits back.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator

from worker.accounts import Accounts, Quota
from worker.dispatch import Dispatcher
from worker.models import Priority, ProvisioningJob
from worker.quota.limiter import Limiter
from worker.quota.permits import calls_needed
from worker.store import JobStore

log = logging.getLogger(__name__)

#: Jobs fetched per query: a window's worth at Plausible's default limits.
FETCH = 32
#: How often the reserve's release is fitted to how long jobs take.
TUNE_EVERY_SECONDS = 2.0


class Scheduler:
    def __init__(
        self, store: JobStore, limiter: Limiter, accounts: Accounts, dispatcher: Dispatcher
    ) -> None:
        self.store = store
        self.limiter = limiter
        self.accounts = accounts
        self.dispatcher = dispatcher
        #: Per quota: the bulk batch served last, so the next round starts after it.
        self._last_batch: dict[str, str | None] = {}
        self._release_floor = limiter.release_seconds
        self._tuned_at = float("-inf")

    def tick(self) -> list[str]:
        """Admit what fits now in every quota and publish it; returns the ids dispatched."""
        self._tune_release()
        admitted: list[str] = []
        for quota in self.accounts.quotas.values():
            names = self.accounts.of_quota(quota.name)
            admitted += self._admit(quota, Priority.interactive, self._interactive(names))
            admitted += self._admit(quota, Priority.bulk, self._round_robin(quota, names))
        if admitted:
            try:
                self.dispatcher.publish(admitted)
            except Exception:
                # The permits stay taken (at worst a window is under-used); the jobs are
                # offered again at the next tick.
                self.store.release_dispatch(admitted)
                raise
        return admitted

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

    def next_wake(self) -> float:
        """When the next tick should run at the latest, for work to start the moment room
        appears (epoch seconds)."""
        return min(self.limiter.next_change(quota) for quota in self.accounts.quotas.values())

    def _admit(
        self, quota: Quota, priority: Priority, jobs: Iterator[ProvisioningJob]
    ) -> list[str]:
        room = self.limiter.room(quota, priority)
        if room <= 0:
            return []
        cap = self.limiter.capacity(quota, priority)
        admitted: list[str] = []
        for job in jobs:
            n = max(1, min(calls_needed(job.spec, job.progress), cap))
            if n > room:
                break
            span = self.limiter.span(quota)
            if self.limiter.take(quota, span, n, priority) is not None:
                break
            if self.store.admit(job.id, {w.key: n for w in span}):
                admitted.append(job.id)
                room -= n
                if priority is Priority.bulk:
                    self._last_batch[quota.name] = job.batch_id
            else:
                self.limiter.give_back(quota, dict.fromkeys(span, n))
        return admitted

    def _interactive(self, accounts: list[str]) -> Iterator[ProvisioningJob]:
        while True:
            jobs = self.store.admission_candidates(accounts, Priority.interactive, limit=FETCH)
            yield from jobs
            if len(jobs) < FETCH:
                return

    def _round_robin(self, quota: Quota, accounts: list[str]) -> Iterator[ProvisioningJob]:
        batches = self.store.pending_batches(accounts, Priority.bulk)
        if not batches:
            return
        last = self._last_batch.get(quota.name)
        if last in batches:
            turn = batches.index(last) + 1
            batches = batches[turn:] + batches[:turn]
        queues = {batch: _Batch(self.store, accounts, batch) for batch in batches}
        while queues:
            for batch in list(queues):
                job = queues[batch].next()
                if job is None:
                    del queues[batch]
                else:
                    yield job


class _Batch:
    """One batch's queued bulk jobs, fetched a few at a time. A job offered is either admitted
    (and so no longer a candidate) or ends the round, so each fetch starts from the top."""

    def __init__(self, store: JobStore, accounts: list[str], batch_id: str | None) -> None:
        self.store = store
        self.accounts = accounts
        self.batch_id = batch_id
        self.pending: deque[ProvisioningJob] = deque()
        self.exhausted = False

    def next(self) -> ProvisioningJob | None:
        if not self.pending and not self.exhausted:
            jobs = self.store.admission_candidates(
                self.accounts, Priority.bulk, limit=FETCH, batch_id=self.batch_id
            )
            self.pending.extend(jobs)
            self.exhausted = len(jobs) < FETCH
        return self.pending.popleft() if self.pending else None

"""The sweeper: the scheduler's loop, plus re-driving jobs the broker alone would lose or forget.

Every ``schedule_interval_seconds`` the scheduler dispatches queued jobs that fit in the quota
(``worker.quota.scheduler``). Every ``sweep_interval_seconds`` the sweeper also

- hands back to the scheduler the waiting jobs whose time has come and the running jobs whose
  lease expired (their worker died),
- publishes again dispatched jobs that never started (the broker lost their message);

and every ``RETENTION_EVERY_SECONDS`` it deletes finished jobs older than
``PROVISIONER_JOB_RETENTION`` (``Recovery.prune_finished``), a chunk at a time. Every
``PRUNE_EVERY_SECONDS`` it drops the quota's old windows and refreshes SQLite's planner
statistics.

Every worker runs one. That is safe: each job is taken by one scheduler or sweeper at a time
(conditional UPDATE), and a duplicate message is harmless because only one claim can win.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from worker import leases, metrics, webhooks
from worker.dispatch import Dispatcher
from worker.jobs.db import optimize
from worker.jobs.store import JobStore
from worker.problems import explain
from worker.quota.scheduler import Scheduler
from worker.settings import Settings

log = logging.getLogger(__name__)

#: Old quota windows are forgotten this often.
PRUNE_EVERY_SECONDS = 600.0
#: Finished jobs past their retention are deleted this often, ``RETENTION_CHUNK`` at most.
RETENTION_EVERY_SECONDS = 60.0
RETENTION_CHUNK = 2000


@dataclass(frozen=True)
class SweepResult:
    requeued: int
    redispatched: int


def sweep_once(store: JobStore, dispatcher: Dispatcher, settings: Settings) -> SweepResult:
    requeued = store.requeue_due() + leases.release_gone(store)
    # Jobs dispatched a while ago that no worker claimed, beyond the messages still waiting in
    # the broker, lost theirs: the queue is FIFO, so the oldest of them are the ones missing.
    after = settings.redispatch_after_seconds
    # The queue first: a message consumed between the two reads then makes the count too low
    # (caught at the next sweep), never too high (a duplicate). The queue is FIFO, so the
    # messages missing from it are those of the oldest dispatched jobs; of those, the ones that
    # have waited long enough are published again.
    queued = dispatcher.queued_messages()
    missing = store.unstarted_dispatched() - queued
    lost = store.take_for_redispatch(redispatch_after=after, limit=min(missing, 500))
    # Should publishing fail, they stay dispatched with their permits: a later sweep finds them
    # missing again (the wait before it doubles).
    dispatcher.publish(lost)
    metrics.SCHEDULER_JOBS.labels("requeued").inc(requeued)
    metrics.SCHEDULER_JOBS.labels("redispatched").inc(len(lost))
    if requeued or lost:
        log.info("sweeper: %d back to the scheduler, %d published again", requeued, len(lost))
    return SweepResult(requeued=requeued, redispatched=len(lost))


def prune_expired(store: JobStore, settings: Settings) -> int:
    """Delete a chunk of the finished jobs past ``settings.job_retention``; returns how many."""
    if not settings.job_retention:
        return 0
    before = store.clock() - settings.job_retention
    pruned = store.prune_finished(before=before, limit=RETENTION_CHUNK)
    if pruned:
        log.info("retention: deleted %d job(s) finished before %s", pruned, before.isoformat())
    return pruned


def sweep_forever(
    store: JobStore,
    scheduler: Scheduler,
    settings: Settings,
    wait: Callable[[float], bool],
    *,
    monotonic: Callable[[], float] = time.monotonic,
) -> None:
    """Schedule every ``schedule_interval_seconds`` (and the moment a window opens or a reserve
    is released) and sweep every ``sweep_interval_seconds``, until ``wait(interval)`` returns
    True. Completion webhooks go out meanwhile from a thread of their own (``worker.webhooks``),
    which ends with this loop's thread."""
    webhooks.start_sender(store, settings)
    next_sweep = next_prune = next_retention = monotonic()
    pause = settings.schedule_interval_seconds
    while not wait(pause):
        now = monotonic()
        try:
            if now >= next_sweep:
                next_sweep = now + settings.sweep_interval_seconds
                sweep_once(store, scheduler.dispatcher, settings)
            if now >= next_prune:
                next_prune = now + PRUNE_EVERY_SECONDS
                scheduler.limiter.prune()
                optimize(store.engine)
            if now >= next_retention:
                pruned = prune_expired(store, settings)
                next_retention = now + (0 if pruned == RETENTION_CHUNK else RETENTION_EVERY_SECONDS)
            metrics.SCHEDULER_JOBS.labels("dispatched").inc(len(scheduler.tick()))
            until_change = scheduler.next_wake() - scheduler.limiter.clock()
            pause = min(settings.schedule_interval_seconds, max(0.005, until_change))
        except Exception as exc:
            # A database or broker outage must not end the loop; it tries again next tick. An
            # outage is one line saying what is down; anything else keeps its traceback.
            problem = explain(exc, settings)
            if problem is None:
                log.exception("scheduling or sweeping failed; retrying")
            else:
                log.warning(
                    "scheduling or sweeping failed: %s; retrying in %gs",
                    problem,
                    settings.sweep_interval_seconds,
                )
            wait(settings.sweep_interval_seconds)


class SweeperThread(threading.Thread):
    """``sweep_forever`` on a thread, until stopped."""

    def __init__(self, store: JobStore, scheduler: Scheduler, settings: Settings) -> None:
        super().__init__(name="provisioner-sweeper", daemon=True)
        self.store = store
        self.scheduler = scheduler
        self.settings = settings
        self._stop_event = threading.Event()

    def run(self) -> None:
        sweep_forever(self.store, self.scheduler, self.settings, self._stop_event.wait)

    def stop(self) -> None:
        self._stop_event.set()

"""The sweeper: the scheduler's loop, plus re-driving jobs the broker alone would lose or forget.

Every ``schedule_interval_seconds`` the scheduler dispatches queued jobs that fit in the quota
(``worker.quota.scheduler``). Every ``sweep_interval_seconds`` the sweeper also

- hands back to the scheduler the waiting jobs whose time has come and the running jobs whose
  lease expired (their worker died),
- publishes again dispatched jobs that never started (the broker lost their message), each
  into the lane of the broker's queue it was lost from;

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from worker import leases, metrics, webhooks
from worker.dispatch import PRIORITIES, Dispatcher, Lane, MessageClass, lane_of
from worker.jobs.db import optimize
from worker.jobs.recovery import Sent
from worker.jobs.store import JobStore
from worker.problems import explain
from worker.quota.scheduler import Scheduler
from worker.registry import Watcher
from worker.settings import Settings
from worker.wakeups import Wakeup

log = logging.getLogger(__name__)

#: Old quota windows are forgotten this often.
PRUNE_EVERY_SECONDS = 600.0
#: Finished jobs past their retention are deleted this often, ``RETENTION_CHUNK`` at most.
RETENTION_EVERY_SECONDS = 60.0
RETENTION_CHUNK = 2000
#: Longer than a dispatch takes from its commit to its message in the broker.
PUBLISH_SLACK_SECONDS = 1.0
#: At most this many lost messages are published again per sweep, signups' lanes first.
REDISPATCH_CHUNK = 500


@dataclass(frozen=True)
class SweepResult:
    requeued: int
    redispatched: int
    #: Dispatched jobs no worker has started yet.
    unstarted: int = 0
    #: Seconds until the first waiting job is due (None: none waits).
    next_due: float | None = None

    @property
    def busy(self) -> bool:
        """Whether the next sweep should follow soon rather than at the idle poll."""
        return bool(self.requeued or self.redispatched or self.unstarted)


class LostMessages:
    """Which dispatched jobs looked lost at the last sweep. A message on its way from the
    broker to a worker (taken from the queue, its job not yet claimed) is in neither place
    for a moment, and looks lost; a message lost for good looks so at two sweeps in a row."""

    def __init__(self) -> None:
        self._suspects: set[Sent] = set()

    def confirm(self, found: list[Sent]) -> set[Sent]:
        """Of the jobs ``found`` missing now, those that were at the last sweep too."""
        confirmed = self._suspects.intersection(found)
        self._suspects = set(found) - confirmed
        return confirmed


def missing_by_lane(
    dispatched: Mapping[MessageClass, int], queued: Mapping[Lane, int]
) -> dict[frozenset[MessageClass], int]:
    """Per FIFO lane of the broker (the classes of the messages it holds), how many fewer
    messages wait in it than jobs were dispatched into it and not started: ``dispatched`` by
    the class of their message, ``queued`` by lane (``Dispatcher.queued_messages``). At most
    ``REDISPATCH_CHUNK`` in all, the signups' lanes served first."""
    lanes: dict[Lane, set[MessageClass]] = {}
    for kind in sorted(dispatched, key=PRIORITIES.__getitem__):
        lanes.setdefault(lane_of(kind, queued), set()).add(kind)
    missing = {}
    room = REDISPATCH_CHUNK
    for lane, kinds in lanes.items():
        lacking = min(sum(dispatched[kind] for kind in kinds) - queued.get(lane, 0), room)
        if lacking > 0:
            missing[frozenset(kinds)] = lacking
            room -= lacking
    return missing


def sweep_once(
    store: JobStore, dispatcher: Dispatcher, settings: Settings, lost_messages: LostMessages
) -> SweepResult:
    requeued = store.requeue_due() + leases.release_gone(store)
    # Jobs dispatched a while ago that no worker claimed, beyond the messages still waiting in
    # the broker, lost theirs. Counted per lane of the broker: each is FIFO (a Redis list per
    # priority, RabbitMQ's one queue), so in each the oldest of its jobs are the ones missing;
    # of those, the ones that have waited long enough are published again. Counted over the
    # whole queue instead, a signup's lost message would pass for that of an older bulk job
    # whose message still waits behind it (signups are taken first).
    # The queue first: a message consumed between the two reads then makes a lane's count too
    # low (caught at the next sweep), never too high (a duplicate).
    # With none dispatched and unstarted, no message can be missing: the broker is not asked.
    # And only jobs dispatched a moment before the queue is read are compared with it: a job
    # dispatched meanwhile may be published after the read, and counting it would make an
    # older message that still waits look lost (a duplicate).
    missing: dict[frozenset[MessageClass], int] = {}
    unstarted = store.unstarted_dispatched()
    if unstarted:
        compared_before = store.clock() - timedelta(seconds=PUBLISH_SLACK_SECONDS)
        queued = dispatcher.queued_messages()
        missing = missing_by_lane(store.unstarted_dispatched_before(compared_before), queued)
    lost = store.take_for_redispatch(
        redispatch_after=settings.redispatch_after_seconds,
        missing=missing,
        confirm=lost_messages.confirm,
    )
    # Each into the lane it was lost from, where the scheduler put it (signups first). Should
    # publishing fail, they stay dispatched with their permits: a later sweep finds them
    # missing again (the wait before it doubles).
    for (bulk, first), job_ids in sorted(lost.items(), key=lambda item: PRIORITIES[item[0]]):
        dispatcher.publish(job_ids, first=first, bulk=bulk)
    redispatched = sum(len(job_ids) for job_ids in lost.values())
    metrics.SCHEDULER_JOBS.labels("requeued").inc(requeued)
    metrics.SCHEDULER_JOBS.labels("redispatched").inc(redispatched)
    if requeued or redispatched:
        log.info("sweeper: %d back to the scheduler, %d published again", requeued, redispatched)
    due = store.next_due()
    next_due = None if due is None else (due - store.clock()).total_seconds()
    return SweepResult(requeued, redispatched, unstarted, next_due)


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
    wakeup: Wakeup,
    stopped: Callable[[], bool],
    *,
    poll: float | None = None,
    watch: Watcher | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> None:
    """Schedule when woken (``wakeup``: new work, a job finished or handed back), when a quota
    window opens or a reserve is released, and every ``poll`` seconds otherwise (the safety
    net; ``settings.idle_poll_seconds`` by default); while ticks admit jobs, again every
    ``schedule_interval_seconds``. Sweep every ``sweep_interval_seconds``, and run ``watch``
    (the handback of dead processes' jobs, ``worker.registry``) every heartbeat. Until
    ``stopped()``. Completion webhooks go out meanwhile from a thread of their own
    (``worker.webhooks``), which ends with this loop's thread."""
    webhooks.start_sender(store, settings)
    lost_messages = LostMessages()
    poll = settings.idle_poll_seconds if poll is None else poll
    start = monotonic()
    next_sweep = next_prune = next_retention = next_watch = next_tick = start
    last_tick = last_sweep = float("-inf")
    watch_every = settings.heartbeat_seconds
    while not stopped():
        now = monotonic()
        due = min(next_tick, next_sweep, next_watch if watch else next_sweep)
        if due > now and wakeup.wait(due - now):
            # Woken: tick now, or as soon as the busy rate allows; sweep at the busy rate.
            next_tick = max(monotonic(), last_tick + settings.schedule_interval_seconds)
            next_sweep = min(next_sweep, last_sweep + settings.sweep_interval_seconds)
            continue
        if stopped():
            return
        now = monotonic()
        try:
            if watch is not None and now >= next_watch:
                if watch():
                    next_tick = now  # handed-back jobs go out at once
                # Every heartbeat, or the moment a silent process would time out if sooner.
                next_watch = min(now + watch_every, (watch.due() or now + watch_every) + 0.01)
            if now >= next_sweep:
                last_sweep = now
                swept = sweep_once(store, scheduler.dispatcher, settings, lost_messages)
                # Idle (nothing dispatched and unstarted, nothing handed back): at the idle poll,
                # or when the first waiting job is due.
                next_sweep = now + (settings.sweep_interval_seconds if swept.busy else poll)
                if swept.next_due is not None:
                    next_sweep = min(next_sweep, now + max(0.05, swept.next_due))
                if swept.requeued:
                    next_tick = now
            if now >= next_prune:
                next_prune = now + PRUNE_EVERY_SECONDS
                scheduler.limiter.prune()
                optimize(store.engine)
            if now >= next_retention:
                pruned = prune_expired(store, settings)
                next_retention = now + (0 if pruned == RETENTION_CHUNK else RETENTION_EVERY_SECONDS)
            if now >= next_tick:
                last_tick = now
                # Nothing waits for admission (one read of the counts): no tick at all.
                waiting = store.ready_waiting()
                admitted = scheduler.tick() if waiting else []
                metrics.SCHEDULER_JOBS.labels("dispatched").inc(len(admitted))
                # More may be ready behind what a tick admitted: look again soon. Jobs left
                # waiting for room: when the quota's room next grows. Nothing waiting: until
                # woken (new work announces itself) or the idle poll.
                if admitted:
                    next_tick = now + settings.schedule_interval_seconds
                elif waiting:
                    # Room comes back within the idle poll (a burst window): look at the busy
                    # rate, since jobs in flight also give room back (a dispatch-ahead slot as
                    # they start, permits as they park) and that announces nothing. A spent
                    # hour: only the idle poll until it frees (new work and ends still wake).
                    until_change = scheduler.next_wake() - scheduler.limiter.clock()
                    busy = until_change <= poll
                    next_tick = now + (settings.schedule_interval_seconds if busy else poll)
                else:
                    next_tick = now + poll
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
            retry = monotonic() + settings.sweep_interval_seconds
            next_tick = max(next_tick, retry)
            next_sweep = max(next_sweep, retry)
            next_watch = max(next_watch, retry)


class SweeperThread(threading.Thread):
    """``sweep_forever`` on a thread, until stopped; ``wakeup`` wakes it."""

    def __init__(
        self,
        store: JobStore,
        scheduler: Scheduler,
        settings: Settings,
        wakeup: Wakeup,
        *,
        poll: float | None = None,
        watch: Watcher | None = None,
    ) -> None:
        super().__init__(name="provisioner-sweeper", daemon=True)
        self.store = store
        self.scheduler = scheduler
        self.settings = settings
        self.wakeup = wakeup
        self.poll = poll
        self.watch = watch
        self._stopped = threading.Event()

    def run(self) -> None:
        sweep_forever(
            self.store,
            self.scheduler,
            self.settings,
            self.wakeup,
            self._stopped.is_set,
            poll=self.poll,
            watch=self.watch,
        )

    def stop(self) -> None:
        self._stopped.set()
        self.wakeup.set()

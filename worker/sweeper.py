"""The sweeper: re-drives jobs the broker alone would lose or forget.

It publishes a message for
- queued jobs never published (their producer died between commit and publish: the outbox),
- queued jobs published long ago that never started (the broker lost the message),
- waiting jobs whose time has come, and running jobs whose lease expired (their worker died).

Every worker runs one. That is safe: each job is taken for dispatch by one sweeper at a time
(conditional UPDATE), and a duplicate message is harmless because only one claim can win.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from worker.settings import Settings
from worker.store import JobStore

log = logging.getLogger(__name__)


class Dispatcher(Protocol):
    """Hands job ids to workers: Celery in production, an in-process queue in embedded mode."""

    def publish(self, job_ids: Sequence[str]) -> None: ...


@dataclass(frozen=True)
class SweepResult:
    requeued: int
    dispatched: int


def sweep_once(store: JobStore, dispatcher: Dispatcher, settings: Settings) -> SweepResult:
    requeued = store.requeue_due()
    pending = store.take_for_dispatch(
        undispatched_grace=settings.undispatched_grace_seconds,
        redispatch_after=settings.redispatch_after_seconds,
    )
    ids = requeued + pending
    if ids:
        try:
            dispatcher.publish(ids)
        except Exception:
            store.release_dispatch(ids)
            raise
        log.info("sweeper: requeued %d, dispatched %d", len(requeued), len(ids))
    return SweepResult(requeued=len(requeued), dispatched=len(ids))


def sweep_forever(
    store: JobStore, dispatcher: Dispatcher, settings: Settings, wait: Callable[[float], bool]
) -> None:
    """Sweep every ``sweep_interval_seconds`` until ``wait(interval)`` returns True."""
    while not wait(settings.sweep_interval_seconds):
        try:
            sweep_once(store, dispatcher, settings)
        except Exception:
            # A database or broker outage must not end the sweeper; it tries again next tick.
            log.exception("sweep failed; retrying in %.1fs", settings.sweep_interval_seconds)


class SweeperThread(threading.Thread):
    """``sweep_forever`` on a thread, until stopped."""

    def __init__(self, store: JobStore, dispatcher: Dispatcher, settings: Settings) -> None:
        super().__init__(name="provisioner-sweeper", daemon=True)
        self.store = store
        self.dispatcher = dispatcher
        self.settings = settings
        self._stop_event = threading.Event()

    def run(self) -> None:
        sweep_forever(self.store, self.dispatcher, self.settings, self._stop_event.wait)

    def stop(self) -> None:
        self._stop_event.set()

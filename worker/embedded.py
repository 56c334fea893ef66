"""Embedded mode: the same pipeline with no broker, run by worker threads in this process.

Used when ``PROVISIONER_BROKER_URL`` is unset, so ``provision`` can onboard a file with nothing
else installed. The in-memory queue is only a fast path: the status table stays the source of
truth, and the sweeper re-drives anything the queue never delivered.

One process, so metrics live in the default registry; with ``PROVISIONER_METRICS_PORT`` set,
they are served on that port while the workers run, as a Celery worker serves its own.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections import Counter
from collections.abc import Sequence

from worker import metrics
from worker.dispatch import PRIORITIES, Lane
from worker.jobs.store import JobStore
from worker.logs import job_context
from worker.registry import Heartbeat, Watcher
from worker.runtime import (
    check_worker_settings,
    make_keeper,
    make_pipeline,
    make_reporter,
    make_scheduler,
)
from worker.settings import Settings
from worker.sweeper import SweeperThread
from worker.wakeups import Wakeup

log = logging.getLogger(__name__)


class EmbeddedWorkers:
    """In-process worker threads fed by an in-memory queue, and the scheduler that fills it."""

    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.settings = settings
        self.store = store
        #: (priority, arrival, job id), in the broker's order (``PRIORITIES``); None stops.
        self._queue: queue.PriorityQueue[tuple[int, int, str | None]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._threads = [
            threading.Thread(target=self._work, name=f"provisioner-worker-{n}", daemon=True)
            for n in range(settings.embedded_workers)
        ]
        self._wakeup = Wakeup()
        # Producers of this process wake the scheduler directly (worker.wakeups).
        store.announce = self._wakeup.set
        self._sweeper = SweeperThread(
            store,
            make_scheduler(settings, store, self),
            settings,
            self._wakeup,
            watch=Watcher(store, store, settings),
        )
        self._metrics: metrics.MetricsServer | None = None
        self._keeper = make_keeper(settings, store)  # one for all the threads
        self._heartbeat = Heartbeat(store, settings, self._keeper)

    def publish(self, job_ids: Sequence[str], *, first: bool = False, bulk: bool = False) -> None:
        for job_id in job_ids:
            self._queue.put((PRIORITIES[bulk, first], next(self._order), job_id))

    def queued_messages(self) -> dict[Lane, int]:
        """By priority: each is a FIFO lane of its own (the arrival count orders it)."""
        with self._queue.mutex:
            waiting = Counter(priority for priority, _, job_id in self._queue.queue if job_id)
        return {priority: waiting[priority] for priority in PRIORITIES.values()}

    def start(self) -> EmbeddedWorkers:
        check_worker_settings(self.settings)  # a bad configuration fails here, not per thread
        self._heartbeat.start()
        for thread in self._threads:
            thread.start()
        self._sweeper.start()
        if self.settings.metrics_port:
            metrics.register_quota_collector(make_reporter(self.settings, self.store))
            self._metrics = metrics.serve(self.settings.metrics_port)
        return self

    def stop(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        self._sweeper.stop()
        for _ in self._threads:
            self._queue.put((2, next(self._order), None))
        for thread in self._threads:
            thread.join(timeout=self.settings.task_time_limit)
        self._heartbeat.stop()

    def __enter__(self) -> EmbeddedWorkers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _work(self) -> None:
        # One client per thread: a shared httpx pool degrades under contention.
        pipeline = make_pipeline(self.settings, self.store, keeper=self._keeper)
        try:
            while (job_id := self._queue.get()[2]) is not None:
                try:
                    pipeline.run(job_id)
                except Exception:
                    # The job keeps its lease; the sweeper re-drives it when the lease ends.
                    with job_context(job_id=job_id):
                        log.exception("job %s crashed", job_id)
                finally:
                    self._wakeup.set()  # room for another
        finally:
            for client in pipeline.clients.values():
                client.close()

"""The Celery application: crash-safe settings and the thin task layer over the pipeline.

Messages carry a job id and nothing else: no request data, no API key. Everything a task needs
is read from the status table or from this process's settings.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.process
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from celery import Celery, signals

from worker.runtime import make_pipeline, make_scheduler, make_store
from worker.service import Pipeline
from worker.settings import Settings
from worker.store import JobStore
from worker.sweeper import sweep_forever

log = logging.getLogger(__name__)

TASK_NAME = "provisioner.run_job"
QUEUE = "provisioner"


def create_app(settings: Settings) -> Celery:
    app = Celery("provisioner", broker=settings.broker_url or "memory://", set_as_current=False)
    transport_options = {"visibility_timeout": settings.visibility_timeout}
    app.conf.update(
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # status lives in the status table, never in a result backend
        # A message is acknowledged only when its task returns, and requeued when the worker
        # process running it dies; the status table's claim makes the re-run harmless.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=settings.worker_concurrency,
        # Far below the visibility timeout, so a running task is never redelivered while alive.
        task_soft_time_limit=settings.task_soft_time_limit,
        task_time_limit=settings.task_time_limit,
        broker_transport_options=transport_options,
        # On a cold shutdown, first hand unacknowledged messages back to the broker; otherwise
        # Redis keeps them invisible for the whole visibility timeout.
        worker_soft_shutdown_timeout=10.0,
        worker_enable_soft_shutdown_on_idle=True,
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_hijack_root_logger=False,
    )
    state = _ProcessState(settings)

    @app.task(name=TASK_NAME, ignore_result=True)
    def run_job(job_id: str) -> str | None:
        status = state.pipeline().run(job_id)
        return status.value if status is not None else None

    def start_sweeper(**_: Any) -> None:
        state.start_sweeper()

    def stop_sweeper(**_: Any) -> None:
        state.stop_sweeper()

    # weak=False: the handlers are closures that would otherwise be garbage-collected.
    signals.worker_ready.connect(start_sweeper, weak=False)
    signals.worker_shutdown.connect(stop_sweeper, weak=False)
    return app


class CeleryDispatcher:
    def __init__(self, app: Celery) -> None:
        self.app = app

    def publish(self, job_ids: Sequence[str]) -> None:
        with self.app.producer_or_acquire() as producer:
            for job_id in job_ids:
                self.app.send_task(TASK_NAME, args=[job_id], queue=QUEUE, producer=producer)


class _ProcessState:
    """Per-process resources. Built lazily, so each prefork child opens its own connections
    after the fork rather than inheriting the parent's sockets."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pid: int | None = None
        self._store: JobStore | None = None
        self._pipeline: Pipeline | None = None
        self._sweeper: multiprocessing.process.BaseProcess | None = None
        self._sweeping = False

    def store(self) -> JobStore:
        if self._store is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._store = make_store(self.settings)
            self._pipeline = None
        return self._store

    def pipeline(self) -> Pipeline:
        store = self.store()
        if self._pipeline is None:
            self._pipeline = make_pipeline(self.settings, store)
        return self._pipeline

    def start_sweeper(self) -> None:
        self._sweeping = True
        threading.Thread(
            target=self._keep_sweeper_alive, name="sweeper-monitor", daemon=True
        ).start()

    def _keep_sweeper_alive(self) -> None:
        # A spawned process, not a thread: the worker's main process forks pool children, and a
        # child that inherits open SQLite state from its parent corrupts its own connections.
        # This thread only watches the process and starts a new one if it dies.
        context = multiprocessing.get_context("spawn")
        while self._sweeping:
            if self._sweeper is None or not self._sweeper.is_alive():
                self._sweeper = context.Process(
                    target=run_sweeper,
                    args=(self.settings, os.getpid()),
                    name="provisioner-sweeper",
                    daemon=True,
                )
                self._sweeper.start()
                log.info(
                    "sweeper started (pid %s, every %.1fs)",
                    self._sweeper.pid,
                    self.settings.sweep_interval_seconds,
                )
            time.sleep(1.0)

    def stop_sweeper(self) -> None:
        self._sweeping = False
        if self._sweeper is not None and self._sweeper.is_alive():
            self._sweeper.terminate()
            self._sweeper.join(timeout=5)


def run_sweeper(settings: Settings, parent_pid: int) -> None:
    """The sweeper process of one worker; it exits when its worker is gone, even if killed."""
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s: %(levelname)s/sweeper] %(message)s"
    )

    def orphaned_after(seconds: float) -> bool:
        time.sleep(seconds)
        return os.getppid() != parent_pid

    dispatcher = CeleryDispatcher(create_app(settings))
    sweep_forever(
        make_scheduler(settings, make_store(settings), dispatcher), settings, orphaned_after
    )

"""The Celery application: crash-safe settings and the thin task layer over the pipeline.

Messages carry a job id and nothing else: no request data, no API key. Everything a task needs
is read from the status table or from this process's settings.

A worker also logs through ``worker.logs`` (JSON or text), sends task events (Flower, ``celery
events``), and, with ``PROVISIONER_METRICS_PORT`` set, serves Prometheus metrics aggregated over
its pool children and its sweeper (``worker.metrics``, multiprocess mode). A job that ends
``failed`` is a failed Celery task (``JobFailedError``). ``worker.celery_app`` is the ``celery
-A`` target for Celery's own tools.
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
from celery.exceptions import Reject
from celery.worker.request import Request
from sqlalchemy.exc import SQLAlchemyError

from worker import logs, metrics
from worker.dispatch import PRIORITIES, Lane
from worker.errors import ConfigurationError
from worker.jobs.states import JobStatus
from worker.jobs.store import JobStore
from worker.leases import LeaseKeeper
from worker.quota.report import Reporter
from worker.registry import Heartbeat, Watcher
from worker.runtime import (
    make_keeper,
    make_pipeline,
    make_reporter,
    make_scheduler,
    make_store,
)
from worker.service import Pipeline
from worker.settings import Settings
from worker.sweeper import SweeperThread, sweep_forever
from worker.wakeups import Wakeup, announcer, listening, redis_url_of, transport_of

log = logging.getLogger(__name__)

TASK_NAME = "provisioner.run_job"
#: How long a worker waits before handing a message back while the status table is down.
DATABASE_RETRY_SECONDS = 1.0
QUEUE = "provisioner"
IDLE_BRPOP_SECONDS = 5.0


class JobFailedError(Exception):
    """Raised by the task once its job's ``failed`` row is written, so Celery (and Flower)
    count a failed task. It names the job and its error code, nothing the API said."""

    def __init__(self, job_id: str, code: str) -> None:
        super().__init__(f"job {job_id} failed: {code}")
        self.job_id = job_id
        self.code = code

    def __reduce__(self) -> tuple[type[JobFailedError], tuple[str, str]]:
        # Pickled from the pool child to the main process, which sends the task-failed event.
        return type(self), (self.job_id, self.code)


def create_app(settings: Settings) -> Celery:
    app = Celery("provisioner", broker=settings.broker_url or "memory://", set_as_current=False)
    transport_options: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout}
    if redis_url_of(settings.broker_url):
        # An idle worker's BRPOP returns every this many seconds (kombu's default: 1); a message
        # still wakes it at once.
        transport_options["polling_interval"] = IDLE_BRPOP_SECONDS
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
        # Threads by default: the work waits on the network. Celery's time limits apply only
        # to prefork; under threads a run is bounded by its time budget and HTTP timeouts.
        worker_pool=settings.worker_pool,
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
        # Task events, so Flower and `celery events` see every task, including when it was sent.
        worker_send_task_events=True,
        task_send_sent_event=True,
        # A task that raised JobFailedError is acknowledged all the same: the job is done.
        task_acks_on_failure_or_timeout=True,
    )
    state = _ProcessState(settings)

    class WakingRequest(Request):
        """Under the threads pool a message is acknowledged in the pool's thread, and nothing
        wakes the worker's event loop to take the next one: the freed slot would wait for the
        loop's next timer (up to seconds). So each acknowledgement wakes it."""

        def acknowledge(self) -> None:
            super().acknowledge()
            state.wake_loop()

        def reject(self, requeue: bool = False) -> None:
            super().reject(requeue=requeue)
            state.wake_loop()

    # throws: an expected failure, logged by Celery in one line without a traceback.
    # shared=False: every app built in one process (tests, the sweeper) keeps its own task;
    # a shared one would run the first app's pipeline for all of them.
    @app.task(
        name=TASK_NAME,
        ignore_result=True,
        throws=(JobFailedError,),
        shared=False,
        Request=WakingRequest,
    )
    def run_job(job_id: str) -> str | None:
        try:
            outcome = state.pipeline().execute(job_id)
        except (SQLAlchemyError, ConfigurationError) as exc:
            # The status table is out of reach: the message goes back to the broker rather than
            # being spent on a job nobody can claim, after a pause so an outage is not a spin.
            log.warning("status database unavailable (%s); job %s back to the broker", exc, job_id)
            time.sleep(DATABASE_RETRY_SECONDS)
            raise Reject(requeue=True) from None
        finally:
            state.job_ended()
        if outcome is None:
            return None
        if outcome.status is JobStatus.failed:
            raise JobFailedError(job_id, outcome.code or "unknown")
        return outcome.status.value

    # Worker signals are global: act only for a worker of this app (a process may build others).
    def ours(sender: Any) -> bool:
        return getattr(sender, "app", None) is app

    def early_logging(instance: Any = None, **_: Any) -> None:
        # Before Celery's start-up checks warn (running as root...); setup_logging sets the level.
        if ours(instance):
            logs.configure(settings)

    def setup_logging(loglevel: int | None = None, **_: Any) -> None:
        # Connected at all, this replaces Celery's own logging set-up (main process; the pool
        # children inherit it when they fork).
        logs.configure(settings, level=loglevel or logging.INFO)

    def worker_init(sender: Any = None, **_: Any) -> None:
        if ours(sender):
            state.enable_metrics()

    def after_setup(instance: Any = None, **_: Any) -> None:
        if ours(instance):
            state.serve_metrics()

    def start_sweeper(sender: Any = None, **_: Any) -> None:
        if ours(sender):
            state.start_sweeper(sender)

    def child_started(**_: Any) -> None:
        state.after_fork()
        state.start_heartbeat()  # a prefork child runs jobs: it registers and beats

    def child_exiting(pid: int | None = None, **_: Any) -> None:
        state.stop_heartbeat()
        metrics.mark_process_dead(pid if pid is not None else os.getpid())

    def stop(sender: Any = None, **_: Any) -> None:
        if ours(sender):
            state.stop_sweeper()
            state.stop_heartbeat()
            state.stop_metrics()

    # weak=False: the handlers are closures that would otherwise be garbage-collected.
    signals.celeryd_init.connect(early_logging, weak=False)
    signals.setup_logging.connect(setup_logging, weak=False)
    signals.worker_init.connect(worker_init, weak=False)
    signals.celeryd_after_setup.connect(after_setup, weak=False)
    signals.worker_ready.connect(start_sweeper, weak=False)
    signals.worker_process_init.connect(child_started, weak=False)
    signals.worker_process_shutdown.connect(child_exiting, weak=False)
    signals.worker_shutdown.connect(stop, weak=False)
    return app


class CeleryDispatcher:
    def __init__(self, app: Celery) -> None:
        self.app = app

    def publish(self, job_ids: Sequence[str], *, first: bool = False, bulk: bool = False) -> None:
        priority = PRIORITIES[bulk, first]
        with self.app.producer_or_acquire() as producer:
            for job_id in job_ids:
                self.app.send_task(
                    TASK_NAME, args=[job_id], queue=QUEUE, producer=producer, priority=priority
                )

    def queued_messages(self) -> dict[Lane, int]:
        """Messages waiting in the broker's queue (not those a worker has taken), by lane: on
        Redis, the length of each priority's list (kombu's ``_q_for_pri`` names them, and with
        its default priority steps each of ``PRIORITIES`` has a list of its own), read in one
        transaction (were kombu's steps coarser, so that priorities shared a list, their sum as
        one lane); elsewhere (RabbitMQ) the queue's one count, or none when the queue itself is
        gone."""
        from kombu.exceptions import ChannelError

        with self.app.connection_for_read() as connection:
            channel: Any = connection.default_channel
            if connection.transport.driver_type == "redis":
                lists = {lane: channel._q_for_pri(QUEUE, lane) for lane in set(PRIORITIES.values())}
                names = sorted(set(lists.values()))
                with channel.conn_or_acquire() as client, client.pipeline() as pipe:
                    for name in names:
                        pipe.llen(name)
                    lengths = dict(zip(names, map(int, pipe.execute()), strict=True))
                if len(names) < len(lists):  # priority steps coarser than ours share lists
                    return {None: sum(lengths.values())}
                return {lane: lengths[name] for lane, name in lists.items()}
            try:
                declared = channel.queue_declare(queue=QUEUE, passive=True)
            except ChannelError:
                return {}
            return {None: int(declared.message_count)}


class _ProcessState:
    """Per-process resources. Built lazily, so each prefork child opens its own connections
    after the fork rather than inheriting the parent's sockets; one pipeline per thread of the
    threads pool (a shared HTTP client pool degrades under contention), one lease keeper and
    one heartbeat per process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pid: int | None = None
        self._store: JobStore | None = None
        self._keeper: LeaseKeeper | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._heartbeat: Heartbeat | None = None
        self._sweeper: multiprocessing.process.BaseProcess | None = None
        self._sweeper_thread: SweeperThread | None = None
        self._sweeping = False
        self._wakeup = Wakeup()
        self._announce = announcer(transport_of(settings))
        #: The worker's event loop (threads pool), woken after each acknowledgement.
        self._hub: Any = None
        self._metrics_dir: str | None = None
        self._metrics_server: metrics.MetricsServer | None = None
        self._reporter: Reporter | None = None

    def store(self) -> JobStore:
        with self._lock:
            if self._store is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._store = make_store(self.settings)
                self._keeper = make_keeper(self.settings, self._store)
            return self._store

    def keeper(self) -> LeaseKeeper:
        self.store()  # built with it
        assert self._keeper is not None
        return self._keeper

    def pipeline(self) -> Pipeline:
        keeper = self.keeper()
        pipeline: Pipeline | None = getattr(self._local, "pipeline", None)
        if pipeline is None or pipeline.keeper is not keeper:
            from celery.exceptions import SoftTimeLimitExceeded

            pipeline = make_pipeline(
                self.settings,
                self.store(),
                interruptions=(SoftTimeLimitExceeded,),
                keeper=keeper,
            )
            self._local.pipeline = pipeline
        return pipeline

    def wake_loop(self) -> None:
        if self._hub is not None:
            # Thread-safe: kombu's hub wakes its loop (its own self-pipe) for a callback.
            self._hub.call_soon(_nothing)

    def job_ended(self) -> None:
        """A job ended or was handed back: the scheduler may admit another (worker.wakeups)."""
        if self._sweeper_thread is not None:
            self._wakeup.set()
        elif self._announce is not None:
            self._announce()

    def start_heartbeat(self) -> None:
        """Register this process (which runs jobs) and beat until it stops."""
        try:
            self._heartbeat = Heartbeat(self.store(), self.settings, self.keeper()).start()
        except (SQLAlchemyError, ConfigurationError) as exc:
            log.warning("could not start the heartbeat: %s", exc)

    def stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None

    def enable_metrics(self) -> None:
        """Main process, first thing: multiprocess mode, so the pool children and the sweeper
        write their samples where this process can sum them. Off (in-process metrics nobody
        reads) when no port is configured."""
        if self.settings.metrics_port:
            self._metrics_dir = metrics.enable_multiprocess()

    def serve_metrics(self) -> None:
        """Main process, logging set up, before the pool forks: the quota gauges and the port."""
        if self._metrics_dir is None:
            return
        # Read at scrape time; its connections are closed before the pool forks and dropped
        # unclosed in every child forked later (after_fork).
        self._reporter = make_reporter(self.settings, make_store(self.settings))
        self._reporter.store.engine.dispose()
        metrics.register_quota_collector(self._reporter)
        self._metrics_server = metrics.serve(self.settings.metrics_port)

    def after_fork(self) -> None:
        """A pool child: the main process's pooled connections must not be used, nor closed
        (closing would end them for the main process too)."""
        if self._reporter is not None:
            self._reporter.store.engine.dispose(close=False)

    def stop_metrics(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.close()
            self._metrics_server = None
        if self._metrics_dir is not None:
            metrics.disable_multiprocess(self._metrics_dir)
            self._metrics_dir = None

    def start_sweeper(self, worker: Any) -> None:
        """The threads pool: this process runs the jobs, so it beats, and its scheduler and
        sweeper are a thread of it. Prefork: a spawned process (below)."""
        if is_prefork(worker):
            self._sweeping = True
            threading.Thread(
                target=self._keep_sweeper_alive, name="sweeper-monitor", daemon=True
            ).start()
            return
        self._hub = getattr(worker, "hub", None)
        self.start_heartbeat()
        store = self.store()
        dispatcher = CeleryDispatcher(worker.app)
        self._sweeper_thread = SweeperThread(
            store,
            make_scheduler(self.settings, store, dispatcher),
            self.settings,
            listening(self.settings, self._wakeup),
            poll=idle_poll(self.settings),
            watch=Watcher(store, store, self.settings),
        )
        self._sweeper_thread.start()
        log.info("sweeper started (a thread; idle poll every %.1fs)", idle_poll(self.settings))

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
                    "sweeper started (pid %s, idle poll every %.1fs)",
                    self._sweeper.pid,
                    idle_poll(self.settings),
                )
            time.sleep(1.0)

    def stop_sweeper(self) -> None:
        self._sweeping = False
        if self._sweeper_thread is not None:
            self._sweeper_thread.stop()
            self._sweeper_thread.join(timeout=5)
            self._sweeper_thread = None
        self._wakeup.stop()
        if self._sweeper is not None and self._sweeper.is_alive():
            self._sweeper.terminate()
            self._sweeper.join(timeout=5)


def _nothing() -> None:
    return None


def is_prefork(worker: Any) -> bool:
    """Whether a Celery worker (its WorkController) runs the prefork pool."""
    pool_cls = getattr(worker, "pool_cls", None)
    return getattr(pool_cls, "__module__", "").endswith(".prefork")


def idle_poll(settings: Settings) -> float:
    """How often the scheduler looks with nothing to wake it: the idle poll where wake-ups cross
    processes (Redis pub/sub, PostgreSQL LISTEN/NOTIFY) or need not (embedded mode), else the
    busy rate (producers cannot wake it)."""
    if transport_of(settings) is not None or not settings.broker_url:
        return settings.idle_poll_seconds
    return settings.schedule_interval_seconds


def run_sweeper(settings: Settings, parent_pid: int) -> None:
    """The sweeper process of one worker; it exits when its worker is gone, even if killed.
    Spawned with the worker's environment, so its metrics join the worker's (multiprocess)."""
    logs.configure(settings)

    dispatcher = CeleryDispatcher(create_app(settings))
    store = make_store(settings)
    sweep_forever(
        store,
        make_scheduler(settings, store, dispatcher),
        settings,
        listening(settings),
        lambda: os.getppid() != parent_pid,
        poll=idle_poll(settings),
        watch=Watcher(store, store, settings),
    )

"""Heartbeats and the handback of dead processes' jobs, on any host.

Every process that runs jobs registers (``worker_processes``) under the id its claims record as
their ``lease_owner`` (``worker.leases.process_id``), and a thread of it beats every
``PROVISIONER_HEARTBEAT_SECONDS``. Every worker's sweeper watches the beats: a process whose beat
count has not changed for ``PROVISIONER_HEARTBEAT_TIMEOUT_SECONDS`` by the watcher's own clock (so
clocks that differ between hosts do not matter) is removed from the registry, and its running jobs
are handed back to the scheduler, each only while the dead process's claim still holds it. The
removal comes first and only if the count is still the one seen: of several watchers one wins,
and a process that beat meanwhile keeps its jobs.

A process that was only stopped (SIGSTOP, a frozen VM) and wakes after its jobs were taken keeps
nothing: fencing refuses every write of its old claims, and before each API call a run whose
process has not confirmed its liveness lately renews its lease first, which fails once the job
was taken (``LeaseKeeper.confirm``). Its heartbeat finds its row gone, drops its claims and
registers again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from worker import leases
from worker.jobs.recovery import Recovery
from worker.jobs.registry import Registry
from worker.leases import LeaseKeeper
from worker.settings import Settings

log = logging.getLogger(__name__)


class Heartbeat:
    """Registers this process and beats from a daemon thread until ``stop``."""

    def __init__(self, store: Registry, settings: Settings, keeper: LeaseKeeper) -> None:
        self.store = store
        self.settings = settings
        self.keeper = keeper
        self.process_id = leases.process_id()
        self._stopped = threading.Event()

    def start(self) -> Heartbeat:
        self._register()
        threading.Thread(target=self._run, name="heartbeat", daemon=True).start()
        return self

    def stop(self) -> None:
        """Leave the registry (a clean exit: no watcher needs to wait for the timeout)."""
        self._stopped.set()
        try:
            self.store.unregister(self.process_id)
        except SQLAlchemyError as exc:
            log.warning("could not leave the worker registry: %s", exc)

    def _register(self) -> None:
        try:
            self.store.register(self.process_id, host=socket.gethostname(), pid=os.getpid())
            self.keeper.confirmed()
        except SQLAlchemyError as exc:  # the next beat registers it
            log.warning("could not register this worker process: %s", exc)

    def _run(self) -> None:
        while not self._stopped.wait(self.settings.heartbeat_seconds):
            try:
                if self.store.beat(self.process_id):
                    self.keeper.confirmed()
                    continue
                # Taken for dead (stopped or cut off too long): its jobs were handed back.
                lost = self.keeper.lose_all()
                log.warning(
                    "this process was taken for dead and its %d running job(s) handed back; "
                    "registering again",
                    lost,
                )
                self._register()
            except SQLAlchemyError as exc:
                log.warning("heartbeat failed: %s", exc)


class Watcher:
    """A sweeper's view of the other processes' beats; ``__call__`` hands back the jobs of the
    silent ones, and of this host's processes that are gone, and returns how many."""

    def __init__(
        self,
        store: Recovery,
        registry: Registry,
        settings: Settings,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.registry = registry
        self.timeout = settings.heartbeat_timeout_seconds
        self.monotonic = monotonic
        #: Process id -> (beat count last seen, when it was first seen at that count).
        self._seen: dict[str, tuple[int, float]] = {}

    def due(self) -> float | None:
        """When (``monotonic``) a process seen is silent long enough to be taken for dead, if
        it does not beat before: the next look should come then, not a whole period later."""
        return min((since + self.timeout for _, since in self._seen.values()), default=None)

    def __call__(self) -> int:
        now = self.monotonic()
        beats = self.registry.beats()
        self._seen = {
            pid: seen if (seen := self._seen.get(pid)) is not None and seen[0] == n else (n, now)
            for pid, n in beats.items()
        }
        handed = leases.release_gone(self.store)
        for process_id, (count, since) in list(self._seen.items()):
            if now - since < self.timeout:
                continue
            if not self.registry.remove_if_silent(process_id, count):
                continue  # it beat meanwhile, or another watcher removed it
            del self._seen[process_id]
            jobs = self.registry.running_of(process_id)
            taken = self.store.take_back(jobs)
            handed += taken
            log.warning(
                "worker process %s silent for %.1fs: %d running job(s) handed back",
                process_id,
                now - since,
                taken,
            )
        return handed

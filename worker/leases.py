"""Leases kept alive by a heartbeat, so they can be short.

A running job holds a lease in the status table. While its process lives, a thread of that
process renews the leases of every job it runs, every third of the lease; when the process dies
(a SIGKILL, a host gone), the renewals stop and the sweeper of any worker hands the job back to
the scheduler once the lease runs out. A short lease (``PROVISIONER_LEASE_SECONDS``, 10 s) so
means a dead worker's jobs run again within seconds, however long the jobs themselves take.

Sooner still on the same host: a claim records the process that took it (``this_process``), and
every sweeper hands back at once the jobs of a process of its own host that no longer exists (a
SIGKILLed or OOM-killed pool child, a worker killed whole). A process id means the same process
only within one boot and one PID namespace, and only with the same start time (ids are reused),
so all three are part of the record; a process elsewhere is left to its lease.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from worker.jobs.claims import Claim, Claims
from worker.jobs.recovery import Recovery
from worker.jobs.table import LeaseLostError

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews the leases of the claims ``hold`` is given, from one thread per process."""

    def __init__(self, store: Claims, lease_seconds: float, *, confirm_after: float = 1.5) -> None:
        self.store = store
        self.lease_seconds = lease_seconds
        #: A run renews its lease before an API call when this process has not confirmed it is
        #: alive (a heartbeat, a renewal) for this long: it may have been taken for dead.
        self.confirm_after = confirm_after
        self._claims: dict[str, Claim] = {}
        self._lost: set[str] = set()
        self._confirmed_at = time.monotonic()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pid: int | None = None

    @contextlib.contextmanager
    def hold(self, claim: Claim) -> Iterator[None]:
        self._start()
        with self._lock:
            self._claims[claim.job_id] = claim
        try:
            yield
        finally:
            with self._lock:
                self._claims.pop(claim.job_id, None)
                self._lost.discard(claim.token)

    def confirmed(self) -> None:
        """This process just proved it is alive (its heartbeat was written)."""
        self._confirmed_at = time.monotonic()

    def lose_all(self) -> int:
        """This process was taken for dead: every claim it holds was handed back. Each run stops
        before its next call; returns how many."""
        with self._lock:
            self._lost.update(claim.token for claim in self._claims.values())
            lost = len(self._claims)
            self._claims.clear()
        return lost

    def confirm(self, claim: Claim) -> None:
        """Before an API call: raise LeaseLostError if the claim is known to be lost, and renew
        it first if this process has not confirmed it is alive lately (it may have been stopped
        past its heartbeat timeout, and the job taken)."""
        if claim.token in self._lost:
            raise LeaseLostError(claim.job_id)
        if time.monotonic() - self._confirmed_at > self.confirm_after:
            self.store.renew(claim, lease_seconds=self.lease_seconds)

    def _start(self) -> None:
        # One thread per process: a fork (a Celery pool child) starts its own.
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._claims.clear()
        threading.Thread(target=self._run, name="lease-keeper", daemon=True).start()

    def _run(self) -> None:
        pid = os.getpid()
        while not self._wake.wait(self.lease_seconds / 3) and self._pid == pid:
            self.renew_all()

    def renew_all(self) -> None:
        with self._lock:
            claims = list(self._claims.values())
        for claim in claims:
            try:
                self.store.renew(claim, lease_seconds=self.lease_seconds)
            except LeaseLostError:
                # Taken over: the run stops before its next call or write.
                with self._lock:
                    self._claims.pop(claim.job_id, None)
                    self._lost.add(claim.token)
            except SQLAlchemyError as exc:
                log.warning("could not renew the lease of job %s: %s", claim.job_id, exc)


@cache
def _host() -> str | None:
    """This boot and PID namespace, or None where /proc does not tell (not Linux)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return f"{boot}:{namespace}"


def _started(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), or None if it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        # The command name (field 2) may hold spaces and parentheses: count from the last ")".
        return stat.rpartition(b")")[2].split()[19].decode()
    except (OSError, IndexError, UnicodeDecodeError):
        return None


def this_process() -> str | None:
    """``host:pid:start`` of the calling process, for a claim's ``lease_owner``; None when this
    process cannot be told apart reliably (no /proc, or a /proc of another PID namespace)."""
    host, pid = _host(), os.getpid()
    try:
        if os.readlink("/proc/self") != str(pid):
            return None
    except OSError:
        return None
    started = _started(pid)
    return None if host is None or started is None else f"{host}:{pid}:{started}"


@cache
def _fallback_id(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:12]}"


def process_id() -> str:
    """This process's id in the worker registry and in its claims' ``lease_owner``:
    ``this_process`` where /proc tells, else one made unique with a random part."""
    return this_process() or _fallback_id(os.getpid())


def host_prefix() -> str | None:
    """What every ``this_process`` of this host starts with."""
    host = _host()
    return None if host is None else f"{host}:"


def gone(owner: str) -> bool:
    """Whether ``owner``, a ``this_process`` of this host, no longer runs (False for one of
    another host: only its lease can tell)."""
    prefix = host_prefix()
    if prefix is None or not owner.startswith(prefix):
        return False
    pid_text, _, started = owner[len(prefix) :].partition(":")
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True  # no such process
    except PermissionError:
        pass  # it exists, as another user: its start time tells whether it is the same one
    now = _started(pid)
    # Unreadable (another user's, a hidden /proc): not known to be gone, so left to its lease.
    return now is not None and now != started


def release_gone(store: Recovery) -> int:
    """Hand back to the scheduler the running jobs of this host's processes that are gone."""
    prefix = host_prefix()
    if prefix is None:
        return 0
    dead = [(job_id, token) for job_id, token, owner in store.running_owned(prefix) if gone(owner)]
    return store.take_back(dead)

"""Account pauses: errors that are the account's, not the job's, stop the account's jobs at once.

A key Plausible refuses (401 ``invalid_api_key``), a plan without the Sites API (402
``sites_api_unavailable``), the site limit (402 ``site_limit_reached``) or a base URL where no
Sites API answers (a 404 not in the API's shape, ``wrong_base_url``) would fail every job of the
account the same way, each spending quota on a call certain to fail. The first job that
meets one pauses the account instead and goes back to the queue; the scheduler admits none of
the account's jobs (for the site limit: none of its new sites) until the pause ends:

- when the account's key changes (a different key than the one refused; for refused keys only),
- or when an operator resumes it (``provision retry --account A``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from worker.jobs import audit
from worker.jobs.db import insert_ignoring
from worker.jobs.filters import JobFilter
from worker.jobs.models import AccountPauseRow
from worker.jobs.states import JobStatus, Operation
from worker.jobs.store import JobStore
from worker.times import utcnow

#: Error codes that pause an account, and which of its jobs they pause.
PAUSING = {
    "invalid_api_key": "all",
    "sites_api_unavailable": "all",
    "site_limit_reached": "provision",
    "wrong_base_url": "all",
}
#: A job's run re-reads the pauses at most this often per process (the scheduler, at every tick).
CACHE_SECONDS = 1.0
#: A domain that cannot be a site (``.invalid`` is reserved): a goal lookup on it answers 404
#: with a key that has the Sites API scope, and touches nothing.
PROBE_SITE = "provisioner-doctor.invalid"


def fingerprint(key: str) -> str:
    """A hash that tells two keys apart without revealing either."""
    return hashlib.sha256(b"plausible-provisioner:account-key:" + key.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Pause:
    account: str
    code: str
    message: str
    scope: str
    key_fingerprint: str | None

    def stops(self, operation: Operation) -> bool:
        return self.scope == "all" or operation is Operation.provision_site

    @property
    def how_to_resume(self) -> str:
        """What ends this pause, in the words every door uses."""
        retry = f"`provision retry --account {self.account}`"
        if self.code == "invalid_api_key":
            return f"set a different key (the account resumes by itself), or run {retry}"
        return f"once it is fixed, run {retry}"


class Pauses:
    def __init__(
        self,
        engine: Engine,
        *,
        cache_seconds: float = CACHE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.cache_seconds = cache_seconds
        self.monotonic = monotonic
        self._cache: dict[str, Pause] = {}
        self._read_at = float("-inf")

    def active(self) -> dict[str, Pause]:
        """The paused accounts, re-read from the status table every ``cache_seconds``."""
        if self.monotonic() - self._read_at >= self.cache_seconds:
            t = AccountPauseRow
            with Session(self.engine) as session:
                rows = session.execute(
                    select(
                        col(t.account),
                        col(t.code),
                        col(t.message),
                        col(t.scope),
                        col(t.key_fingerprint),
                    )
                ).all()
            self._cache = {row[0]: Pause(*row) for row in rows}
            self._read_at = self.monotonic()
        return self._cache

    def pause(self, account: str, code: str, message: str, key: str | None) -> Pause:
        pause = Pause(account, code, message, PAUSING[code], key and fingerprint(key))
        t = AccountPauseRow.__table__  # type: ignore[attr-defined]
        values = {
            "account": account,
            "code": code,
            "message": message,
            "scope": pause.scope,
            "key_fingerprint": pause.key_fingerprint,
            "paused_at": utcnow(),
        }
        with Session(self.engine) as session:
            inserted = session.execute(
                insert_ignoring(t, self.engine.dialect.name, ["account"]), [values]
            ).rowcount  # type: ignore[attr-defined]
            widened = False
            if not inserted and pause.scope == "all":  # already paused: the wider scope wins
                held = session.execute(select(t.c.scope).where(t.c.account == account))
                widened = held.scalar() != "all"
                session.execute(update(t).where(t.c.account == account).values(**values))
            session.commit()
        self._read_at = float("-inf")
        if inserted or widened:
            audit.record(
                self.engine, audit.process_actor("worker"), "pause", target=account, detail=code
            )
        return pause

    def resume(self, account: str) -> bool:
        """End the account's pause; False if it was not paused."""
        with Session(self.engine) as session:
            removed = session.execute(
                delete(AccountPauseRow).where(col(AccountPauseRow.account) == account)
            ).rowcount  # type: ignore[attr-defined]
            session.commit()
        self._read_at = float("-inf")
        return bool(removed)

    def resume_changed_keys(self, keys: Mapping[str, str]) -> list[str]:
        """Resume the accounts paused for a refused key whose key is now another one."""
        resumed = []
        for account, pause in self.active().items():
            key = keys.get(account)
            refused = pause.code == "invalid_api_key" and pause.key_fingerprint is not None
            changed = key is not None and fingerprint(key) != pause.key_fingerprint
            if refused and changed and self.resume(account):
                resumed.append(account)
                audit.record(
                    self.engine,
                    audit.process_actor("worker"),
                    "resume",
                    target=account,
                    detail="the key changed",
                )
        return resumed


@dataclass(frozen=True)
class Retried:
    #: Failed jobs queued again, and jobs that waited for an account resumed now.
    ids: list[str]
    resumed: list[str]


def retry_matching(store: JobStore, where: JobFilter) -> Retried:
    """Queue again every failed job ``where`` matches. An operator retrying jobs says their
    problem is fixed, so the paused accounts holding any of them resume too (and the jobs they
    held go on)."""
    pauses = Pauses(store.engine)
    active = pauses.active()
    held = {account for account, _, _ in store.unfinished_by_account(where) if account in active}
    if where.account is not None and where.account in active:
        held.add(where.account)
    resumed = [account for account in sorted(held) if pauses.resume(account)]
    ids = store.retry_matching(where)
    for account in resumed:
        waiting = store.list_jobs(
            replace(where, status=JobStatus.queued, account=account), limit=10_000
        )
        ids += [job.id for job in waiting if job.id not in ids]
    return Retried(ids, resumed)


def blocking(store: JobStore, where: JobFilter, ids: Sequence[str] | None = None) -> list[Pause]:
    """The pauses that hold every unfinished job ``where`` matches (among ``ids``, if given);
    empty when any of them can still run, or none is left."""
    active = Pauses(store.engine).active()
    holding: dict[str, Pause] = {}
    for account, operation, _count in store.unfinished_by_account(where, ids):
        pause = active.get(account)
        if pause is None or not pause.stops(operation):
            return []
        holding[account] = pause
    return list(holding.values())

"""What every part of the status table's code shares: the engine, the clock, and the one way to
change rows (a conditional UPDATE in its own transaction; a final status together with its
webhook in the outbox).

Every transition is one conditional UPDATE, so it is atomic on SQLite and PostgreSQL alike and
safe with any number of workers and sweepers on any number of hosts. No transaction reads and
then writes: SQLite cannot upgrade a stale read lock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.sql.expression import Executable
from sqlmodel import Session, col, select

from worker.jobs.models import ProvisioningJob
from worker.times import Clock, utcnow
from worker.webhooks import new_delivery


class Unset:
    """The type of ``UNSET``: an argument not given, where None is a meaningful value."""


UNSET = Unset()


#: A statement and its parameters, to run in the transaction of a job's change.
Change = tuple[Executable, dict[str, Any] | None]


class LeaseLostError(Exception):
    """The job's lease was taken over (it expired); the holder must stop touching the job."""


class Fenced(Protocol):
    """A claim, as far as fencing goes: a write applies only while its token holds the job."""

    @property
    def job_id(self) -> str: ...

    @property
    def token(self) -> str: ...


def _nothing() -> None:
    return None


class Table:
    """The status table on ``engine``; each audience's interface is a subclass."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock = utcnow,
        webhook_urls: Mapping[str, str] | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        #: Account name -> its ``webhook_url``: where a job of the account that names no
        #: ``callback_url`` is POSTed once done (``worker.runtime.make_store`` fills it in).
        self.webhook_urls: Mapping[str, str] = dict(webhook_urls or {})
        #: Called once jobs were made ready for the scheduler (enqueued, retried), so a sleeping
        #: scheduler wakes (``worker.wakeups``); a hint, never needed for correctness.
        self.announce: Callable[[], None] = _nothing

    def get(self, job_id: str) -> ProvisioningJob | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(ProvisioningJob, job_id)

    def webhook_url(self, callback_url: str | None, account: str) -> str | None:
        """Where a job's webhook goes: its own ``callback_url``, else its account's, if any."""
        return callback_url or self.webhook_urls.get(account)

    def _finish(
        self,
        *conditions: Any,
        fence: Fenced | None = None,
        also: Sequence[Change] = (),
        **values: Any,
    ) -> list[str]:
        """Give the jobs ``conditions`` match a final status (``values``) and put a webhook
        for each that has a URL in the outbox, in one transaction; returns their ids. With
        ``fence``, only while that claim holds the job (else LeaseLostError, nothing written);
        ``also`` runs in the same transaction once the fence held.

        The UPDATE comes first, so on SQLite the transaction holds the write lock before it
        reads the rows back for the bodies."""
        t = ProvisioningJob
        # The event's ``created`` is the job's ``finished_at`` (and ``updated_at``).
        now = values.setdefault("updated_at", values.get("finished_at") or self.clock())
        if fence is not None:
            conditions = (*conditions, col(t.lease_token) == fence.token)
        with Session(self.engine) as session:
            rows = session.execute(
                update(t)
                .where(*conditions)
                .values(**values)
                .returning(col(t.id), col(t.request), col(t.account))
            ).all()
            if fence is not None and len(rows) != 1:
                session.rollback()
                raise LeaseLostError(fence.job_id)
            for statement, params in also:
                session.execute(statement, params)
            urls: dict[str, str] = {}
            for job_id, request, account in rows:
                url = self.webhook_url((request or {}).get("callback_url"), account)
                if url:
                    urls[job_id] = url
            ids = list(urls)
            for start in range(0, len(ids), 500):
                for job in session.exec(select(t).where(col(t.id).in_(ids[start : start + 500]))):
                    session.add(new_delivery(job, urls[job.id], now))
            session.commit()
        return [job_id for job_id, _, _ in rows]

    def _update_fenced(self, fence: Fenced, also: Sequence[Change] = (), **values: Any) -> None:
        """One UPDATE of the job ``fence`` holds, and ``also``, in one transaction; raises
        LeaseLostError (nothing written) once the claim no longer holds the job."""
        t = ProvisioningJob
        fenced = (col(t.id) == fence.job_id, col(t.lease_token) == fence.token)
        with Session(self.engine) as session:
            result = session.execute(update(t).where(*fenced).values(**values))
            if result.rowcount != 1:  # type: ignore[attr-defined]
                session.rollback()
                raise LeaseLostError(fence.job_id)
            for statement, params in also:
                session.execute(statement, params)
            session.commit()

    def _update(self, *conditions: Any, **values: Any) -> int:
        """One conditional UPDATE in its own transaction; returns how many rows it changed."""
        with Session(self.engine) as session:
            result = session.execute(update(ProvisioningJob).where(*conditions).values(**values))
            session.commit()
        return int(result.rowcount)  # type: ignore[attr-defined]

    def _update_returning(self, *conditions: Any, **values: Any) -> list[str]:
        """``_update``, returning the ids of the rows it changed."""
        t = ProvisioningJob
        with Session(self.engine) as session:
            ids = (
                session.execute(update(t).where(*conditions).values(**values).returning(col(t.id)))
                .scalars()
                .all()
            )
            session.commit()
        return list(ids)

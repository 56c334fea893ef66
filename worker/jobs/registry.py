"""The registry of worker processes: each process that runs jobs registers and beats; a watcher
takes one whose beats stopped for dead, removes it and hands its running jobs back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, update
from sqlmodel import Session, col, select

from worker.jobs.models import ProvisioningJob, WorkerProcessRow
from worker.jobs.states import JobStatus
from worker.jobs.table import Table
from worker.times import as_utc


@dataclass(frozen=True)
class WorkerProcess:
    """A registered process, as ``provision workers`` and the dashboard show it."""

    id: str
    host: str
    pid: int
    started: datetime
    last_heartbeat: datetime
    running_jobs: int


class Registry(Table):
    """What worker processes and their watchers may do with the registry."""

    def register(self, process_id: str, *, host: str, pid: int) -> None:
        """Add this process (or bring its row back after it was taken for dead)."""
        now = self.clock()
        w = WorkerProcessRow.__table__  # type: ignore[attr-defined]
        with Session(self.engine) as session:
            found = session.execute(
                update(w)
                .where(w.c.id == process_id)
                .values(last_heartbeat=now, beats=w.c.beats + 1)
            ).rowcount  # type: ignore[attr-defined]
            if not found:
                session.execute(
                    insert(w).values(
                        id=process_id, host=host, pid=pid, started=now, last_heartbeat=now, beats=0
                    )
                )
            session.commit()

    def beat(self, process_id: str) -> bool:
        """One heartbeat; False when the row is gone: the process was taken for dead. (Core
        statements, here and in ``beats``: they run every second in every worker.)"""
        w = WorkerProcessRow.__table__  # type: ignore[attr-defined]
        with self.engine.begin() as connection:
            changed = connection.execute(
                update(w)
                .where(w.c.id == process_id)
                .values(last_heartbeat=self.clock(), beats=w.c.beats + 1)
            ).rowcount
        return bool(changed)

    def unregister(self, process_id: str) -> None:
        w = WorkerProcessRow
        with Session(self.engine) as session:
            session.execute(delete(w).where(col(w.id) == process_id))
            session.commit()

    def beats(self) -> dict[str, int]:
        """Every registered process's beat count."""
        w = WorkerProcessRow.__table__  # type: ignore[attr-defined]
        with self.engine.connect() as connection:
            return {i: int(n) for i, n in connection.execute(select(w.c.id, w.c.beats)).all()}

    def remove_if_silent(self, process_id: str, beats: int) -> bool:
        """Remove the process if it has not beaten since ``beats``; True if removed (by this
        call: of several watchers, one wins)."""
        w = WorkerProcessRow
        with Session(self.engine) as session:
            removed = session.execute(
                delete(w).where(col(w.id) == process_id, col(w.beats) == beats)
            ).rowcount  # type: ignore[attr-defined]
            session.commit()
        return bool(removed)

    def running_of(self, owner: str) -> list[tuple[str, str]]:
        """(id, lease token) of the running jobs ``owner`` claimed."""
        t = ProvisioningJob
        with Session(self.engine) as session:
            rows = session.execute(
                select(t.id, t.lease_token).where(
                    col(t.status) == JobStatus.running, col(t.lease_owner) == owner
                )
            ).all()
        return [(job_id, token) for job_id, token in rows if token]

    def processes(self) -> list[WorkerProcess]:
        """The registered processes, oldest first, with how many jobs each runs."""
        w, t = WorkerProcessRow, ProvisioningJob
        with Session(self.engine) as session:
            rows = session.execute(select(w).order_by(col(w.started), col(w.id))).scalars().all()
            ids: Sequence[str] = [row.id for row in rows]
            running = (
                dict(
                    session.execute(
                        select(t.lease_owner, func.count())
                        .where(col(t.status) == JobStatus.running, col(t.lease_owner).in_(ids))
                        .group_by(col(t.lease_owner))
                    ).all()
                )
                if ids
                else {}
            )
        return [
            WorkerProcess(
                row.id,
                row.host,
                row.pid,
                as_utc(row.started) or row.started,
                as_utc(row.last_heartbeat) or row.last_heartbeat,
                int(running.get(row.id, 0)),
            )
            for row in rows
        ]

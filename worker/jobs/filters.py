"""Which jobs an operator means: the one filter every reader and action takes."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col

from worker.jobs.models import ProvisioningJob
from worker.jobs.states import JobStatus


@dataclass(frozen=True)
class JobFilter:
    """Which jobs an operator means: every given field must match (none given: every job)."""

    status: JobStatus | None = None
    batch_id: str | None = None
    domain: str | None = None
    account: str | None = None
    #: The last error's code, e.g. ``domain_taken``.
    error_code: str | None = None
    #: The accounts whoever asks may see (None: every account). Not a field an operator gives:
    #: a filter with nothing else is still empty.
    within: tuple[str, ...] | None = None

    @property
    def empty(self) -> bool:
        return all(
            getattr(self, name) is None for name in self.__dataclass_fields__ if name != "within"
        )

    def conditions(self) -> list[ColumnElement[bool]]:
        t = ProvisioningJob
        columns = {
            "status": col(t.status),
            "batch_id": col(t.batch_id),
            "domain": col(t.domain),
            "account": col(t.account),
            "error_code": col(t.error_code),
        }
        found = [
            column == getattr(self, name)
            for name, column in columns.items()
            if getattr(self, name) is not None
        ]
        if self.within is not None:
            found.append(col(t.account).in_(self.within))
        return found

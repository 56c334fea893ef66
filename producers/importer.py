"""``provision import``: stream a signup file into the status table in batches.

Memory stays flat whatever the file size: rows are read one at a time, validated, and written
``batch_size`` at a time in one transaction each (``JobStore.enqueue_many``). Rows are ``bulk``
jobs unless they say otherwise; the workers' scheduler dispatches them as the quota allows.

Every row is deduplicated by its idempotency key (``id``, or one derived from the request), so
running the same file again enqueues nothing new. Invalid rows are reported with their line
number, field and reason as they are found, and never hold back the valid ones.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from producers.events import Event, parse_event
from producers.rows import Format, Row, detect_format, read_rows
from worker.errors import InvalidRequestError
from worker.jobs.filters import JobFilter
from worker.jobs.intake import BatchOf
from worker.jobs.queries import BatchSummary
from worker.jobs.states import Priority
from worker.jobs.store import JobStore
from worker.pauses import Pause, blocking
from worker.wakeups import Wakeup

DEFAULT_BATCH_SIZE = 500
#: The summary keeps this many invalid rows for ``--json``; each is also reported as it is found.
MAX_REPORTED_INVALID = 10_000


@dataclass(frozen=True)
class Invalid:
    line: int
    field: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "field": self.field, "reason": self.reason}


@dataclass
class ImportSummary:
    batch_id: str
    queued: int = 0
    duplicate: int = 0
    #: Duplicates whose job had failed and was queued again (``retry_failed``); those jobs keep
    #: their own batch.
    retried_ids: list[str] = field(default_factory=list)
    invalid: int = 0
    invalid_rows: list[Invalid] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "queued": self.queued,
            "duplicate": self.duplicate,
            "retried": self.retried,
            "retried_ids": self.retried_ids,
            "invalid": self.invalid,
            "invalid_rows": [row.as_dict() for row in self.invalid_rows],
            "invalid_rows_truncated": self.invalid > len(self.invalid_rows),
        }

    @property
    def retried(self) -> int:
        return len(self.retried_ids)

    def line(self) -> str:
        retried = f" retried={self.retried}" if self.retried else ""
        return f"queued={self.queued} duplicate={self.duplicate}{retried} invalid={self.invalid}"


def validate(row: Row, accounts: Collection[str] | None = None) -> Event | Invalid:
    """The row as a validated event, or why it is invalid."""
    if row.data is None:
        return Invalid(row.line, row.field, row.error or "unreadable row")
    try:
        return parse_event(row.data, accounts=accounts)
    except InvalidRequestError as exc:
        return Invalid(row.line, exc.field, exc.message)
    except Exception as exc:
        return Invalid(row.line, None, f"{type(exc).__name__}: {exc}"[:1000])


def import_file(
    store: JobStore,
    path: Path,
    *,
    fmt: Format | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    accounts: Collection[str] | None = None,
    priority: Priority = Priority.bulk,
    batch_id: str | None = None,
    name: str | None = None,
    retry_failed: bool = False,
    on_invalid: Callable[[Invalid], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Enqueue every valid row of ``path`` under ``batch_id`` (default: a new one), a batch
    named ``name`` (default: the file's name).

    ``accounts`` are the account names rows may use (None: any); ``priority`` is the class of
    rows that name none. With ``retry_failed``, a row whose job exists and had failed queues
    that job again. ``on_invalid`` is called for each invalid row as it is found;
    ``on_progress`` with the number of bytes read since the last call.
    """
    with path.open("rb") as handle:
        return import_stream(
            store,
            _counting(handle, on_progress),
            fmt=fmt or detect_format(path),
            batch_size=batch_size,
            accounts=accounts,
            priority=priority,
            batch_id=batch_id,
            name=name or path.name,
            retry_failed=retry_failed,
            on_invalid=on_invalid,
        )


def new_batch_id() -> str:
    return uuid.uuid4().hex[:16]


def import_stream(
    store: JobStore,
    handle: Iterable[bytes],
    *,
    fmt: Format = "jsonl",
    batch_size: int = DEFAULT_BATCH_SIZE,
    accounts: Collection[str] | None = None,
    priority: Priority = Priority.bulk,
    batch_id: str | None = None,
    name: str | None = None,
    retry_failed: bool = False,
    on_invalid: Callable[[Invalid], None] | None = None,
) -> ImportSummary:
    summary = ImportSummary(batch_id=batch_id or new_batch_id())
    batch = BatchOf(summary.batch_id, name or summary.batch_id, "import")

    def reject(problem: Invalid) -> None:
        summary.invalid += 1
        if len(summary.invalid_rows) < MAX_REPORTED_INVALID:
            summary.invalid_rows.append(problem)
        if on_invalid is not None:
            on_invalid(problem)

    pending: list[tuple[int, Event]] = []
    for row in read_rows(handle, fmt):
        outcome = validate(row, accounts)
        if isinstance(outcome, Invalid):
            reject(outcome)
            continue
        pending.append((row.line, outcome))
        if len(pending) >= batch_size:
            _flush(store, pending, summary, batch, reject, priority, retry_failed)
            pending = []
    _flush(store, pending, summary, batch, reject, priority, retry_failed)
    return summary


def _flush(
    store: JobStore,
    pending: list[tuple[int, Event]],
    summary: ImportSummary,
    batch: BatchOf,
    reject: Callable[[Invalid], None],
    priority: Priority,
    retry_failed: bool,
) -> None:
    if not pending:
        return
    result = store.enqueue_many([event.job(priority) for _, event in pending], batch=batch)
    summary.queued += len(result.created)
    summary.duplicate += len(result.duplicate)
    if retry_failed and result.duplicate:
        summary.retried_ids += store.retry_ids(list(result.duplicate.values()))
    for index, conflict in sorted(result.conflict.items()):
        reject(Invalid(pending[index][0], "id", str(conflict)))


def _counting(handle: IO[bytes], on_progress: Callable[[int], None] | None) -> Iterable[bytes]:
    if on_progress is None:
        return handle

    def lines() -> Iterator[bytes]:
        for raw in handle:
            on_progress(len(raw))
            yield raw

    return lines()


class AccountsPaused(Exception):
    """Every job still waiting belongs to a paused account."""

    def __init__(self, pauses: list[Pause], summary: BatchSummary | None = None) -> None:
        super().__init__("; ".join(f"account {p.account} paused: {p.code}" for p in pauses))
        self.pauses = pauses
        self.summary = summary


def wait_for_batch(
    store: JobStore,
    batch_id: str,
    *,
    poll_seconds: float = 0.5,
    timeout: float | None = None,
    on_progress: Callable[[BatchSummary], None] | None = None,
    wakeup: Wakeup | None = None,
) -> BatchSummary:
    """Poll until every job of the batch is done (an empty batch is done at once), telling
    ``on_progress`` each poll's summary. With ``wakeup`` (``worker.wakeups.listening``) a poll
    comes as soon as a worker says a job finished, not only every ``poll_seconds``. Raises
    AccountsPaused when every job left waits for a paused account: nothing will move until
    someone fixes it."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        summary = store.batch_summary(batch_id)
        if on_progress is not None:
            on_progress(summary)
        if summary.total == 0 or summary.done:
            return summary
        held = blocking(store, JobFilter(batch_id=batch_id))
        if held:
            raise AccountsPaused(held, summary)
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"batch {batch_id} not done after {timeout}s")
        if wakeup is None:
            time.sleep(poll_seconds)
        else:
            wakeup.wait(poll_seconds)

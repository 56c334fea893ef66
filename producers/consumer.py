"""``provision consume``: signup events from a Redis Stream, through a consumer group.

Each stream entry carries one signup event as JSON in its ``event`` field. Entries are read with
XREADGROUP, validated, written as job rows in one transaction per read, and only then
acknowledged (XACK), so a crash at any point loses no event: an entry read but not acknowledged
stays pending, in the group's pending list under this consumer's name. It is processed again by:

- the same consumer name when it starts again: ``run()`` first re-reads its own pending entries
  (before anything new). The default name is the host name (``--consumer`` overrides it), so a
  restarted process picks up exactly what its predecessor on that host left. Give each consumer
  on one host its own stable name (``--consumer consume-1``, ...);
- any consumer of the group, with XAUTOCLAIM, once the entry has been idle ``claim_idle_ms``
  (default 60 s): ``run()`` claims such entries at start and then every ``claim_every_ms``
  (default half of ``claim_idle_ms``) while it runs, so the entries of a consumer that died for
  good (or was renamed) are taken over within about 1.5 times ``claim_idle_ms``, without a restart.

Re-processing is harmless: rows are deduplicated by idempotency key. Jobs are ``interactive``
unless an event says otherwise; the workers' scheduler dispatches them.

An entry that cannot become a job (a poison message: not JSON, an invalid event, or anything else
that makes parsing or its INSERT raise) is copied to the dead-letter stream ``<stream>:dead`` with
the reason, logged, and acknowledged, so it never blocks the group.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import redis
import sqlalchemy.exc

from producers.events import Event, parse_event
from worker.errors import InvalidRequestError
from worker.jobs.intake import Intake
from worker.jobs.states import Priority

log = logging.getLogger(__name__)

Entry = tuple[str, dict[str, str]]


@dataclass
class ConsumerStats:
    queued: int = 0
    duplicate: int = 0
    dead: int = 0


class StreamConsumer:
    def __init__(
        self,
        client: redis.Redis,
        store: Intake,
        *,
        stream: str,
        group: str,
        consumer: str,
        count: int = 100,
        block_ms: int = 1000,
        claim_idle_ms: int = 60_000,
        claim_every_ms: int | None = None,
        accounts: Collection[str] | None = None,
        priority: Priority = Priority.interactive,
    ) -> None:
        self.client = client
        self.store = store
        self.accounts = accounts
        self.priority = priority
        self.stream = stream
        self.dead_stream = f"{stream}:dead"
        self.group = group
        self.consumer = consumer
        self.count = count
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.claim_every_ms = claim_idle_ms // 2 if claim_every_ms is None else claim_every_ms
        self.stats = ConsumerStats()
        self.stopping = threading.Event()

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def run(self) -> None:
        """Recover, then consume until ``stop()``, claiming stale entries every ``claim_every_ms``."""
        self.ensure_group()
        self.recover()
        next_claim = time.monotonic() + self.claim_every_ms / 1000
        while not self.stopping.is_set():
            self.step()
            if time.monotonic() >= next_claim:
                self.claim_stale()
                next_claim = time.monotonic() + self.claim_every_ms / 1000

    def recover(self) -> None:
        """Process this consumer's pending entries (read before a crash), then stale ones of others."""
        while entries := self._read("0"):
            self.process(entries)
        self.claim_stale()

    def claim_stale(self) -> None:
        """Take over and process every entry of the group idle longer than ``claim_idle_ms``."""
        start = "0-0"
        while True:
            reply: Any = self.client.xautoclaim(
                self.stream, self.group, self.consumer, self.claim_idle_ms, start, count=self.count
            )
            start, entries = reply[0], _decode(reply[1])
            if entries:
                self.process(entries)
            if start in ("0-0", b"0-0"):
                return

    def step(self) -> int:
        """Read and process one batch of new entries; returns how many."""
        entries = self._read(">", block=self.block_ms)
        if entries:
            self.process(entries)
        return len(entries)

    def stop(self) -> None:
        self.stopping.set()

    def _read(self, start: str, block: int | None = None) -> list[Entry]:
        reply: Any = self.client.xreadgroup(
            self.group, self.consumer, {self.stream: start}, count=self.count, block=block
        )
        return _decode(reply[0][1]) if reply else []

    def process(self, entries: list[Entry]) -> None:
        """Commit the valid entries' jobs, dead-letter the invalid ones, then acknowledge all.

        Whatever an entry holds, it either becomes a job row or is dead-lettered: validation
        catches every exception (not only the expected ones), and if the batch INSERT fails the
        entries are inserted one by one so only the one(s) at fault are dead-lettered. Only an
        error that no entry caused (the database is down) escapes, leaving the batch pending.
        """
        valid: list[tuple[str, Event]] = []
        for entry_id, fields in entries:
            if not fields:  # deleted from the stream (XDEL/XTRIM) while pending
                continue
            try:
                valid.append(
                    (
                        entry_id,
                        parse_event(json.loads(fields.get("event", "")), accounts=self.accounts),
                    )
                )
            except InvalidRequestError as exc:
                self._dead(entry_id, fields, exc.field, exc.message)
            except Exception as exc:
                self._dead(entry_id, fields, None, _reason(exc))
        if valid:
            try:
                self._enqueue(valid, entries)
            except Exception as exc:
                if not _entry_fault(exc):
                    raise
                log.warning("batch insert failed (%s); inserting one by one", _reason(exc))
                for one in valid:
                    try:
                        self._enqueue([one], entries)
                    except Exception as single:
                        if not _entry_fault(single):
                            raise
                        self._dead(one[0], dict(entries)[one[0]], None, _reason(single))
        # Acknowledge only now: every job row is committed, every poison entry dead-lettered.
        self.client.xack(self.stream, self.group, *[entry_id for entry_id, _ in entries])

    def _enqueue(self, valid: list[tuple[str, Event]], entries: list[Entry]) -> None:
        result = self.store.enqueue_many([e.job(self.priority) for _, e in valid], source="stream")
        self.stats.queued += len(result.created)
        self.stats.duplicate += len(result.duplicate)
        for index, conflict in result.conflict.items():
            entry_id = valid[index][0]
            self._dead(entry_id, dict(entries)[entry_id], "id", str(conflict))

    def _dead(self, entry_id: str, fields: dict[str, str], field: str | None, reason: str) -> None:
        self.stats.dead += 1
        reason = reason.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates
        log.warning("dead-lettering %s %s: %s: %s", self.stream, entry_id, field or "event", reason)
        event = fields.get("event")
        self.client.xadd(
            self.dead_stream,
            {
                "entry_id": entry_id,
                "field": field or "",
                "reason": reason,
                # The entry's own bytes, even those that are not UTF-8 (see _decode).
                "event": json.dumps(fields)
                if event is None
                else event.encode("utf-8", "surrogateescape"),
            },
        )


def default_consumer_name() -> str:
    """A name that survives restarts (the host name), so a new process sees its pending entries."""
    return socket.gethostname() or "consumer"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON: {exc.msg}"
    return f"{type(exc).__name__}: {exc}"[:1000]


def _entry_fault(exc: BaseException) -> bool:
    """Whether an INSERT failed because of the rows' content (and not, say, a lost connection)."""
    if isinstance(exc, sqlalchemy.exc.DataError):  # e.g. PostgreSQL: NUL in text, value too long
        return True
    if isinstance(exc, sqlalchemy.exc.DBAPIError):  # operational, integrity, programming errors
        return False
    if isinstance(exc, sqlalchemy.exc.StatementError) and exc.orig is not None:
        return _entry_fault(exc.orig)
    # Raised while binding parameters: a lone surrogate (UnicodeEncodeError), NUL, overflow.
    return isinstance(exc, ValueError | TypeError | OverflowError | RecursionError)


def _decode(raw: Any) -> list[Entry]:
    """Stream entries as (id, {field: value}) with str everywhere, whatever the client's decoding.

    A value's bytes that are not UTF-8 become lone surrogates (``surrogateescape``), which
    ``parse_event`` refuses: such an entry is dead-lettered, never queued with U+FFFD in its key
    or domain."""

    def text(value: Any, errors: str = "replace") -> str:
        return value.decode("utf-8", errors) if isinstance(value, bytes) else str(value)

    return [
        (text(entry_id), {text(k): text(v, "surrogateescape") for k, v in (fields or {}).items()})
        for entry_id, fields in raw
    ]

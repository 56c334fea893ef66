"""``GET /jobs/{ref}`` for pollers: the job serialized once, a strong ETag of those bytes
(``If-None-Match`` answers 304), and ``?wait=SECONDS``, which answers as soon as the job
changes or with its current state when the time runs out.

Waiting re-reads the job's row with a growing pause (``FIRST_PAUSE`` up to ``LONGEST_PAUSE``):
one indexed read per waiter and pause, not a held database connection or thread, so thousands
of clients may wait at once. A change is a different body, whatever changed it."""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

from worker.jobs import view
from worker.jobs.models import ProvisioningJob

#: The longest ``?wait``, in seconds.
MAX_WAIT_SECONDS = 60
#: The first pause of a waiter between reads, then growing by ``GROWTH`` up to ``LONGEST_PAUSE``.
FIRST_PAUSE = 0.1
GROWTH = 1.5
LONGEST_PAUSE = 1.0
#: Threads reading jobs at once: fewer than the status table's pooled connections (16), so a
#: burst of pollers queues for a thread instead of opening and closing connections beyond the
#: pool, and fewer threads contend for the interpreter.
READERS = 8


@functools.cache
def readers() -> anyio.CapacityLimiter:
    """The threads pollers' reads run on (one limiter per process, made in its event loop)."""
    return anyio.CapacityLimiter(READERS)


@dataclass(frozen=True)
class Snapshot:
    """A job as one answer shows it: its JSON, that body's ETag, and whether it is done."""

    account: str
    body: bytes
    etag: str
    done: bool

    @classmethod
    def of(cls, job: ProvisioningJob) -> Snapshot:
        body = view.job_view(job).model_dump_json().encode()
        etag = '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'
        return cls(job.account, body, etag, job.status.done)


def matches(if_none_match: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (or is ``*``); weak comparison, as RFC 9110
    says for this header."""
    if not if_none_match:
        return False
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


async def wait_for_change(
    read: Callable[[], Awaitable[Snapshot | None]],
    first: Snapshot,
    known: str | None,
    seconds: float,
    gone: Callable[[], Awaitable[bool]],
) -> Snapshot | None:
    """The job once it is no longer what the client has (``known``, its ``If-None-Match``, else
    ``first``), it is done, or ``seconds`` have passed; None if it was deleted meanwhile.
    Stops early when the client is ``gone``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    pause = FIRST_PAUSE
    current: Snapshot | None = first

    def unchanged(snapshot: Snapshot) -> bool:
        if known is not None:
            return matches(known, snapshot.etag)
        return snapshot.etag == first.etag

    while current is not None and not current.done and unchanged(current):
        left = deadline - loop.time()
        if left <= 0 or await gone():
            break
        await asyncio.sleep(min(pause, left))
        pause = min(pause * GROWTH, LONGEST_PAUSE)
        current = await read()
    return current

"""``GET /jobs/{ref}`` for pollers: the job serialized once, a strong ETag of those bytes
(``If-None-Match`` answers 304), and ``?wait=SECONDS``, which answers as soon as the job
changes or with its current state when the time runs out.

``JobPolls``, a middleware inside the gate, answers these requests itself: FastAPI's routing
and dependency solving cost more CPU than the database read (about 0.3 of a poll's 0.8 ms). The
route in ``provision.http.routes`` documents them in the OpenAPI document, and answers through
the same ``answer`` where the middleware is not in front.

Waiting re-reads the job's row with a growing pause (``FIRST_PAUSE`` up to ``LONGEST_PAUSE``):
one indexed read per waiter and pause, not a held database connection or thread, so thousands
of clients may wait at once. A change is a different body, whatever changed it. Where the
workers announce their work on Redis, ``provision.http.changes`` ends a pause early when the
job changed, so a waiter answers a finished job at once; the re-reads remain the safety net."""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from pydantic import Field, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from provision.http import deps
from provision.http.errors import ApiError
from worker.jobs import view
from worker.jobs.rows import JobRecord

#: The longest ``?wait``, in seconds.
MAX_WAIT_SECONDS = 60
#: ``Retry-After`` of a job not done yet: how long a poller that does not wait should pause.
RETRY_AFTER_SECONDS = 2
#: The scope reading a job needs.
SCOPE = "jobs:read"
#: The first pause of a waiter between reads, then growing by ``GROWTH`` up to ``LONGEST_PAUSE``.
FIRST_PAUSE = 0.1
GROWTH = 1.5
LONGEST_PAUSE = 1.0
#: Threads reading jobs at once: no more than the reader pool's connections, so a burst of
#: pollers queues for a thread instead of opening connections beyond the pool, and few threads
#: contend for the interpreter.
READERS = 8


@functools.cache
def readers() -> ThreadPoolExecutor:
    """The threads pollers' reads run on, one pool per process. A plain executor: anyio's
    thread hop cost a quarter of a poll's CPU."""
    return ThreadPoolExecutor(READERS, thread_name_prefix="job-polls")


@dataclass(frozen=True)
class Snapshot:
    """A job as one answer shows it: its JSON, that body's ETag, and whether it is done; its
    id and when it last changed, for ``provision.http.changes``."""

    account: str
    body: bytes
    etag: str
    done: bool
    id: str
    updated_at: datetime

    @classmethod
    def of(cls, job: JobRecord) -> Snapshot:
        body = view.job_view(job).model_dump_json().encode()
        etag = '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'
        return cls(job.account, body, etag, job.status.done, job.id, job.updated_at)


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


#: Waits between two reads of a waiter: ``(snapshot, seconds)``, returning early if it may know
#: the job changed.
Pause = Callable[[Snapshot, float], Awaitable[object]]


async def _sleep(_snapshot: Snapshot, seconds: float) -> None:
    await asyncio.sleep(seconds)


async def wait_for_change(
    read: Callable[[], Awaitable[Snapshot | None]],
    first: Snapshot,
    known: str | None,
    seconds: float,
    gone: Callable[[], Awaitable[bool]],
    pause_for: Pause = _sleep,
) -> Snapshot | None:
    """The job once it is no longer what the client has (``known``, its ``If-None-Match``, else
    ``first``), it is done, or ``seconds`` have passed; None if it was deleted meanwhile.
    Stops early when the client is ``gone``. ``pause_for`` waits between reads."""
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
        await pause_for(current, min(pause, left))
        pause = min(pause * GROWTH, LONGEST_PAUSE)
        current = await read()
    return current


_WAIT: TypeAdapter[float] = TypeAdapter(Annotated[float, Field(ge=0, le=MAX_WAIT_SECONDS)])


def wait_seconds(raw: str | None) -> float:
    """``?wait``, 0 when absent; a 422 naming the field, worded as for any query parameter."""
    if raw is None:
        return 0.0
    try:
        return _WAIT.validate_python(raw, strict=False)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"]
        raise ApiError(422, "validation_error", f"query wait: {reason}", "wait") from None


async def answer(request: Request, ref: str) -> Response:
    """The answer to ``GET /jobs/{ref}``: the job, 304 while it is as ``If-None-Match`` says,
    after waiting for a change if ``?wait`` asks; 404 for a job the caller may not see."""
    caller = deps.principal_of(request)
    deps.require(caller, SCOPE)
    wait = wait_seconds(request.query_params.get("wait"))
    if_none_match = request.headers.get("if-none-match")
    parts = deps.parts_of(request)
    store = parts.store

    def snapshot() -> Snapshot | None:
        job = store.poll(ref)
        return Snapshot.of(job) if job is not None and caller.sees(job.account) else None

    async def read() -> Snapshot | None:
        return await asyncio.get_running_loop().run_in_executor(readers(), snapshot)

    found = await read()
    if found is not None and wait:
        changes = parts.changes
        pause_for: Pause = (
            (lambda seen, seconds: changes.until_changed(seen.id, seen.updated_at, seconds))
            if changes is not None
            else _sleep
        )
        found = await wait_for_change(
            read, found, if_none_match, wait, request.is_disconnected, pause_for
        )
    if found is None:
        raise ApiError(404, "not_found", f"no job {ref!r}")
    headers = {"ETag": found.etag}
    if not found.done:
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    if matches(if_none_match, found.etag):
        return Response(status_code=304, headers=headers)
    return Response(found.body, media_type="application/json", headers=headers)


class JobPolls:
    """Answers ``GET /jobs/{ref}`` (``answer``) before FastAPI routes it; everything else
    goes on. Sits inside the gate, which has checked the token."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ref = _job_ref(scope) if scope["type"] == "http" else None
        if ref is None:
            await self.app(scope, receive, send)
            return
        try:
            response = await answer(Request(scope, receive), ref)
        except ApiError as refused:
            response = refused.response()
        await response(scope, receive, send)


def _job_ref(scope: Scope) -> str | None:
    """The ``ref`` of ``GET /jobs/{ref}``, as the route's path would match it; else None."""
    if scope["method"] != "GET":
        return None
    prefix, _, ref = scope["path"].partition("/jobs/")
    return ref if not prefix and ref and "/" not in ref else None

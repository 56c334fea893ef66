"""A typed Python client for ``provision serve`` (``provision.http.app``), sync and async, on httpx.

``ProvisionerClient`` and ``AsyncProvisionerClient`` have the same methods; answers are the
service's own models (``provisioner_types``: ``Job``, ``Batch``, ``Quota``).

Retries (tenacity, full jitter, bounded by attempts and by total time; a ``Retry-After`` is
honoured, and one past the time left ends the retries at once):

- ``submit`` is safe to repeat: every attempt sends the same bytes and the same idempotency key
  (the event's ``id``, else a uuid4 made once per call, sent as ``Idempotency-Key``), so a retry
  after an answer that never arrived returns the job the first attempt made. It and the reads
  are retried on connection errors and timeouts, ``408``, ``429`` and every ``5xx``.
- ``retry`` and ``cancel`` change a job's status, so repeating one that may have been acted on
  would answer ``409 wrong_status`` for a change that happened: they are retried only when the
  request was surely not acted on (no connection made, ``408``, ``429``, ``503``).
- No other ``4xx`` is retried.

Errors raise ``ServiceError`` (``status``, ``code``, ``message``, ``field``) or a subclass:
``Unauthorized`` (401), ``NotFound`` (404), ``Conflict`` (409), ``InvalidRequest`` (422;
``InvalidEvent`` from ``submit``), ``RateLimited`` (429), ``ConnectionFailed`` (no answer; status
None). An answer that is not the service's (a proxy's HTML page) raises ``ServiceError`` with
code ``unexpected_response``, whatever its status. The token never appears in a message or repr.
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import anyio
import httpx
from pydantic import TypeAdapter, ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from provisioner_types import Batch, ErrorBody, Job, JobPage, JobStatus, Quota

__all__ = [
    "AsyncProvisionerClient",
    "Conflict",
    "ConnectionFailed",
    "InvalidEvent",
    "InvalidRequest",
    "NotFound",
    "ProvisionerClient",
    "RateLimited",
    "Retries",
    "ServiceError",
    "Unauthorized",
    "WaitTimeout",
]

log = logging.getLogger(__name__)
M = TypeVar("M")

DEFAULT_TIMEOUT = 10.0
#: ``wait()`` pauses this long between polls when the service sends no ``Retry-After``.
DEFAULT_INTERVAL = 1.0
#: ``jobs()`` asks for pages this large (the service allows up to 500).
DEFAULT_PAGE_SIZE = 100
_REDACTED = "[redacted]"
_SNIPPET = 200


@dataclass(frozen=True)
class Retries:
    """How a request is retried: at most ``attempts`` tries (1: none) within ``total_seconds``,
    pausing a random time up to ``backoff_initial * 2**n`` (capped at ``backoff_max``) between
    them, or what the service's ``Retry-After`` says."""

    attempts: int = 4
    total_seconds: float = 30.0
    backoff_initial: float = 0.5
    backoff_max: float = 8.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if min(self.total_seconds, self.backoff_initial, self.backoff_max) < 0:
            raise ValueError("total_seconds and the backoff must not be negative")


# -- errors ------------------------------------------------------------------------------------


class ServiceError(Exception):
    """An error answer of the service, in its one shape ``{"error": {code, message, field}}``.

    ``status`` is the HTTP status (None: no answer arrived); ``retry_after`` the seconds of its
    ``Retry-After`` header, if it sent one."""

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        field: str | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, code, message, field)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        status = f"HTTP {self.status} " if self.status is not None else ""
        return f"{status}{self.code}: {self.message}{where}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, "
            f"message={self.message!r}, field={self.field!r})"
        )


class Unauthorized(ServiceError):
    """401: a missing or wrong bearer token."""


class NotFound(ServiceError):
    """404: no such job or batch (``not_found``)."""


class Conflict(ServiceError):
    """409: ``idempotency_key_reused`` (the key belongs to a different event) or
    ``wrong_status`` (the job cannot be retried or cancelled in its status)."""


class InvalidRequest(ServiceError):
    """422: invalid input; ``field`` names it (``validation_error``, ``bad_cursor``, …)."""


class InvalidEvent(InvalidRequest):
    """422 from ``submit``: the event is invalid; ``field`` names the field at fault
    (``timezone``, ``goals[0].goal_type``)."""


class RateLimited(ServiceError):
    """429: too many requests (from the service or a proxy in front of it)."""


class ConnectionFailed(ServiceError):
    """No answer arrived (connection refused or dropped, a timeout), retries included.

    ``error`` is the last httpx error. It is not chained as the ``__cause__``: its text is not
    redacted, and a traceback would show it."""

    error: httpx.TransportError | None = None


class WaitTimeout(TimeoutError):
    """``wait()`` ran out of time; ``job`` is the last state seen."""

    def __init__(self, ref: str, timeout: float, job: Job) -> None:
        super().__init__(f"job {ref!r} is not done after {timeout:g} s; it is {job.status.value}")
        self.ref, self.timeout, self.job = ref, timeout, job

    def __reduce__(self) -> tuple[type[WaitTimeout], tuple[str, float, Job]]:
        return type(self), (self.ref, self.timeout, self.job)


_BY_STATUS: dict[int, type[ServiceError]] = {
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    422: InvalidRequest,
    429: RateLimited,
}


# -- the parts both clients share --------------------------------------------------------------


class _Core:
    """Configuration, the retry policy, and turning answers into models or errors."""

    def __init__(self, base_url: str, token: str, retries: Retries | int | None) -> None:
        self._base_url = str(base_url).rstrip("/")
        self._secret = token
        if retries is None:
            retries = Retries()
        self._retries = retries if isinstance(retries, Retries) else Retries(attempts=retries)
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._base_url!r})"

    # retries

    def _stop(self) -> stop_base:
        return stop_after_attempt(self._retries.attempts) | stop_before_delay(
            self._retries.total_seconds
        )

    def _wait(self) -> wait_base:
        return _WaitRetryAfter(
            wait_random_exponential(
                multiplier=self._retries.backoff_initial, max=self._retries.backoff_max
            )
        )

    def _retry_if(self, *, idempotent: bool) -> retry_if_exception:
        return retry_if_exception(lambda exc: _retryable(exc, idempotent=idempotent))

    def _logged(self, what: str) -> Callable[[RetryCallState], None]:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            pause = state.next_action.sleep if state.next_action is not None else 0.0
            log.info(
                "%s failed (%s); retry %d in %.2fs",
                what,
                self._redact(_describe(exc)),
                state.attempt_number,
                pause,
            )

        return before_sleep

    # answers

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, _REDACTED) if self._secret else text

    def _check(self, response: httpx.Response, invalid: type[InvalidRequest]) -> httpx.Response:
        """The response if it is a success; else raise its error."""
        if response.is_success:
            return response
        retry_after = _retry_after(response.headers.get("retry-after"))
        try:
            detail = ErrorBody.model_validate_json(response.content).error
        except ValidationError:
            raise ServiceError(
                response.status_code,
                "unexpected_response",
                self._unexpected(response, "the service's error shape"),
                retry_after=retry_after,
            ) from None
        kind = _BY_STATUS.get(response.status_code, ServiceError)
        if kind is InvalidRequest:
            kind = invalid
        raise kind(
            response.status_code,
            detail.code,
            self._redact(detail.message),
            self._redact(detail.field) if detail.field is not None else None,
            retry_after=retry_after,
        )

    def _parse(self, response: httpx.Response, model: TypeAdapter[M], what: str) -> M:
        try:
            return model.validate_json(response.content)
        except ValidationError:
            raise ServiceError(
                response.status_code, "unexpected_response", self._unexpected(response, what)
            ) from None

    def _unexpected(self, response: httpx.Response, what: str) -> str:
        kind = response.headers.get("content-type") or "no content type"
        # Redacted whole before it is cut short, so no part of the token survives either.
        text = " ".join(self._redact(response.content.decode("utf-8", "replace")).split())
        snippet = repr(text[:_SNIPPET]) + ("…" if len(text) > _SNIPPET else "")
        return self._redact(f"HTTP {response.status_code} ({kind}) is not {what}: {snippet}")

    def _failed(self, exc: httpx.TransportError, *, idempotent: bool) -> ConnectionFailed:
        message = f"{self._base_url}: {_describe(exc)}"
        if not idempotent and not isinstance(exc, _NEVER_SENT):
            message += " (it may have been acted on: look at the job before repeating it)"
        failed = ConnectionFailed(None, "connection_failed", self._redact(message))
        failed.error = exc
        return failed


class _WaitRetryAfter(wait_base):
    """The service's ``Retry-After`` when it sent one, else the backoff."""

    def __init__(self, backoff: wait_base) -> None:
        self.backoff = backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, ServiceError) and exc.retry_after is not None:
            return exc.retry_after
        return float(self.backoff(retry_state))


#: Transport errors after which the request surely never reached the service.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _retryable(exc: BaseException, *, idempotent: bool) -> bool:
    """Worth another attempt. ``idempotent``: repeating the request cannot do anything twice."""
    if isinstance(exc, ServiceError):
        status = exc.status
        if status is None:
            return False
        if idempotent:
            return status in (408, 429) or status >= 500
        return status in (408, 429, 503)  # refused: the request was not acted on
    if idempotent:
        return isinstance(
            exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError
        )
    return isinstance(exc, _NEVER_SENT)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if unusable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - time.time())


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no error"
    if isinstance(exc, ServiceError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _submission(
    event: Mapping[str, Any], idempotency_key: str | None
) -> tuple[bytes, dict[str, str]]:
    """The body of ``POST /jobs``, encoded once so that every attempt sends the same bytes, and
    its headers: the idempotency key as ``Idempotency-Key`` (the event's ``id``, else the one
    given, else a new uuid4)."""
    body = json.dumps(dict(event), ensure_ascii=False, allow_nan=False).encode()
    headers = {"Content-Type": "application/json"}
    key: object = idempotency_key
    if key is None:
        key = event.get("id")
        if key is None:
            key = uuid.uuid4().hex
    if _header_safe(key):
        headers["Idempotency-Key"] = str(key).strip()
    # Else the body's id (that a header cannot carry) is the key; the service judges it.
    return body, headers


def _header_safe(key: object) -> bool:
    if isinstance(key, bool) or not isinstance(key, str | int):
        return False
    text = str(key).strip()
    return bool(text) and text.isascii() and text.isprintable()


def _job_path(ref: str, action: str = "") -> str:
    if not ref:
        raise ValueError("ref must be a job id or an idempotency key")
    return f"/jobs/{quote(str(ref), safe='')}{action}"


def _list_params(
    batch_id: str | None,
    status: JobStatus | str | None,
    domain: str | None,
    account: str | None,
    code: str | None,
    page_size: int,
) -> dict[str, str]:
    given = {
        "batch_id": batch_id,
        "status": str(status) if status is not None else None,
        "domain": domain,
        "account": account,
        "code": code,
        "limit": str(page_size),
    }
    return {name: value for name, value in given.items() if value is not None}


_JOB: TypeAdapter[Job] = TypeAdapter(Job)
_PAGE: TypeAdapter[JobPage] = TypeAdapter(JobPage)
_BATCH: TypeAdapter[Batch] = TypeAdapter(Batch)
_QUOTAS: TypeAdapter[list[Quota]] = TypeAdapter(list[Quota])


# -- the clients -------------------------------------------------------------------------------


class ProvisionerClient(_Core):
    """``provision serve``'s client. Use as a context manager, or ``close()`` it."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retries: Retries | int | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, token, retries)
        self._http = httpx.Client(
            base_url=self._base_url, headers=self._headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def submit(self, event: Mapping[str, Any], *, idempotency_key: str | None = None) -> Job:
        """Enqueue a signup event: the job (the same one again for the same key and event).

        Raises ``InvalidEvent`` (422, ``field`` at fault), ``Conflict``
        (``idempotency_key_reused``: the key belongs to a different event)."""
        body, headers = _submission(event, idempotency_key)
        response = self._call(
            "POST", "/jobs", idempotent=True, content=body, headers=headers, invalid=InvalidEvent
        )
        return self._parse(response, _JOB, "a job")

    def get(self, ref: str) -> Job:
        """A job by id or idempotency key; ``NotFound`` if there is none."""
        return self._get(ref)[0]

    def wait(self, ref: str, *, timeout: float, interval: float = DEFAULT_INTERVAL) -> Job:
        """Poll the job until it is done (succeeded, failed or cancelled) and return it.

        Between polls it pauses as long as the service's ``Retry-After`` says, else
        ``interval`` seconds. Raises ``WaitTimeout`` (a ``TimeoutError``, carrying the last job
        seen) once ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while True:
            job, retry_after = self._get(ref)
            left = deadline - time.monotonic()
            if job.done:
                return job
            if left <= 0:
                raise WaitTimeout(ref, timeout, job)
            time.sleep(min(retry_after if retry_after is not None else interval, left))

    def batch(self, batch_id: str) -> Batch:
        """A batch's counts per status and failures; ``NotFound`` if it has no jobs."""
        path = f"/batches/{quote(batch_id, safe='')}"
        return self._parse(self._call("GET", path, idempotent=True), _BATCH, "a batch")

    def jobs(
        self,
        *,
        batch_id: str | None = None,
        status: JobStatus | str | None = None,
        domain: str | None = None,
        account: str | None = None,
        code: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> Iterator[Job]:
        """Every job matching the filters, oldest first, fetching page after page."""
        params = _list_params(batch_id, status, domain, account, code, page_size)
        cursor: str | None = None
        while True:
            paged = {**params, "cursor": cursor} if cursor is not None else params
            response = self._call("GET", "/jobs", idempotent=True, params=paged)
            page = self._parse(response, _PAGE, "a page of jobs")
            yield from page.jobs
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def quota(self) -> list[Quota]:
        """Each quota: calls used and left per window, when each resets, jobs waiting."""
        return self._parse(self._call("GET", "/quota", idempotent=True), _QUOTAS, "quotas")

    def retry(self, ref: str) -> Job:
        """Queue a failed job again; ``Conflict`` (``wrong_status``) if it is not failed."""
        response = self._call("POST", _job_path(ref, "/retry"), idempotent=False)
        return self._parse(response, _JOB, "a job")

    def cancel(self, ref: str) -> Job:
        """Withdraw a queued or waiting job; ``Conflict`` (``wrong_status``) otherwise."""
        response = self._call("POST", _job_path(ref, "/cancel"), idempotent=False)
        return self._parse(response, _JOB, "a job")

    def _get(self, ref: str) -> tuple[Job, float | None]:
        response = self._call("GET", _job_path(ref), idempotent=True)
        retry_after = _retry_after(response.headers.get("retry-after"))
        return self._parse(response, _JOB, "a job"), retry_after

    def _call(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        invalid: type[InvalidRequest] = InvalidRequest,
    ) -> httpx.Response:
        def attempt() -> httpx.Response:
            response = self._http.request(
                method, path, params=params, content=content, headers=headers
            )
            return self._check(response, invalid)

        retrying = Retrying(
            stop=self._stop(),
            wait=self._wait(),
            retry=self._retry_if(idempotent=idempotent),
            before_sleep=self._logged(f"{method} {path}"),
            reraise=True,
        )
        try:
            return retrying(attempt)
        except httpx.TransportError as exc:
            raise self._failed(exc, idempotent=idempotent) from None


class AsyncProvisionerClient(_Core):
    """``ProvisionerClient``'s methods, async. Use as an async context manager, or
    ``await close()`` it. Runs on asyncio or trio (through anyio)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retries: Retries | int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, token, retries)
        self._http = httpx.AsyncClient(
            base_url=self._base_url, headers=self._headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    aclose = close

    async def submit(self, event: Mapping[str, Any], *, idempotency_key: str | None = None) -> Job:
        """See ``ProvisionerClient.submit``."""
        body, headers = _submission(event, idempotency_key)
        response = await self._call(
            "POST", "/jobs", idempotent=True, content=body, headers=headers, invalid=InvalidEvent
        )
        return self._parse(response, _JOB, "a job")

    async def get(self, ref: str) -> Job:
        """See ``ProvisionerClient.get``."""
        return (await self._get(ref))[0]

    async def wait(self, ref: str, *, timeout: float, interval: float = DEFAULT_INTERVAL) -> Job:
        """See ``ProvisionerClient.wait``."""
        deadline = time.monotonic() + timeout
        while True:
            job, retry_after = await self._get(ref)
            left = deadline - time.monotonic()
            if job.done:
                return job
            if left <= 0:
                raise WaitTimeout(ref, timeout, job)
            await anyio.sleep(min(retry_after if retry_after is not None else interval, left))

    async def batch(self, batch_id: str) -> Batch:
        """See ``ProvisionerClient.batch``."""
        path = f"/batches/{quote(batch_id, safe='')}"
        return self._parse(await self._call("GET", path, idempotent=True), _BATCH, "a batch")

    async def jobs(
        self,
        *,
        batch_id: str | None = None,
        status: JobStatus | str | None = None,
        domain: str | None = None,
        account: str | None = None,
        code: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> AsyncIterator[Job]:
        """See ``ProvisionerClient.jobs``."""
        params = _list_params(batch_id, status, domain, account, code, page_size)
        cursor: str | None = None
        while True:
            paged = {**params, "cursor": cursor} if cursor is not None else params
            response = await self._call("GET", "/jobs", idempotent=True, params=paged)
            page = self._parse(response, _PAGE, "a page of jobs")
            for job in page.jobs:
                yield job
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def quota(self) -> list[Quota]:
        """See ``ProvisionerClient.quota``."""
        return self._parse(await self._call("GET", "/quota", idempotent=True), _QUOTAS, "quotas")

    async def retry(self, ref: str) -> Job:
        """See ``ProvisionerClient.retry``."""
        response = await self._call("POST", _job_path(ref, "/retry"), idempotent=False)
        return self._parse(response, _JOB, "a job")

    async def cancel(self, ref: str) -> Job:
        """See ``ProvisionerClient.cancel``."""
        response = await self._call("POST", _job_path(ref, "/cancel"), idempotent=False)
        return self._parse(response, _JOB, "a job")

    async def _get(self, ref: str) -> tuple[Job, float | None]:
        response = await self._call("GET", _job_path(ref), idempotent=True)
        retry_after = _retry_after(response.headers.get("retry-after"))
        return self._parse(response, _JOB, "a job"), retry_after

    async def _call(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        invalid: type[InvalidRequest] = InvalidRequest,
    ) -> httpx.Response:
        async def attempt() -> httpx.Response:
            response = await self._http.request(
                method, path, params=params, content=content, headers=headers
            )
            return self._check(response, invalid)

        retrying = AsyncRetrying(
            stop=self._stop(),
            wait=self._wait(),
            retry=self._retry_if(idempotent=idempotent),
            before_sleep=self._logged(f"{method} {path}"),
            sleep=anyio.sleep,
            reraise=True,
        )
        try:
            return await retrying(attempt)
        except httpx.TransportError as exc:
            raise self._failed(exc, idempotent=idempotent) from None

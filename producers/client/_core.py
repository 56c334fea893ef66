"""What both clients share: configuration, the retry policy as tenacity's parts, turning answers
into models or errors (the token redacted from every message), and building requests."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter, ValidationError
from tenacity import (
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from producers.client._errors import BY_STATUS, ConnectionFailed, InvalidRequest, ServiceError
from producers.client._retries import (
    NEVER_SENT,
    Retries,
    WaitRetryAfter,
    describe,
    parse_retry_after,
    retryable,
)
from provisioner_types import Batch, ErrorBody, Job, JobPage, JobStatus, Quota

# The package's name, whichever module logs: callers configure one logger.
log = logging.getLogger("producers.client")
M = TypeVar("M")


@dataclass(frozen=True)
class Hold:
    """A request of ``wait()`` that the service holds until the job changes."""

    params: dict[str, str]
    headers: dict[str, str]
    timeout: httpx.Timeout


DEFAULT_TIMEOUT = 10.0
#: ``wait()`` pauses this long between polls when the service sends no ``Retry-After``.
DEFAULT_INTERVAL = 1.0
#: ``wait()`` asks the service to hold each answer until the job changes, this long at most
#: (the service allows 60 s).
WAIT_HOLD_SECONDS = 30.0
#: ``jobs()`` asks for pages this large (the service allows up to 500).
DEFAULT_PAGE_SIZE = 100
_REDACTED = "[redacted]"
_SNIPPET = 200

JOB: TypeAdapter[Job] = TypeAdapter(Job)
PAGE: TypeAdapter[JobPage] = TypeAdapter(JobPage)
BATCH: TypeAdapter[Batch] = TypeAdapter(Batch)
QUOTAS: TypeAdapter[list[Quota]] = TypeAdapter(list[Quota])


class Core:
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
        return WaitRetryAfter(
            wait_random_exponential(
                multiplier=self._retries.backoff_initial, max=self._retries.backoff_max
            )
        )

    def _retry_if(self, *, idempotent: bool) -> retry_if_exception:
        return retry_if_exception(lambda exc: retryable(exc, idempotent=idempotent))

    def _logged(self, what: str) -> Callable[[RetryCallState], None]:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            pause = state.next_action.sleep if state.next_action is not None else 0.0
            log.info(
                "%s failed (%s); retry %d in %.2fs",
                what,
                self._redact(describe(exc)),
                state.attempt_number,
                pause,
            )

        return before_sleep

    # waiting

    def _hold(self, left: float, etag: str | None, timeout: httpx.Timeout) -> Hold:
        """One request of ``wait()``: the service holds it until the job is no longer as
        ``etag`` says (or changes from now), for at most ``left`` seconds (and
        ``WAIT_HOLD_SECONDS``); the read timeout grows by as much."""
        seconds = max(0.0, min(left, WAIT_HOLD_SECONDS))
        return Hold(
            params={"wait": f"{seconds:.3f}"},
            headers={"If-None-Match": etag} if etag else {},
            timeout=httpx.Timeout(
                connect=timeout.connect,
                read=None if timeout.read is None else timeout.read + seconds,
                write=timeout.write,
                pool=timeout.pool,
            ),
        )

    def _held(
        self, response: httpx.Response, seen: Job | None
    ) -> tuple[Job, str | None, float | None]:
        """What a request of ``wait()`` answered: the job (``seen`` on a 304), its ETag (None
        from a service that answers at once, which ``wait()`` then polls) and ``Retry-After``."""
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        etag = response.headers.get("etag")
        if response.status_code == 304 and seen is not None:
            return seen, etag, retry_after
        return self._parse(response, JOB, "a job"), etag, retry_after

    # answers

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, _REDACTED) if self._secret else text

    def _check(self, response: httpx.Response, invalid: type[InvalidRequest]) -> httpx.Response:
        """The response if it is a success; else raise its error."""
        if response.is_success or response.status_code == 304:  # 304: ``wait()``'s ETag
            return response
        seconds = parse_retry_after(response.headers.get("retry-after"))
        try:
            detail = ErrorBody.model_validate_json(response.content).error
        except ValidationError:
            raise ServiceError(
                response.status_code,
                "unexpected_response",
                self._unexpected(response, "the service's error shape"),
                retry_after=seconds,
            ) from None
        kind = BY_STATUS.get(response.status_code, ServiceError)
        if kind is InvalidRequest:
            kind = invalid
        raise kind(
            response.status_code,
            detail.code,
            self._redact(detail.message),
            self._redact(detail.field) if detail.field is not None else None,
            retry_after=seconds,
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
        message = f"{self._base_url}: {describe(exc)}"
        if not idempotent and not isinstance(exc, NEVER_SENT):
            message += " (it may have been acted on: look at the job before repeating it)"
        failed = ConnectionFailed(None, "connection_failed", self._redact(message))
        failed.error = exc
        return failed


# -- requests ----------------------------------------------------------------------------------


def submission(
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


def job_path(ref: str, action: str = "") -> str:
    if not ref:
        raise ValueError("ref must be a job id or an idempotency key")
    return f"/jobs/{quote(str(ref), safe='')}{action}"


def batch_path(batch_id: str) -> str:
    return f"/batches/{quote(batch_id, safe='')}"


def list_params(
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

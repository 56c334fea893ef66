"""The retry policy: ``Retries`` (how many attempts, within how long, with what backoff), which
failures are worth another attempt, and the service's ``Retry-After``."""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from datetime import UTC

import httpx
from tenacity import RetryCallState
from tenacity.wait import wait_base

from producers.client._errors import ServiceError


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


class WaitRetryAfter(wait_base):
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
NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def retryable(exc: BaseException, *, idempotent: bool) -> bool:
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
    return isinstance(exc, NEVER_SENT)


def parse_retry_after(value: str | None) -> float | None:
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


def describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no error"
    if isinstance(exc, ServiceError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

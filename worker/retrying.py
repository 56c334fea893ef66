"""Retry policy: short, bounded in-process retries of one call, and job-level backoff.

Two layers, both bounded. Inside a job, a transient failure of a call that is safe to repeat is
retried a few times within seconds (tenacity, full jitter). Anything longer (a spent quota, an
outage) parks the job in the status table instead, so no worker slot is held while waiting and
no broker countdown can outlive the visibility timeout.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from worker import metrics
from worker.errors import PlausibleError, RateLimitedError
from worker.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


def is_retryable_now(exc: BaseException) -> bool:
    """Worth an immediate retry: a retryable Plausible error, except a 429, whose window will not
    reopen within seconds, while Plausible counts every refused request against the quota."""
    return (
        isinstance(exc, PlausibleError) and exc.retryable and not isinstance(exc, RateLimitedError)
    )


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    max_elapsed_seconds: float = 20.0
    backoff_initial: float = 0.25
    backoff_max: float = 4.0
    job_backoff_base: float = 5.0
    job_backoff_max: float = 900.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_attempts=settings.http_max_attempts,
            max_elapsed_seconds=settings.http_max_elapsed_seconds,
            backoff_initial=settings.http_backoff_initial,
            backoff_max=settings.http_backoff_max,
            job_backoff_base=settings.job_backoff_base_seconds,
            job_backoff_max=settings.job_backoff_max_seconds,
        )

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn``, retrying transient failures; the last error is re-raised as is."""
        retrying = Retrying(
            retry=retry_if_exception(is_retryable_now),
            stop=stop_after_attempt(self.max_attempts) | stop_after_delay(self.max_elapsed_seconds),
            wait=wait_random_exponential(multiplier=self.backoff_initial, max=self.backoff_max),
            sleep=self.sleep,
            before_sleep=_count_retry,
            reraise=True,
        )
        return retrying(fn)

    def job_backoff(self, attempts: int) -> float:
        """Seconds to park a job after its ``attempts``-th attempt failed transiently."""
        ceiling = min(self.job_backoff_max, self.job_backoff_base * 2 ** max(attempts - 1, 0))
        # Half fixed, half jitter: spreads a herd of parked jobs without making waits tiny.
        return float(ceiling / 2 + random.uniform(0, ceiling / 2))


def _count_retry(state: RetryCallState) -> None:
    """Before each in-process retry: count it by the error's code, and say so."""
    exc = state.outcome.exception() if state.outcome is not None else None
    code = exc.code if isinstance(exc, PlausibleError) else type(exc).__name__
    metrics.API_RETRIES.labels(code).inc()
    pause = state.next_action.sleep if state.next_action is not None else 0.0
    log.info("call failed (%s); retry %d in %.2fs", code, state.attempt_number, pause)

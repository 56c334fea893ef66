"""The SDK's exceptions: the service's one error shape as ``ServiceError`` and a subclass per
status a caller may want to catch, and ``WaitTimeout``."""

from __future__ import annotations

import httpx

from provisioner_types import Job


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


#: The exception of each error status a caller may want to catch; others are ``ServiceError``.
BY_STATUS: dict[int, type[ServiceError]] = {
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    422: InvalidRequest,
    429: RateLimited,
}

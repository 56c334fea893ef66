"""Every error the provisioner raises, in one tree.

ProvisionerError                      anything of ours
├── PlausibleError                    a call to the Sites API failed: .status, .message, .code, .retryable
│   ├── TransientError                worth retrying: the same call may succeed later
│   │   ├── PlausibleConnectionError  no response at all (refused, reset, timed out)  code network_error / timeout
│   │   ├── ServerError               5xx                                              code server_error
│   │   └── RateLimitedError          429; .limit is "hourly" or "burst", .reset_at    code rate_limited
│   └── PermanentError                retrying the same call cannot help; raised as is with code
│       │                             api_error (406, other 4xx) or unexpected_response (bad 200 body)
│       ├── BadRequestError           400                 code validation_error, missing_site_id, ...
│       │   └── DomainTakenError      400 "cannot be registered"                       code domain_taken
│       ├── AuthenticationError       401                 code missing_api_key / invalid_api_key
│       ├── PaymentRequiredError      402                 code sites_api_unavailable, site_limit_reached, ...
│       ├── ForbiddenError            403                 code team_forbidden
│       ├── NotFoundError             404                 code site_not_found / goal_not_found / not_found
│       └── NotTheApiError            404 not in the API's shape (a router's, a proxy's page)  code wrong_base_url
├── QuotaWait                         no quota permit for the next request now: the job goes back
│                                     to the scheduler (decided locally; never dressed up as a 429)
├── ConfigurationError                the process cannot run as configured (e.g. no API key)
├── InvalidRequestError               a provisioning request failed validation before it was queued
└── IdempotencyConflictError          an idempotency key was reused for a different request

Messages carry what the server said and never the API key.
"""

from __future__ import annotations

from datetime import datetime


class ProvisionerError(Exception):
    """Base class of every error raised by the provisioner."""


class PlausibleError(ProvisionerError):
    """A call to the Plausible Sites API failed."""

    retryable: bool = False
    default_code: str = "api_error"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code or self.default_code

    def __str__(self) -> str:
        where = f"HTTP {self.status}" if self.status is not None else "no response"
        return f"{self.code} ({where}): {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status!r}, message={self.message!r})"


class TransientError(PlausibleError):
    """The same call may succeed if tried again later."""

    retryable = True
    default_code = "transient_error"


class PlausibleConnectionError(TransientError):
    """No response was received: the connection failed, was dropped or timed out.

    The request may or may not have taken effect on the server.
    """

    default_code = "network_error"


class ServerError(TransientError):
    """Plausible answered with a 5xx status."""

    default_code = "server_error"


class RateLimitedError(TransientError):
    """Plausible answered 429: the team's hourly or burst quota is spent until ``reset_at``."""

    default_code = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = 429,
        code: str | None = None,
        limit: str,
        reset_at: datetime,
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.limit = limit
        self.reset_at = reset_at

    def retry_after(self, now: datetime) -> float:
        """Seconds from ``now`` until the exhausted window resets (never negative)."""
        return max(0.0, (self.reset_at - now).total_seconds())


class PermanentError(PlausibleError):
    """Retrying the same call cannot succeed."""

    default_code = "permanent_error"


class BadRequestError(PermanentError):
    """400: the request was refused as invalid."""

    default_code = "validation_error"


class DomainTakenError(BadRequestError):
    """400: the domain is already registered, by us (an earlier lost response) or by someone else."""

    default_code = "domain_taken"


class AuthenticationError(PermanentError):
    """401: the key is missing, unknown, lacks the scope, or belongs to another team."""

    default_code = "invalid_api_key"


class PaymentRequiredError(PermanentError):
    """402: the team's plan does not allow this (no Sites API, site limit, locked site...)."""

    default_code = "payment_required"


class ForbiddenError(PermanentError):
    """403: the key's user cannot add sites to the team."""

    default_code = "team_forbidden"


class NotFoundError(PermanentError):
    """404: the site or goal does not exist, or the key's role may not see it."""

    default_code = "not_found"


class NotTheApiError(PermanentError):
    """404 whose body is not the API's ``{"error": …}``: no Sites API at PLAUSIBLE_BASE_URL (a
    wrong path, another server, Community Edition); the message says which URL to set."""

    default_code = "wrong_base_url"


class QuotaWait(ProvisionerError):
    """The current windows have no permit for the job's next request. Nothing was sent; the job
    waits for the scheduler at its checkpoint. ``retry_at`` is when room may open (epoch s)."""

    code = "quota_wait"

    def __init__(self, message: str, *, retry_at: float) -> None:
        super().__init__(message)
        self.message = message
        self.retry_at = retry_at


class ConfigurationError(ProvisionerError):
    """The process cannot run as configured; the message says which setting to fix."""


class InvalidRequestError(ProvisionerError):
    """A provisioning request is invalid; ``field`` names the offending field."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class IdempotencyConflictError(ProvisionerError):
    """The idempotency key already names a job with a different request."""

    def __init__(self, key: str, job_id: str) -> None:
        super().__init__(
            f"idempotency key {key!r} already belongs to job {job_id} with a different request"
        )
        self.key = key
        self.job_id = job_id

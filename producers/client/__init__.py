"""A typed Python client for ``provision serve`` (``provision.http``), sync and async, on httpx.

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

Modules: ``_errors`` (the exceptions), ``_retries`` (the policy), ``_core`` (what both clients
share), ``_sync`` and ``_async`` (the clients). Imports httpx, tenacity, anyio, pydantic and
``provisioner_types`` only: neither SQLAlchemy nor ``worker``, so a remote web app can install
and import it alone.
"""

from producers.client._async import AsyncProvisionerClient
from producers.client._errors import (
    Conflict,
    ConnectionFailed,
    InvalidEvent,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServiceError,
    Unauthorized,
    WaitTimeout,
)
from producers.client._retries import Retries
from producers.client._sync import ProvisionerClient

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

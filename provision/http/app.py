"""``provision serve``: the HTTP service (FastAPI). OpenAPI docs at ``/docs``.

- ``POST /jobs`` takes a signup event. Its idempotency key is the body's ``id`` or the
  ``Idempotency-Key`` header (if both are given they must match once normalised alike: trimmed,
  an integer id equal to its decimal string). Answers ``202`` with the job,
  ``Location: /jobs/{id}`` and ``Retry-After``. The same key with the same body returns the same
  job (202 again); the same key with a different body is ``409 Conflict``
  (``idempotency_key_reused``). An invalid event is ``422`` naming the field.
- ``GET /jobs/{ref}``: one job by id or idempotency key. ``GET /jobs?batch_id=&status=&domain=``:
  a page of jobs (oldest first) and ``next_cursor``. ``GET /batches/{batch_id}``: counts + failures.
- ``POST /jobs/{ref}/retry`` re-queues a failed job; ``POST /jobs/{ref}/cancel`` withdraws a
  queued or waiting job (``ref``: id or idempotency key); both answer ``409`` when the job is in
  another status. ``POST /jobs/retry`` and ``POST /jobs/cancel`` do the same to every job a filter
  matches.
- ``GET /healthz`` (the process is up), ``GET /readyz`` (the database is reachable and migrated),
  ``GET /metrics`` (Prometheus).

Every error is ``{"error": {"code", "message", "field"}}`` (``errors``). Data routes
(``routes``) need ``Authorization: Bearer <PROVISIONER_API_TOKEN>``, checked from the headers
before any of the body is read (``gate``); the docs, the schema and the health checks
(``health``) are public. Without a token configured the service only runs in development mode,
unauthenticated. Handlers are plain ``def``: their blocking database calls run in FastAPI's
threadpool. Answers are the models of ``provisioner_types``, built by ``worker.jobs.view``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from fastapi import FastAPI
from pydantic import SecretStr

from provision import dashboard
from provision.http import deps, health, polling, routes
from provision.http.changes import JobChanges
from provision.http.errors import handle_errors
from provision.http.gate import BODY_TIMEOUT_SECONDS, Gate
from provision.http.openapi import Service
from provision.http.polling import JobPolls
from provision.tokens import LEGACY, Tokens, token_hash
from worker.jobs.store import JobStore
from worker.quota.report import Reporter
from worker.wakeups import Wakeup

if TYPE_CHECKING:
    from producers.plans.refresh import LiveReader


def create_app(
    store: JobStore,
    *,
    token: SecretStr,
    dev_mode: bool = False,
    accounts: Collection[str] | None = None,
    reporter: Reporter | None = None,
    body_timeout: float = BODY_TIMEOUT_SECONDS,
    tokens: Tokens | None = None,
    refresher: LiveReader | None = None,
    wakeup: Wakeup | None = None,
) -> FastAPI:
    """The service. ``tokens``: every token it accepts (``provision.tokens``); by default
    ``token`` alone, as an admin. ``wakeup``: the workers' wake-ups, which end a ``?wait``
    poller's pause when its job changed (``provision.http.changes``). Refuses to build without
    any token unless ``dev_mode`` is set."""
    if tokens is None:
        legacy = token.get_secret_value()
        tokens = Tokens({token_hash(legacy): LEGACY} if legacy else {})
    if tokens.open and not dev_mode:
        raise RuntimeError(
            "PROVISIONER_API_TOKEN is not set (set PROVISIONER_DEV_MODE=1 to run without)"
        )
    app = Service(
        title="plausible-provisioner",
        summary="Provision Plausible sites exactly once; poll the jobs.",
        redoc_url=None,
        swagger_ui_parameters={"persistAuthorization": True},
    )
    changes = JobChanges(store, wakeup, polling.readers()) if wakeup is not None else None
    deps.attach(app, deps.Parts(store, reporter, accounts, refresher, changes))
    # Added first, so it runs inside the gate (the last added runs first).
    app.add_middleware(JobPolls)
    app.add_middleware(Gate, tokens=tokens, body_timeout=body_timeout)
    handle_errors(app)
    app.include_router(health.router)
    app.include_router(routes.router)
    # The dashboard (/ui) signs its users in with a session cookie; the gate lets its paths
    # through.
    app.include_router(
        dashboard.router(store, token=token, reporter=reporter, accounts=accounts, tokens=tokens)
    )
    return app

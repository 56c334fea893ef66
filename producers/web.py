"""``provision serve``: the HTTP service (FastAPI). OpenAPI docs at ``/docs``.

- ``POST /jobs`` takes a signup event. Its idempotency key is the body's ``id`` or the
  ``Idempotency-Key`` header (if both are given they must match once normalised alike: trimmed,
  an integer id equal to its decimal string). Answers ``202`` with the job,
  ``Location: /jobs/{id}`` and ``Retry-After``. The same key with the same body returns the same
  job (202 again); the same key with a different body is ``409 Conflict``
  (``idempotency_key_reused``). An invalid event is ``422`` naming the field.
- ``GET /jobs/{ref}``: one job by id or idempotency key. ``GET /jobs?batch_id=&status=&domain=``:
  a page of jobs (oldest first) and ``next_cursor``. ``GET /batches/{batch_id}``: counts + failures.
- ``POST /jobs/{id}/retry`` re-queues a failed job; ``POST /jobs/{id}/cancel`` withdraws a queued
  or waiting job; both answer ``409`` when the job is in another status.

Every route, the docs included, needs ``Authorization: Bearer <PROVISIONER_API_TOKEN>``; without a
token configured the service only runs in development mode, unauthenticated. Handlers are plain
``def``: their blocking database calls run in FastAPI's threadpool.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Collection
from datetime import datetime
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import SecretStr

from producers import views
from producers.events import check_strings, parse_domain, parse_event, parse_key
from worker.errors import IdempotencyConflictError, InvalidRequestError
from worker.models import JobStatus, Priority
from worker.quota.report import Reporter
from worker.store import JobStore

RETRY_AFTER_SECONDS = 2
MAX_PAGE = 500


class Unauthorized(HTTPException):
    def __init__(self) -> None:
        super().__init__(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})


def create_app(
    store: JobStore,
    *,
    token: SecretStr,
    dev_mode: bool = False,
    accounts: Collection[str] | None = None,
    reporter: Reporter | None = None,
) -> FastAPI:
    """The service. Refuses to build without a token unless ``dev_mode`` is set."""
    expected = token.get_secret_value().encode()
    if not expected and not dev_mode:
        raise RuntimeError(
            "PROVISIONER_API_TOKEN is not set (set PROVISIONER_DEV_MODE=1 to run without)"
        )

    def authorize(authorization: Annotated[str | None, Header()] = None) -> None:
        if not expected:
            return
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise Unauthorized()

    app = FastAPI(
        title="plausible-provisioner",
        summary="Provision Plausible sites exactly once; poll the jobs.",
        docs_url=None,
        openapi_url=None,
        dependencies=[Depends(authorize)],
    )

    @app.get("/openapi.json", include_in_schema=False)
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="plausible-provisioner")

    @app.post("/jobs", status_code=202)
    def create_job(
        body: Annotated[
            dict[str, Any], Body(examples=[{"id": "evt_1", "domain": "shop.example.com"}])
        ],
        response: Response,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        """Enqueue a signup event (see the README's "Signup events")."""
        try:
            if idempotency_key is not None:
                # Both normalised alike (trimmed; 42 and "42" are one key) before comparing.
                check_strings(idempotency_key, "Idempotency-Key")
                header_key = parse_key(idempotency_key)
                body_key = parse_key(body.get("id"))
                if body_key is not None and body_key != header_key:
                    raise _error(422, "key_mismatch", "Idempotency-Key and body id differ", "id")
                body = {**body, "id": header_key}
            parsed = parse_event(body, accounts=accounts)
        except InvalidRequestError as exc:
            raise _error(422, "validation_error", exc.message, exc.field) from None
        try:
            result = store.enqueue(
                parsed.request, key=parsed.key, priority=parsed.priority or Priority.interactive
            )
        except IdempotencyConflictError as exc:
            raise _error(409, "idempotency_key_reused", str(exc), "id") from None
        _accepted(response, result.job.id)
        return views.job_view(result.job)

    @app.get("/jobs/{ref}")
    def get_job(ref: str, response: Response) -> dict[str, Any]:
        """One job, by id or idempotency key."""
        job = store.find(ref)
        if job is None:
            raise _error(404, "not_found", f"no job {ref!r}")
        if not job.status.done:
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return views.job_view(job)

    @app.get("/jobs")
    def list_jobs(
        request: Request,
        batch_id: str | None = None,
        status: JobStatus | None = None,
        domain: str | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Jobs by batch, status and/or domain, oldest first; pass ``next_cursor`` back as ``cursor``."""
        try:
            normalised = parse_domain(domain) if domain is not None else None
        except InvalidRequestError as exc:
            raise _error(422, "validation_error", exc.message, "domain") from None
        jobs = store.list_jobs(
            status=status, domain=normalised, batch_id=batch_id, limit=limit, after=_decode(cursor)
        )
        last = jobs[-1] if len(jobs) == limit else None
        return {
            "jobs": [views.job_view(job) for job in jobs],
            "next_cursor": _encode(last.created_at, last.id) if last is not None else None,
        }

    @app.get("/batches/{batch_id}")
    def get_batch(batch_id: str) -> dict[str, Any]:
        """How many jobs of the batch are in each status, and the failures with their reasons."""
        summary = store.batch_summary(batch_id)
        if summary.total == 0:
            raise _error(404, "not_found", f"no batch {batch_id!r}")
        eta = reporter.batch_eta(batch_id) if reporter is not None else None
        return views.batch_view(summary, eta)

    @app.get("/quota")
    def get_quota() -> list[dict[str, Any]]:
        """Each quota: calls used and remaining per window, when each resets, jobs waiting."""
        if reporter is None:
            raise _error(404, "not_found", "this service was started without quota reporting")
        return reporter.quotas()

    @app.post("/jobs/{job_id}/retry", status_code=202)
    def retry_job(job_id: str, response: Response) -> dict[str, Any]:
        """Queue a failed job again (it resumes from its last checkpoint)."""
        if not store.retry(job_id):
            raise _state_error(store, job_id, "only a failed job can be retried")
        _accepted(response, job_id)
        return _view(store, job_id)

    @app.post("/jobs/{job_id}/cancel")
    def cancel_job(job_id: str) -> dict[str, Any]:
        """Withdraw a queued or waiting job."""
        if not store.cancel(job_id):
            raise _state_error(store, job_id, "only a queued or waiting job can be cancelled")
        return _view(store, job_id)

    return app


def _accepted(response: Response, job_id: str) -> None:
    response.headers["Location"] = f"/jobs/{job_id}"
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)


def _view(store: JobStore, job_id: str) -> dict[str, Any]:
    job = store.get(job_id)
    assert job is not None
    return views.job_view(job)


def _error(status: int, code: str, message: str, field: str | None = None) -> HTTPException:
    return HTTPException(status, {"code": code, "message": message, "field": field})


def _state_error(store: JobStore, job_id: str, message: str) -> HTTPException:
    job = store.get(job_id)
    if job is None:
        return _error(404, "not_found", f"no job {job_id!r}")
    return _error(409, "wrong_status", f"{message}; it is {job.status.value}")


def _encode(created_at: datetime, job_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{job_id}".encode()).decode()


def _decode(cursor: str | None) -> tuple[datetime, str] | None:
    if not cursor:
        return None
    try:
        stamp, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        return datetime.fromisoformat(stamp), job_id
    except ValueError:
        raise _error(
            422, "bad_cursor", "cursor is not one this service returned", "cursor"
        ) from None

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

Every error is ``{"error": {"code", "message", "field"}}``. Data routes need
``Authorization: Bearer <PROVISIONER_API_TOKEN>``, checked from the headers before any of the body
is read (``_Gate``); the docs, the schema and the health checks are public. Without a token
configured the service only runs in development mode, unauthenticated. Handlers are plain ``def``:
their blocking database calls run in FastAPI's threadpool.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from pydantic import SecretStr
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producers.events import check_strings, parse_event, parse_key
from provision import actions, cursors, dashboard
from provision.filters import EmptyFilterError, parse_filter
from provisioner_types import (
    SIGNUP_EVENT_EXAMPLE,
    Batch,
    Changed,
    ErrorBody,
    ErrorDetail,
    Health,
    Job,
    JobFilterBody,
    JobPage,
    Priority,
    Quota,
    SignupEvent,
)
from worker import metrics
from worker.errors import IdempotencyConflictError, InvalidRequestError
from worker.jobs import db, view
from worker.jobs.filters import JobFilter
from worker.jobs.models import ProvisioningJob
from worker.jobs.store import JobStore
from worker.quota.report import Reporter

T = TypeVar("T")

RETRY_AFTER_SECONDS = 2
MAX_PAGE = 500
#: Larger request bodies are refused (413) unread; a signup event is a few kilobytes.
MAX_BODY_BYTES = 1024 * 1024
#: A client that has not sent its whole body by then is answered 408 and let go, so slow or
#: stalled clients cannot hold the service's connections.
BODY_TIMEOUT_SECONDS = 10.0
#: Served without the token: they hold no data.
PUBLIC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json", "/healthz", "/readyz"})


class ApiError(Exception):
    """An error answer: its status and the one error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers

    def response(self) -> JSONResponse:
        body = ErrorBody(error=ErrorDetail(code=self.code, message=self.message, field=self.field))
        return JSONResponse(body.model_dump(), self.status, headers=self.headers)


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, all with the one error body."""
    return {s: {"model": ErrorBody, "description": _DESCRIBED[s]} for s in statuses}


_DESCRIBED = {
    401: "Missing or wrong bearer token (`unauthorized`).",
    404: "No such job, batch or route (`not_found`).",
    408: f"The body took over {BODY_TIMEOUT_SECONDS:g} s to arrive (`request_timeout`).",
    409: "The job is in another status (`wrong_status`), or the idempotency key belongs to "
    "a different request (`idempotency_key_reused`).",
    413: f"The body is over {MAX_BODY_BYTES} bytes (`body_too_large`).",
    422: "Invalid input (`validation_error`, `key_mismatch`, `bad_cursor`, `empty_filter`); "
    "`field` names it.",
    503: "The status database is unreachable or behind the schema.",
}


class _Service(FastAPI):
    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is not None:
            return self.openapi_schema
        schema = super().openapi()  # cached as self.openapi_schema: completed in place
        # POST /jobs reads its body itself (parse_event validates it); document its shape.
        event = SignupEvent.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(event.pop("$defs", {}))
        components["SignupEvent"] = event
        # FastAPI documents its own 422 body on routes with parameters; ours is the error body.
        for operations in schema["paths"].values():
            for operation in operations.values():
                responses = operation.get("responses", {})
                if "422" in responses:
                    responses["422"] = {
                        "description": _DESCRIBED[422],
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ErrorBody"}
                            }
                        },
                    }
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        return schema


def create_app(
    store: JobStore,
    *,
    token: SecretStr,
    dev_mode: bool = False,
    accounts: Collection[str] | None = None,
    reporter: Reporter | None = None,
    body_timeout: float = BODY_TIMEOUT_SECONDS,
) -> FastAPI:
    """The service. Refuses to build without a token unless ``dev_mode`` is set."""
    expected = token.get_secret_value().encode()
    if not expected and not dev_mode:
        raise RuntimeError(
            "PROVISIONER_API_TOKEN is not set (set PROVISIONER_DEV_MODE=1 to run without)"
        )

    app = _Service(
        title="plausible-provisioner",
        summary="Provision Plausible sites exactly once; poll the jobs.",
        redoc_url=None,
        swagger_ui_parameters={"persistAuthorization": True},
    )
    app.add_middleware(_Gate, expected=expected, body_timeout=body_timeout)
    _handle_errors(app)
    # Declares the scheme for OpenAPI ("Authorize" in /docs); _Gate does the checking.
    bearer = HTTPBearer(
        scheme_name="bearer", description="`PROVISIONER_API_TOKEN`", auto_error=False
    )
    data = APIRouter(dependencies=[Security(bearer)], responses=_errors(401))

    @app.get("/healthz", response_model=Health, tags=["health"])
    def healthz() -> Health:
        """The process is up (no database involved)."""
        return Health()

    @app.get("/readyz", response_model=Health, tags=["health"], responses=_errors(503))
    def readyz() -> Health:
        """The status database is reachable and at this version's schema."""
        _check_database(store)
        return Health()

    @data.post(
        "/jobs",
        status_code=202,
        response_model=Job,
        responses=_errors(408, 409, 413, 422),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/SignupEvent"},
                        "example": SIGNUP_EVENT_EXAMPLE,
                    }
                },
            }
        },
    )
    def create_job(
        body: Annotated[object, Depends(_json_body)],
        response: Response,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Job:
        """Enqueue a signup event (see the README's "Signup events")."""
        try:
            if idempotency_key is not None:
                # Both normalised alike (trimmed; 42 and "42" are one key) before comparing.
                check_strings(idempotency_key, "Idempotency-Key")
                header_key = parse_key(idempotency_key)
                if isinstance(body, dict):
                    body_key = parse_key(body.get("id"))
                    if body_key is not None and body_key != header_key:
                        raise ApiError(
                            422, "key_mismatch", "Idempotency-Key and body id differ", "id"
                        )
                    body = {**body, "id": header_key}
            parsed = parse_event(body, accounts=accounts)
        except InvalidRequestError as exc:
            raise ApiError(422, "validation_error", exc.message, exc.field) from None
        try:
            result = store.enqueue(
                parsed.request, key=parsed.key, priority=parsed.priority or Priority.interactive
            )
        except IdempotencyConflictError as exc:
            raise ApiError(409, "idempotency_key_reused", str(exc), "id") from None
        _accepted(response, result.job.id)
        return view.job_view(result.job)

    # The literal /jobs/retry and /jobs/cancel are declared before /jobs/{ref}/… routes.
    @data.post(
        "/jobs/retry",
        status_code=202,
        response_model=Changed,
        responses=_errors(408, 413, 422),
    )
    def retry_matching(where: JobFilterBody) -> Changed:
        """Queue again every failed job the filter matches (each resumes from its checkpoint)."""
        return Changed.of(actions.act_on_matching(store, "retry", _filter(where)).ids)

    @data.post("/jobs/cancel", response_model=Changed, responses=_errors(408, 413, 422))
    def cancel_matching(where: JobFilterBody) -> Changed:
        """Withdraw every queued or waiting job the filter matches."""
        return Changed.of(actions.act_on_matching(store, "cancel", _filter(where)).ids)

    @data.get("/jobs/{ref}", response_model=Job, responses=_errors(404))
    def get_job(ref: str, response: Response) -> Job:
        """One job, by id or idempotency key."""
        job = store.find(ref)
        if job is None:
            raise ApiError(404, "not_found", f"no job {ref!r}")
        if not job.status.done:
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return view.job_view(job)

    @data.get("/jobs", response_model=JobPage, responses=_errors(422))
    def list_jobs(
        batch_id: str | None = None,
        status: str | None = None,
        domain: str | None = None,
        account: str | None = None,
        code: str | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """Jobs by batch, status, domain, account and/or error code, oldest first; pass
        ``next_cursor`` back as ``cursor``."""
        values = {"batch_id": batch_id, "status": status, "domain": domain}
        where = _parsed(lambda: parse_filter({**values, "account": account, "code": code}))
        jobs = store.list_jobs(where, limit=limit, after=_parsed(lambda: cursors.decode(cursor)))
        last = jobs[-1] if len(jobs) == limit else None
        return JobPage(
            jobs=[view.job_view(job) for job in jobs],
            next_cursor=cursors.encode((last.created_at, last.id)) if last else None,
        )

    @data.get("/batches/{batch_id}", response_model=Batch, responses=_errors(404))
    def get_batch(batch_id: str) -> Batch:
        """How many jobs of the batch are in each status, and the failures with their reasons."""
        summary = store.batch_summary(batch_id)
        if summary.total == 0:
            raise ApiError(404, "not_found", f"no batch {batch_id!r}")
        eta = reporter.batch_eta(batch_id) if reporter is not None else None
        return view.batch_view(summary, eta)

    @data.get("/quota", response_model=list[Quota], responses=_errors(404))
    def get_quota() -> list[Quota]:
        """Each quota: calls used and remaining per window, when each resets, jobs waiting."""
        if reporter is None:
            raise ApiError(404, "not_found", "this service was started without quota reporting")
        return [Quota.model_validate(quota) for quota in reporter.quotas()]

    @data.post(
        "/jobs/{ref}/retry",
        status_code=202,
        response_model=Job,
        responses=_errors(404, 409),
    )
    def retry_job(ref: str, response: Response) -> Job:
        """Queue a failed job again (it resumes from its last checkpoint); by id or key."""
        job = _act(store, "retry", ref)
        _accepted(response, job.id)
        return view.job_view(job)

    @data.post("/jobs/{ref}/cancel", response_model=Job, responses=_errors(404, 409))
    def cancel_job(ref: str) -> Job:
        """Withdraw a queued or waiting job; by id or key."""
        return view.job_view(_act(store, "cancel", ref))

    @data.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
    )
    def get_metrics() -> Response:
        """Prometheus metrics of this host's provisioner processes."""
        content, content_type = metrics.exposition()
        return Response(content, media_type=content_type)

    app.include_router(data)
    # The dashboard (/ui) signs its users in with a session cookie; _Gate lets its paths through.
    app.include_router(dashboard.router(store, token=token, reporter=reporter, accounts=accounts))
    return app


# -- request handling --------------------------------------------------------------------------


class _Gate:
    """ASGI middleware in front of every route: checks the bearer token from the headers before
    any of the body is read, then takes the body whole, refusing one over ``MAX_BODY_BYTES``
    (by its Content-Length, else once that much has streamed in) without reading the rest, and
    one that takes longer than ``body_timeout`` to arrive."""

    def __init__(self, app: ASGIApp, *, expected: bytes, body_timeout: float) -> None:
        self.app, self.expected, self.body_timeout = app, expected, body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        # The dashboard's paths check its own session cookie (provision.dashboard.auth).
        public = scope["path"] in PUBLIC_PATHS or dashboard.owns(scope["path"])
        if self.expected and not public:
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), self.expected
            ):
                await ApiError(
                    401,
                    "unauthorized",
                    "missing or wrong bearer token",
                    headers={"WWW-Authenticate": "Bearer"},
                ).response()(scope, receive, send)
                return
        too_large = ApiError(
            413,
            "body_too_large",
            f"the body is over {MAX_BODY_BYTES} bytes",
            headers={"Connection": "close"},
        )
        length = headers.get("content-length", "")
        # isascii: "²".isdigit() is true too, and int("²") raises.
        if length.isascii() and length.isdigit() and int(length) > MAX_BODY_BYTES:
            await too_large.response()(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        deadline = asyncio.get_running_loop().time() + self.body_timeout
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                await ApiError(
                    408,
                    "request_timeout",
                    f"the body did not arrive within {self.body_timeout:g} s",
                    headers={"Connection": "close"},
                ).response()(scope, receive, send)
                return
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > MAX_BODY_BYTES:
                await too_large.response()(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands over the body already read, then the client's later messages."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _json_body(request: Request) -> object:
    """The body as JSON (any value; ``parse_event`` says what is wrong with it)."""
    try:
        return json.loads(await request.body())
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad UTF-8 and integers too long to convert as well as bad JSON.
        raise ApiError(422, "validation_error", f"the body is not JSON: {exc}") from None


def _handle_errors(app: FastAPI) -> None:
    """Answer every error, whoever raises it, with the one error body."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's, for a body that json.loads refuses otherwise than as a JSONDecodeError
            # (bytes that are not UTF-8, nesting too deep, an integer too long): 422 like any
            # other body that is not JSON (``_json_body``, ``invalid_request``).
            return ApiError(422, "validation_error", "the body is not JSON").response()
        # Starlette's own: unknown route (404), method not allowed (405).
        codes = {404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status_code, "http_error")
        message = f"no route {request.url.path}" if exc.status_code == 404 else str(exc.detail)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette's Allow names the methods of one route only; /jobs is two (GET, POST).
            headers["Allow"] = _allowed_methods(app, request.url.path) or headers.get("Allow", "")
        return ApiError(exc.status_code, code, message, headers=headers).response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":
            return ApiError(422, "validation_error", "the body is not JSON").response()
        where, *path = first.get("loc", ()) or ("body",)
        field = _field_name(path)
        message = f"{where} {field}: {first['msg']}" if field else f"{where}: {first['msg']}"
        return ApiError(422, "validation_error", message, field).response()

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        return ApiError(500, "internal_error", "internal error").response()


def _allowed_methods(app: FastAPI, path: str) -> str | None:
    """The methods of the first documented path ``path`` falls under (the route that routing
    tries first: ``/jobs/retry`` is not ``/jobs/{ref}``), None if it is undocumented."""
    for template, operations in app.openapi()["paths"].items():
        if compile_path(template)[0].match(path):
            return ", ".join(sorted(method.upper() for method in operations))
    return None


def _field_name(path: list[Any]) -> str | None:
    """``["goals", 1, "event_name"]`` as ``goals[1].event_name``, the events' convention."""
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else f".{part}" if name else str(part)
    return name or None


# -- helpers -----------------------------------------------------------------------------------


def _check_database(store: JobStore) -> None:
    """Raise a 503 ApiError unless the status database is reachable and at the schema head."""
    engine = store.engine
    path = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
    if path and path != ":memory:" and not Path(path).exists():
        # Connecting would create an empty file; say it is missing instead.
        raise ApiError(503, "database_unreachable", f"no status database at {path}")
    try:
        with engine.connect() as connection:
            current = db.current_revision(connection)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise ApiError(
            503, "database_unreachable", f"cannot open the status database ({reason})"
        ) from None
    head = _head_revision()
    if current != head:
        raise ApiError(
            503,
            "schema_behind",
            f"the status database is at schema revision {current or '(empty)'}, this version "
            f"needs {head}: run `provision db upgrade`",
        )


#: The migrations on disk do not change while the process runs.
_head_revision = functools.cache(db.head_revision)


def _accepted(response: Response, job_id: str) -> None:
    response.headers["Location"] = f"/jobs/{job_id}"
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)


def _act(store: JobStore, action: str, ref: str) -> ProvisioningJob:
    try:
        return actions.act_on_job(store, action, ref)
    except actions.JobNotFoundError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except actions.WrongStatusError as exc:
        raise ApiError(409, "wrong_status", str(exc)) from None


def _parsed(parse: Callable[[], T]) -> T:
    """``parse()``, its InvalidRequestError answered 422 naming the field (``bad_cursor`` for a
    cursor, ``empty_filter`` for a filter without a field)."""
    try:
        return parse()
    except EmptyFilterError as exc:
        raise ApiError(422, "empty_filter", exc.message) from None
    except InvalidRequestError as exc:
        code = "bad_cursor" if exc.field == "cursor" else "validation_error"
        raise ApiError(422, code, exc.message, exc.field) from None


def _filter(body: JobFilterBody) -> JobFilter:
    return _parsed(lambda: parse_filter(body.model_dump(), required=True))

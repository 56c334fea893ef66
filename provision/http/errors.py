"""The service's one error body: ``ApiError`` (an error answer) and the exception handlers that
answer every error, whoever raises it (a route, FastAPI's validation, Starlette's routing, a
crash), with ``{"error": {"code", "message", "field"}}``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from provisioner_types import ErrorBody, ErrorDetail


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


def handle_errors(app: FastAPI) -> None:
    """Answer every error, whoever raises it, with the one error body."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's, for a body that json.loads refuses otherwise than as a JSONDecodeError
            # (bytes that are not UTF-8, nesting too deep, an integer too long): 422 like any
            # other body that is not JSON (``routes.json_body``, ``invalid_request``).
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

"""``Gate``, the ASGI middleware in front of every route: the bearer token, checked from the
headers before any of the body is read and resolved to the principal the request acts as
(``provision.tokens``), then the body, taken whole within a size cap and a time limit, so that
neither an unauthenticated client nor a slow or oversized body reaches a route."""

from __future__ import annotations

import asyncio

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from provision import dashboard
from provision.http.errors import ApiError
from provision.tokens import OPEN, Principal, Tokens

#: Larger request bodies are refused (413) unread; a signup event is a few kilobytes.
MAX_BODY_BYTES = 1024 * 1024
#: A client that has not sent its whole body by then is answered 408 and let go, so slow or
#: stalled clients cannot hold the service's connections.
BODY_TIMEOUT_SECONDS = 10.0
#: Served without the token: they hold no data.
PUBLIC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json", "/healthz", "/readyz"})


#: Where the gate leaves the principal for the routes (``request.state.principal``).
PRINCIPAL = "principal"


class Gate:
    """Checks the bearer token from the headers before any of the body is read (no token
    configured: development mode, open) and leaves its principal in the request's state, then
    takes the body whole, refusing one over ``MAX_BODY_BYTES`` (by its Content-Length, else once
    that much has streamed in) without reading the rest, and one that takes longer than
    ``body_timeout`` to arrive. A GET or HEAD without Content-Length or Transfer-Encoding has
    no body to take."""

    def __init__(self, app: ASGIApp, *, tokens: Tokens, body_timeout: float) -> None:
        self.app, self.tokens, self.body_timeout = app, tokens, body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        # A GET with neither header has no body (RFC 9112, 6.3; our GETs read none anyway):
        # nothing to wait for, and the app reads the server's message itself (a job's poll).
        framed = (
            scope["method"] not in ("GET", "HEAD")
            or "content-length" in headers
            or "transfer-encoding" in headers
        )
        try:
            principal = self._check_token(scope["path"], headers)
            body = await self._read_body(headers, receive) if framed else b""
        except ApiError as refused:
            await refused.response()(scope, receive, send)
            return
        if body is None:
            return  # the client went away
        if principal is not None:
            scope.setdefault("state", {})[PRINCIPAL] = principal
        await self.app(scope, _replay(body, receive) if framed else receive, send)

    def _check_token(self, path: str, headers: Headers) -> Principal | None:
        """The principal of the request's bearer token (None on a public path); a 401 ApiError
        unless the path is public or the request bears one of the tokens."""
        # The dashboard's paths check its own session cookie (provision.dashboard.auth).
        if path in PUBLIC_PATHS or dashboard.owns(path):
            return None
        if self.tokens.open:
            return OPEN
        scheme, _, given = headers.get("authorization", "").partition(" ")
        principal = self.tokens.resolve(given) if scheme.lower() == "bearer" else None
        if principal is None:
            raise ApiError(
                401,
                "unauthorized",
                "missing or wrong bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return principal

    async def _read_body(self, headers: Headers, receive: Receive) -> bytes | None:
        """The whole body; None if the client went away first. Raises a 413 or 408 ApiError."""
        length = headers.get("content-length", "")
        # isascii: "²".isdigit() is true too, and int("²") raises.
        if length.isascii() and length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise _too_large()
        chunks: list[bytes] = []
        size = 0
        deadline = asyncio.get_running_loop().time() + self.body_timeout
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise ApiError(
                    408,
                    "request_timeout",
                    f"the body did not arrive within {self.body_timeout:g} s",
                    headers={"Connection": "close"},
                ) from None
            if message["type"] != "http.request":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > MAX_BODY_BYTES:
                raise _too_large()
            if not message.get("more_body", False):
                return b"".join(chunks)


def _too_large() -> ApiError:
    return ApiError(
        413,
        "body_too_large",
        f"the body is over {MAX_BODY_BYTES} bytes",
        headers={"Connection": "close"},
    )


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

"""One request on the wire: the gate asked first, the body read within a total deadline, the
outcome counted, timed and logged, and a network failure turned into
``PlausibleConnectionError`` without the httpx exception (it holds the request, key included)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, TypeVar

import httpx

from worker import metrics
from worker.errors import PermanentError, PlausibleConnectionError, PlausibleError
from worker.plausible.responses import Malformed, error_from_response, page_parser

# The package's name, not this module's: one logger for the client, whatever module logs.
logger = logging.getLogger("worker.plausible")

_T = TypeVar("_T")


class RequestGate(Protocol):
    """Asked before every request a bound client sends, and told how each one ended."""

    def before_request(self) -> None:
        """Return to let the request go; raise to stop it before anything is sent."""

    def after_response(self, error: PlausibleError | None) -> None:
        """The request ended: None for a 200, else the error it raised."""


class Wire:
    """The connection pool and the plumbing under :class:`~worker.plausible.PlausibleClient`.

    Holds the API key (in the pool's headers, and to redact it from transport errors); its
    repr shows the base URL only."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        connect_timeout: float,
        read_timeout: float,
        transport: httpx.BaseTransport | None,
        total_timeout: float,
        hour_seconds: float,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
    ) -> None:
        self.gate: RequestGate | None = None
        self._base_url = base_url
        self._api_key = api_key
        self._hour_seconds = hour_seconds
        self._clock = clock
        self._monotonic = monotonic
        # httpx bounds each socket operation, not a whole request: a server trickling its body
        # could hold a call indefinitely. This bounds the body; the head is one read.
        self._total_timeout = total_timeout
        self._http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=httpx.Timeout(
                connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
            ),
            transport=transport,
            # Plausible never redirects the API; following one could replay the key elsewhere.
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"Wire(base_url={self._base_url!r})"

    def using(self, gate: RequestGate | None) -> Wire:
        """This wire with every request passing ``gate`` first, on the same connection pool."""
        bound = copy.copy(self)
        bound.gate = gate
        return bound

    def close(self) -> None:
        self._http.close()

    def paginate(
        self,
        path: str,
        key: str,
        parse: Callable[[Any], _T],
        params: Mapping[str, Any],
        page_size: int,
    ) -> Iterator[_T]:
        """Follow ``meta.after`` cursors until it is null, one request per page, on demand."""
        query: dict[str, Any] = {**params, "limit": page_size}
        seen: set[str] = set()
        while True:
            # Paginated routes have no path parameters: the path is the route.
            items, after = self.call("GET", path, page_parser(key, parse), route=path, params=query)
            yield from items
            if after is None:
                return
            if after in seen:  # a server bug must not turn into an endless loop of requests
                raise PermanentError(
                    f"GET {path}: pagination cursor repeated",
                    status=200,
                    code="unexpected_response",
                )
            seen.add(after)
            query["after"] = after

    def call(
        self,
        method: str,
        path: str,
        parse: Callable[[Any], _T],
        *,
        route: str,
        params: Mapping[str, Any] | None = None,
        json_body: Mapping[str, Any] | None = None,
    ) -> _T:
        """Send one request; return the parsed 200 body or raise the mapped error.

        ``route`` is the path's template (``/api/v1/sites/:site_id``): metrics are labelled
        with it, never with a domain."""
        gate = self.gate
        if gate is not None:
            gate.before_request()
        try:
            response = self._send(method, path, route=route, params=params, json_body=json_body)
        except PlausibleConnectionError as exc:
            if gate is not None:
                gate.after_response(exc)
            raise
        if response.status_code != 200:
            error = error_from_response(
                response,
                now=self._clock(),
                hour_seconds=self._hour_seconds,
                base_url=self._base_url,
            )
            if gate is not None:
                gate.after_response(error)
            raise error
        if gate is not None:
            gate.after_response(None)
        try:
            return parse(response.json())
        except (Malformed, ValueError, RecursionError) as exc:
            # Chaining is safe here (neither exception holds the request), and keeps the detail.
            raise PermanentError(
                f"{method} {path}: unexpected response body: {exc}",
                status=response.status_code,
                code="unexpected_response",
            ) from exc

    def _send(
        self,
        method: str,
        path: str,
        *,
        route: str,
        params: Mapping[str, Any] | None,
        json_body: Mapping[str, Any] | None,
    ) -> httpx.Response:
        request = self._http.build_request(method, path, params=params, json=json_body)
        shown = request.url.raw_path.decode("ascii")
        started = self._monotonic()
        failure: PlausibleConnectionError | None = None
        try:
            response = self._receive(request, deadline=started + self._total_timeout)
        except httpx.RequestError as exc:
            failure = self._connection_error(method, shown, exc)
        except _DeadlineExceeded:
            failure = PlausibleConnectionError(
                f"{method} {shown}: no complete response within {self._total_timeout:g}s",
                status=None,
                code="timeout",
            )
        elapsed = self._monotonic() - started
        elapsed_ms = elapsed * 1000
        labelled = f"{method} {route}"
        metrics.API_REQUEST_SECONDS.labels(labelled).observe(elapsed)
        outcome = failure.code if failure is not None else str(response.status_code)
        metrics.API_REQUESTS.labels(labelled, outcome).inc()
        if failure is not None:
            logger.debug("%s %s -> %s in %.1f ms", method, shown, failure.code, elapsed_ms)
            # Raised outside the except block on purpose: the httpx exception carries the request
            # (and its Authorization header), so it must not end up as __cause__ or __context__.
            raise failure
        logger.debug("%s %s -> %d in %.1f ms", method, shown, response.status_code, elapsed_ms)
        return response

    def _receive(self, request: httpx.Request, *, deadline: float) -> httpx.Response:
        """Send ``request`` and read its body, giving up once ``deadline`` has passed."""
        response = self._http.send(request, stream=True)
        try:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if self._monotonic() > deadline:
                    raise _DeadlineExceeded
        finally:
            response.close()
        # The body is decoded already: the copy must not claim an encoding or the old length.
        headers = response.headers.copy()
        for name in ("content-encoding", "content-length"):
            headers.pop(name, None)
        return httpx.Response(
            response.status_code, headers=headers, content=bytes(body), request=request
        )

    def _connection_error(
        self, method: str, path: str, exc: httpx.RequestError
    ) -> PlausibleConnectionError:
        code = "timeout" if isinstance(exc, httpx.TimeoutException) else "network_error"
        detail = str(exc).replace(self._api_key, "[redacted]")
        return PlausibleConnectionError(
            f"{method} {path}: {type(exc).__name__}: {detail}", status=None, code=code
        )


class _DeadlineExceeded(Exception):
    """The response did not complete within the client's total timeout."""

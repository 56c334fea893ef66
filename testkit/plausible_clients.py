"""Talking to Plausible through ``PlausibleClient`` in tests: a ``Box`` of clients on the sandbox
(fixtures ``box`` and ``api`` in ``testkit.plugin``), requests edited on their way out, the
expected error, and the check that an API key leaked nowhere."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from testkit.sandbox_process import SandboxProcess
from worker.errors import PlausibleError
from worker.plausible import PlausibleClient

#: A key for canned responses and unreachable servers; never a sandbox key.
SECRET = "sk-unit-Zx9QmR2vT7pL4wK8"


def sent_json(request: httpx.Request) -> Any:
    return json.loads(request.content)


def texts_of(error: BaseException) -> Iterator[str]:
    """Every rendering of an error and of everything chained to it, request headers included."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield repr(vars(current))
        request = getattr(current, "_request", None)
        if request is not None:
            yield repr(dict(request.headers))
        current = current.__cause__ or current.__context__


def assert_no_secret(
    secret: str, records: list[logging.LogRecord], errors: list[BaseException]
) -> None:
    """The key appears in no log record (message or args) and in no error or its chain."""
    assert records, "expected log records to inspect"
    for record in records:
        assert secret not in record.getMessage(), record.name
        assert secret not in repr(record.args), record.name
    for error in errors:
        for text in texts_of(error):
            assert secret not in text


class Rewrite(httpx.BaseTransport):
    """Real HTTP with the request edited on its way out.

    The typed client cannot send some malformed requests (no auth header, a missing required
    field, a non-numeric goal id); this lets the tests still get the server's real answer for
    them through the client's own mapping.
    """

    def __init__(self, edit: Callable[[httpx.Request], httpx.Request]) -> None:
        self._inner = httpx.HTTPTransport()
        self._edit = edit

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._inner.handle_request(self._edit(request))

    def close(self) -> None:
        self._inner.close()


def drop_auth(request: httpx.Request) -> httpx.Request:
    del request.headers["authorization"]
    return request


def edit_json(**changes: Any) -> Callable[[httpx.Request], httpx.Request]:
    """Set fields of the JSON body; a value of ``...`` removes the field."""

    def edit(request: httpx.Request) -> httpx.Request:
        body = {**sent_json(request), **changes}
        body = {k: v for k, v in body.items() if v is not ...}
        headers = {k: v for k, v in request.headers.items() if k != "content-length"}
        return httpx.Request(request.method, request.url, headers=headers, json=body)

    return edit


def edit_path(old: str, new: str) -> Callable[[httpx.Request], httpx.Request]:
    def edit(request: httpx.Request) -> httpx.Request:
        url = request.url.copy_with(path=request.url.path.replace(old, new))
        return httpx.Request(request.method, url, headers=request.headers)

    return edit


class Box:
    """Clients on the sandbox, closed at teardown; teams and keys made on demand."""

    def __init__(self, sandbox: SandboxProcess) -> None:
        self.sandbox = sandbox
        self._clients: list[PlausibleClient] = []
        self._keys = 0

    def client(self, key: str | None = None, **kwargs: Any) -> PlausibleClient:
        made = PlausibleClient(
            base_url=self.sandbox.base_url, api_key=key or self.sandbox.api_key, **kwargs
        )
        self._clients.append(made)
        return made

    def rewriting(self, edit: Callable[[httpx.Request], httpx.Request]) -> PlausibleClient:
        return self.client(transport=Rewrite(edit))

    def key(self, *, team: str | None = None, role: str = "owner", **team_options: Any) -> str:
        """A fresh Sites API key; a new team is made when ``team_options`` are given."""
        self._keys += 1
        key = f"box-key-{self._keys}"
        if team is None and team_options:
            team = self.sandbox.add_team(name=f"team {self._keys}", **team_options)["id"]
        self.sandbox.add_key(key=key, role=role, **({"team": team} if team else {}))
        return key

    def close(self) -> None:
        for made in self._clients:
            made.close()


def expect_error(
    call: Callable[[], object], cls: type[PlausibleError], code: str, message: str, status: int
) -> PlausibleError:
    """The call fails with exactly this class, code, status and server message."""
    with pytest.raises(PlausibleError) as info:
        call()
    error = info.value
    assert (type(error), error.code, error.status, error.message) == (cls, code, status, message)
    return error

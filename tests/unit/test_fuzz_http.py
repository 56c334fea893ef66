"""Fuzzing the HTTP service: arbitrary bodies, content types and headers to ``POST /jobs``, any
method on any path, then schemathesis against the service's own OpenAPI document.

The properties: no request gets a 5xx; every 4xx is the one error body
``{"error": {"code", "message", "field"}}``; without the token it is 401 whatever the body; and a
valid event sent after any junk is still accepted (202). Settings as in ``testkit.strategies``
(derandomized under ``CI``; ``FUZZ_SCALE`` multiplies the budgets).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from schemathesis.config import SchemathesisConfig

from provision.http.app import create_app
from provision.http.gate import MAX_BODY_BYTES
from testkit.databases import migrated_engine
from testkit.events import event
from testkit.service_api import AUTH, TOKEN
from testkit.strategies import (
    CI,
    EVENT_LIKE,
    JSONISH,
    SCALE,
    TRICKY_LATIN1,
    fuzz,
    spliced,
)
from worker.jobs.db import make_engine, upgrade
from worker.jobs.store import JobStore

#: Every status the service documents (provision/http/openapi.py ``DESCRIBED``), 5xx aside.
DOCUMENTED = {200, 202, 401, 404, 405, 408, 409, 413, 422}
_runs = itertools.count()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> JobStore:
    path = tmp_path_factory.mktemp("fuzz-http") / "web.db"
    return JobStore(migrated_engine(f"sqlite:///{path}"))


@pytest.fixture(scope="module")
def client(store: JobStore) -> Iterator[TestClient]:
    # Server exceptions are raised in the test (with their traceback) as well as answered 500.
    with TestClient(create_app(store, token=SecretStr(TOKEN))) as client:
        yield client


def assert_error_shape(response: httpx.Response) -> dict[str, Any]:
    """The one error body, and nothing else (as ``testkit.service_api.assert_error``, for any status and code)."""
    assert response.headers["content-type"] == "application/json", response.headers
    body = response.json()
    assert list(body) == ["error"], body
    assert sorted(body["error"]) == ["code", "field", "message"], body
    detail: dict[str, Any] = body["error"]
    assert isinstance(detail["code"], str)
    assert detail["code"]
    assert isinstance(detail["message"], str)
    assert detail["message"]
    assert detail["field"] is None or isinstance(detail["field"], str)
    return detail


def assert_valid_event_accepted(client: TestClient) -> None:
    """A neighbour: a fresh valid event right after the junk is still accepted."""
    run = next(_runs)
    data = event(run, id=f"http{run}", domain=f"http{run}.example.com")
    response = client.post("/jobs", json=data, headers=AUTH)
    assert response.status_code == 202, response.text
    assert response.json()["idempotency_key"] == f"http{run}"


# -- strategies --------------------------------------------------------------------------------

VALID_BODY = json.dumps(event(1, id="fuzz-http-1", domain="fuzz-http-1.example.com")).encode()


def _json(value: object) -> bytes:
    return json.dumps(value).encode("utf-8", "surrogatepass")


BODIES = st.one_of(
    st.binary(max_size=300),
    JSONISH.map(_json),
    EVENT_LIKE.map(_json),
    st.integers(0, len(VALID_BODY) - 1).map(lambda n: VALID_BODY[:n]),  # truncated JSON
    st.integers(1, 100_000).map(lambda d: ("[" * d + "]" * d).encode()),  # deep nesting
    st.integers(1, 100_000).map(lambda d: ("[" * d).encode()),  # deep and truncated
    st.integers(300, 6000).map(
        lambda d: f'{{"id": {"9" * d}, "domain": "a.example.com"}}'.encode()
    ),
    st.sampled_from(
        [
            b"",
            b"null",
            b"NaN",
            b'"\\ud800"',
            b'{"domain": "a\\u0000.example.com"}',
            b'{"\\u0000": 1, "domain": "a.example.com"}',
            b'{"domain": 1e999}',
            b"domain=a.example.com",
            b"<html><body>hi</body></html>",
            VALID_BODY.decode().encode("utf-16"),
            b"\xef\xbb\xbf" + VALID_BODY,
        ]
    ),
)
CONTENT_TYPES = st.one_of(
    st.sampled_from(
        [
            b"application/json",
            b"application/json; charset=utf-16",
            b"application/json; charset=no-such-codec",
            b"text/plain",
            b"application/x-www-form-urlencoded",
            b"multipart/form-data; boundary=x",
            b"",
        ]
    ),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40).map(
        lambda t: t.encode("latin-1")
    ),
)
#: Header values as a client may send them: any latin-1 text, tricky tokens spliced into numbers.
HEADER_VALUES = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40),
    st.integers(0, 2 * MAX_BODY_BYTES).flatmap(lambda n: spliced(str(n), TRICKY_LATIN1)),
    st.integers(0, 10**30).map(str),
    st.sampled_from(["", " ", "-1", "1e9", "0x10", "evt_1", " evt_1 ", "42"]),
).map(lambda t: t.encode("latin-1"))
HEADERS = st.dictionaries(
    st.sampled_from(
        [
            b"idempotency-key",
            b"content-length",
            b"content-encoding",
            b"transfer-encoding",
            b"expect",
            b"accept",
            b"accept-encoding",
            b"x-request-id",
            b"cookie",
        ]
    ),
    HEADER_VALUES,
    max_size=4,
)
_INSIDE = st.integers(1, len(TOKEN) - 1)
#: Authorization headers that must be refused: none, other schemes, near-miss tokens.
REFUSED_AUTH = st.one_of(
    st.sampled_from(
        [
            None,
            "",
            "Bearer",
            "Bearer ",
            "Bearer wrong",
            f"Basic {TOKEN}",
            TOKEN,
            f"Bearer\t{TOKEN}",
            f"Bearer {TOKEN}x",
            f"Bearer {TOKEN[:-1]}",
            f"Bearer {TOKEN.upper()}",
        ]
    ),
    st.tuples(_INSIDE, st.characters(min_codepoint=0x20, max_codepoint=0xFF)).map(
        lambda p: f"Bearer {TOKEN[: p[0]]}{p[1]}{TOKEN[p[0] :]}"
    ),
)
#: Accepted: the scheme is case-insensitive and the token may be padded.
ACCEPTED_AUTH = st.sampled_from([f"Bearer {TOKEN}", f"bearer {TOKEN}", f"Bearer  {TOKEN} "])


def _refused(auth: str | None) -> bool:
    """Whether the gate must refuse this Authorization header (the test's own reading of it)."""
    return auth is None or not auth.lower().startswith("bearer ") or auth.split()[-1] != TOKEN


def _headers(
    auth: str | None, content_type: bytes | None, extra: dict[bytes, bytes]
) -> list[tuple[bytes, bytes]]:
    headers = list(extra.items())
    if content_type is not None:
        headers.append((b"content-type", content_type))
    if auth is not None:
        headers.append((b"authorization", auth.encode("latin-1")))
    return headers


# -- POST /jobs ----------------------------------------------------------------------------------


@fuzz(300)
@given(
    body=BODIES,
    content_type=st.none() | CONTENT_TYPES,
    extra=HEADERS,
    auth=st.one_of(ACCEPTED_AUTH, REFUSED_AUTH),
)
@example(body=b"x" * (MAX_BODY_BYTES + 1), content_type=None, extra={}, auth=f"Bearer {TOKEN}")
def test_post_jobs_never_answers_5xx_and_every_error_has_the_one_shape(
    client: TestClient,
    body: bytes,
    content_type: bytes | None,
    extra: dict[bytes, bytes],
    auth: str | None,
) -> None:
    response = client.post("/jobs", content=body, headers=_headers(auth, content_type, extra))
    assert response.status_code < 500, response.text
    assert response.status_code in DOCUMENTED, response.text
    if _refused(auth):
        assert response.status_code == 401, (auth, response.text)
        assert response.headers["WWW-Authenticate"] == "Bearer"
    else:
        assert response.status_code != 401, (auth, response.text)
    if response.status_code >= 400:
        assert_error_shape(response)
    else:
        assert response.status_code == 202, response.text
        assert response.headers["Location"] == f"/jobs/{response.json()['id']}"
    assert_valid_event_accepted(client)


@fuzz(150)
@given(
    body=BODIES,
    content_type=st.none() | CONTENT_TYPES,
    extra=HEADERS,
    auth=REFUSED_AUTH,
)
def test_without_the_token_it_is_401_whatever_the_body(
    client: TestClient,
    body: bytes,
    content_type: bytes | None,
    extra: dict[bytes, bytes],
    auth: str | None,
) -> None:
    response = client.post("/jobs", content=body, headers=_headers(auth, content_type, extra))
    assert response.status_code == 401, response.text
    assert assert_error_shape(response)["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"] == "Bearer"


# -- raw ASGI: headers exactly as a server hands them over ------------------------------------------


async def _asgi(
    app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], chunks: list[bytes]
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """One request straight to the ASGI app (no client to tidy the headers): status, headers,
    body. The body comes in ``chunks`` (one ``http.request`` message each)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks or [b""])
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], start["headers"], body


HEADER_NAMES = st.one_of(
    st.sampled_from(
        [b"content-length", b"content-type", b"idempotency-key", b"authorization", b"host"]
    ),
    st.binary(min_size=1, max_size=20).map(bytes.lower),
)


@fuzz(300)
@given(
    headers=st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=8),
    auth=st.one_of(ACCEPTED_AUTH, REFUSED_AUTH),
    chunks=st.lists(BODIES, max_size=3),
)
@example(  # found: Content-Length "²" passed isdigit() and int() raised: a 500 from the gate
    headers=[(b"content-length", b"\xb2")], auth=f"Bearer {TOKEN}", chunks=[VALID_BODY]
)
@example(headers=[(b"content-length", b"99999999999999999999")], auth=None, chunks=[b"{}"])
def test_any_headers_straight_from_the_server_never_get_a_5xx(
    client: TestClient, headers: list[tuple[bytes, bytes]], auth: str | None, chunks: list[bytes]
) -> None:
    headers = [h for h in headers if h[0] != b"authorization"]
    if auth is not None:
        headers.append((b"authorization", auth.encode("latin-1")))
    status, _, body = asyncio.run(_asgi(client.app, "POST", "/jobs", headers, chunks))
    assert status < 500, body
    assert status in DOCUMENTED, body
    if status >= 400:
        detail = json.loads(body)["error"]
        assert sorted(detail) == ["code", "field", "message"], body
    if _refused(auth):
        assert status == 401, body
    assert_valid_event_accepted(client)


# -- any method, any path --------------------------------------------------------------------------

#: Any text, percent-encoded (the service sees it decoded: control characters, "/", "%" and all).
SEGMENTS = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=20).map(
    lambda s: quote(s, safe="")
)
PATHS = st.one_of(
    st.sampled_from(["/jobs", "/jobs/retry", "/jobs/cancel", "/quota", "/metrics", "/healthz"]),
    SEGMENTS.map(lambda s: f"/jobs/{s}"),
    SEGMENTS.map(lambda s: f"/jobs/{s}/retry"),
    SEGMENTS.map(lambda s: f"/jobs/{s}/cancel"),
    SEGMENTS.map(lambda s: f"/batches/{s}"),
    SEGMENTS.map(lambda s: f"/{s}"),
)
QUERIES = st.dictionaries(
    st.sampled_from(["batch_id", "status", "domain", "account", "code", "limit", "cursor", "x"]),
    st.one_of(
        st.text(st.characters(exclude_categories=("Cs",)), max_size=20),
        st.sampled_from(["queued", "0", "-1", "501", "50", "not-base64", "MjAyNXxqb2I=", "Zm9v"]),
    ),
    max_size=4,
)


@fuzz(300)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]),
    path=PATHS,
    query=QUERIES,
    body=st.none() | BODIES,
    content_type=st.none() | CONTENT_TYPES,
)
@example(method="GET", path="/jobs", query={"cursor": "fHw="}, body=None, content_type=None)
@example(method="OPTIONS", path="/jobs", query={}, body=None, content_type=None)
@example(  # found (schemathesis): a body that is not UTF-8 was FastAPI's undocumented 400
    method="POST", path="/jobs/retry", query={}, body=b"\xff", content_type=b"application/json"
)
@example(  # likewise a body nested too deeply for json.loads
    method="POST", path="/jobs/cancel", query={}, body=b"[" * 100_000, content_type=None
)
def test_any_request_gets_a_non_5xx_answer_in_the_one_error_shape(
    client: TestClient,
    method: str,
    path: str,
    query: dict[str, str],
    body: bytes | None,
    content_type: bytes | None,
) -> None:
    headers = _headers(f"Bearer {TOKEN}", content_type, {})
    response = client.request(method, path, params=query, content=body, headers=headers)
    assert response.status_code < 500, response.text
    assert response.status_code in DOCUMENTED, response.text
    if response.status_code >= 400 and method != "HEAD":
        assert_error_shape(response)
    if response.status_code == 405:
        # found (schemathesis): OPTIONS /jobs answered "Allow: POST", though GET /jobs exists
        allowed = {m.strip() for m in response.headers["Allow"].split(",")}
        assert method not in allowed
        if path == "/jobs":
            assert {"GET", "POST"} <= allowed, allowed


# -- schemathesis: every operation of the OpenAPI document ---------------------------------------


# Loaded when the module is imported: schemathesis's fixture-based loader (from_fixture) reads
# pytest's private Function._nodeid, which pytest 9 removed. Reading /openapi.json touches no
# database; the schema is migrated before the first test (``_schema_database``).
_SCHEMA_DIR = tempfile.TemporaryDirectory(prefix="fuzz-schema-")  # removed at exit
_SCHEMA_ENGINE = make_engine(f"sqlite:///{Path(_SCHEMA_DIR.name) / 'web.db'}")
schema = schemathesis.openapi.from_asgi(
    "/openapi.json",
    create_app(JobStore(_SCHEMA_ENGINE), token=SecretStr(TOKEN)),
    config=SchemathesisConfig.from_dict(
        {
            "checks": {
                # Negative cases are still sent and their answers checked (no 5xx, documented
                # status, the error shape), but the service is lenient where the schema is not:
                # a query string is text (GET /jobs?account=true is a valid string), a repeated
                # or unknown parameter is ignored (GET /jobs?=false), and so are an event's
                # fields that do not apply to its type or that no version knows (producers add
                # their own metadata).
                "negative_data_rejection": {"enabled": False},
                # The schema types the inputs; the service also applies Plausible's rules (a
                # domain, a timezone, a non-empty filter), refused as 422 in the one error shape.
                # A schema-valid request may therefore be 422, never 400/405/415/5xx.
                "positive_data_acceptance": {
                    "expected-statuses": ["2xx", "401", "404", "409", "422"]
                },
            },
        }
    ),
)


@pytest.fixture(scope="module", autouse=True)
def _schema_database() -> None:
    upgrade(_SCHEMA_ENGINE)


@schema.parametrize()
@settings(
    max_examples=25 * SCALE,
    deadline=None,
    derandomize=CI,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_conforms_to_its_schema(case: schemathesis.Case) -> None:
    """No 5xx, and every answer (status, content type, headers, body) as the schema says."""
    case.call_and_validate(headers=AUTH)

"""``producers.client``'s retry policy in detail, against ``httpx.MockTransport``: what is
retried with the same key and bytes, what is not, bounds, ``Retry-After``, ``wait()``'s holds,
and the token kept out of every message."""

from __future__ import annotations

import json
import logging
import pickle
import traceback
import uuid
from typing import Any

import anyio
import httpx
import pytest

from producers.client import (
    AsyncProvisionerClient,
    Conflict,
    ConnectionFailed,
    InvalidEvent,
    NotFound,
    ProvisionerClient,
    RateLimited,
    Retries,
    ServiceError,
    Unauthorized,
    WaitTimeout,
)
from provisioner_types import Job
from testkit.events import event
from testkit.sdk import FAST, TOKEN
from worker.jobs.states import JobStatus

# -- the retry policy, against httpx.MockTransport ----------------------------------------------


def job_json(status: str = "queued", **overrides: Any) -> dict[str, Any]:
    job = {
        "id": "job-1",
        "idempotency_key": "evt_1",
        "operation": "provision_site",
        "status": status,
        "done": status in ("succeeded", "failed", "cancelled"),
        "domain": "site1.example.com",
        "adopted": None,
        "existed": None,
        "batch_id": None,
        "goals": [],
        "shared_links": [],
        "deleted": None,
        "attempts": 0,
        "error": None,
        "next_attempt_at": None,
        "created_at": "2025-01-31T12:00:00+00:00",
        "updated_at": "2025-01-31T12:00:00+00:00",
        "finished_at": None,
    }
    return {**job, **overrides}


def error(status: int, code: str, field: str | None = None, **headers: str) -> httpx.Response:
    body = {"error": {"code": code, "message": f"{code} happened", "field": field}}
    return httpx.Response(status, json=body, headers=headers)


Answer = httpx.Response | Exception


class Scripted:
    """A MockTransport handler answering from a script, the last answer repeating; it keeps
    every request."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        # A fresh copy: one response object is not sent twice.
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    def client(self, retries: Retries | int = FAST, token: str = TOKEN) -> ProvisionerClient:
        return ProvisionerClient(
            "http://provisioner.test", token, retries=retries, transport=httpx.MockTransport(self)
        )


def accepted(**overrides: Any) -> httpx.Response:
    return httpx.Response(202, json=job_json(**overrides), headers={"Retry-After": "2"})


def test_submit_retries_5xx_429_and_408_sending_the_same_key_and_bytes_each_time() -> None:
    script = Scripted(
        error(500, "internal_error"),
        httpx.Response(502, text="<html>Bad Gateway</html>", headers={"Content-Type": "text/html"}),
        error(503, "database_unreachable"),
        error(429, "too_many", **{"Retry-After": "0"}),
        error(408, "request_timeout"),
        accepted(),
    )
    signup = event(1)
    del signup["id"]
    with script.client(retries=Retries(attempts=6, backoff_initial=0, backoff_max=0)) as client:
        job = client.submit(signup)
    assert job == Job.model_validate(job_json())
    assert len(script.requests) == 6
    keys = {request.headers["Idempotency-Key"] for request in script.requests}
    assert len(keys) == 1
    uuid.UUID(keys.pop())
    assert len({request.content for request in script.requests}) == 1
    assert json.loads(script.requests[0].content) == signup
    assert {request.headers["Authorization"] for request in script.requests} == {f"Bearer {TOKEN}"}


def test_the_key_is_the_events_id_else_one_new_key_per_submit_call() -> None:
    script = Scripted(accepted())
    with script.client() as client:
        client.submit({"domain": "a.example.com"})
        client.submit({"domain": "a.example.com"})
        client.submit({"id": " evt_9 ", "domain": "a.example.com"})
        client.submit({"id": 42, "domain": "a.example.com"})
        client.submit({"domain": "a.example.com"}, idempotency_key="mine")
        client.submit({"id": "ünïcode", "domain": "a.example.com"})
    keys = [request.headers.get("Idempotency-Key") for request in script.requests]
    assert keys[0] != keys[1]
    assert keys[2:] == ["evt_9", "42", "mine", None]  # a non-ASCII id travels in the body only
    assert json.loads(script.requests[5].content)["id"] == "ünïcode"


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (400, "bad_request", ServiceError),
        (401, "unauthorized", Unauthorized),
        (403, "forbidden", ServiceError),
        (404, "not_found", NotFound),
        (409, "idempotency_key_reused", Conflict),
        (413, "body_too_large", ServiceError),
        (422, "validation_error", InvalidEvent),
    ],
)
def test_4xx_other_than_408_and_429_is_not_retried(
    status: int, code: str, kind: type[ServiceError]
) -> None:
    script = Scripted(error(status, code, "field_x"), accepted())
    with script.client() as client, pytest.raises(kind) as raised:
        client.submit(event(1))
    assert type(raised.value) is kind
    assert (raised.value.status, raised.value.code, raised.value.field) == (status, code, "field_x")
    assert len(script.requests) == 1


def test_attempts_are_bounded_and_the_last_error_is_raised() -> None:
    script = Scripted(error(500, "internal_error"))
    with (
        script.client(retries=Retries(attempts=3, backoff_initial=0)) as client,
        pytest.raises(ServiceError) as raised,
    ):
        client.get("job-1")
    assert (raised.value.status, raised.value.code) == (500, "internal_error")
    assert len(script.requests) == 3
    with Scripted(error(429, "slow_down")).client(retries=1) as once, pytest.raises(RateLimited):
        once.get("job-1")


def test_retry_after_is_honoured(caplog: pytest.LogCaptureFixture) -> None:
    # A backoff far longer than the test could wait: only the Retry-After lets it retry now.
    slow = Retries(attempts=3, total_seconds=600, backoff_initial=300, backoff_max=300)
    script = Scripted(error(503, "busy", **{"Retry-After": "0"}), accepted())
    with caplog.at_level(logging.INFO, "producers.client"), script.client(retries=slow) as client:
        assert client.submit(event(1)).id == "job-1"
    assert len(script.requests) == 2
    assert "retry 1 in 0.00s" in caplog.text


def test_a_retry_after_past_the_time_left_ends_the_retries() -> None:
    script = Scripted(error(503, "busy", **{"Retry-After": "3600"}), accepted())
    with (
        script.client(retries=Retries(attempts=5, total_seconds=30)) as client,
        pytest.raises(ServiceError) as raised,
    ):
        client.submit(event(1))
    assert (raised.value.status, raised.value.retry_after) == (503, 3600.0)
    assert len(script.requests) == 1


def test_connection_errors_and_timeouts_are_retried_then_raise_connection_failed() -> None:
    script = Scripted(
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        accepted(),
    )
    with script.client() as client:
        assert client.submit(event(1)).id == "job-1"
    assert len(script.requests) == 4
    assert len({request.headers["Idempotency-Key"] for request in script.requests}) == 1
    down = Scripted(httpx.ConnectError("[Errno 111] Connection refused"))
    with (
        down.client(retries=Retries(attempts=2, backoff_initial=0)) as client,
        pytest.raises(ConnectionFailed) as raised,
    ):
        client.get("job-1")
    assert (raised.value.status, raised.value.code) == (None, "connection_failed")
    assert isinstance(raised.value.error, httpx.ConnectError)
    assert raised.value.__cause__ is None
    assert "Connection refused" in str(raised.value)
    assert len(down.requests) == 2


@pytest.mark.parametrize("action", ["retry", "cancel"])
def test_retry_and_cancel_are_repeated_only_when_surely_not_acted_on(action: str) -> None:
    for answer in (httpx.ReadError("reset"), httpx.ReadTimeout("slow"), error(500, "boom")):
        script = Scripted(answer, httpx.Response(200, json=job_json()))
        with script.client() as client, pytest.raises(ServiceError) as raised:
            getattr(client, action)("job-1")
        assert len(script.requests) == 1, answer
        if isinstance(raised.value, ConnectionFailed):
            assert "may have been acted on" in raised.value.message
    refused = (httpx.ConnectError("refused"), error(503, "busy"), error(429, "slow"))
    script = Scripted(*refused, httpx.Response(200, json=job_json()))
    with script.client() as client:
        assert getattr(client, action)("job-1").id == "job-1"
    assert len(script.requests) == 4
    assert script.requests[0].url.path == f"/jobs/job-1/{action}"


def test_an_answer_not_in_the_error_shape_is_unexpected_response() -> None:
    page = "<html><body><h1>404 Not Found</h1> nginx</body></html>"
    script = Scripted(httpx.Response(404, text=page, headers={"Content-Type": "text/html"}))
    with script.client() as client, pytest.raises(ServiceError) as raised:
        client.get("job-1")
    assert type(raised.value) is ServiceError  # not NotFound: the service never said so
    assert (raised.value.status, raised.value.code, raised.value.field) == (
        404,
        "unexpected_response",
        None,
    )
    assert "404 Not Found" in raised.value.message
    assert "text/html" in raised.value.message
    portal = Scripted(httpx.Response(200, text="<html>Sign in to the Wi-Fi</html>"))
    with portal.client() as client, pytest.raises(ServiceError) as raised:
        client.get("job-1")
    assert (raised.value.status, raised.value.code) == (200, "unexpected_response")
    gateway = Scripted(httpx.Response(502, text="Bad Gateway"), accepted())
    with gateway.client() as client:
        assert client.get("job-1").id == "job-1"  # a proxy's 502 is still retried


def test_the_token_never_appears_in_messages_or_reprs() -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        # A misbehaving proxy that echoes the request headers in its error page.
        # The token sits across the point where the message cuts the page short.
        echoed = f"{'x' * 180} {request.headers['Authorization']} {dict(request.headers)}"
        return httpx.Response(403, text=f"<pre>{echoed}</pre>")

    raised: list[BaseException] = []
    with ProvisionerClient(
        "http://provisioner.test", TOKEN, transport=httpx.MockTransport(echo)
    ) as client:
        assert TOKEN not in repr(client)
        with pytest.raises(ServiceError) as echoed:
            client.get("job-1")
        assert "Bearer [redac" in echoed.value.message  # no part of the token, cut or not
        assert TOKEN[:5] not in echoed.value.message
        raised.append(echoed.value)
    quoting = Scripted(error(422, "validation_error", f"Bearer {TOKEN}"))
    with quoting.client() as client, pytest.raises(InvalidEvent) as quoted:
        client.submit(event(1))
    raised.append(quoted.value)
    down = Scripted(httpx.ConnectError(f"refused {TOKEN}"))
    with down.client(retries=1) as client, pytest.raises(ConnectionFailed) as failed:
        client.get("job-1")
    raised.append(failed.value)
    for exc in raised:
        shown = str(exc) + repr(exc) + repr(exc.args) + "".join(traceback.format_exception(exc))
        assert TOKEN not in shown, type(exc)


def test_wait_polls_as_the_retry_after_says_and_times_out_with_the_last_job() -> None:
    queued = httpx.Response(200, json=job_json(), headers={"Retry-After": "0"})
    script = Scripted(queued, queued, httpx.Response(200, json=job_json("succeeded")))
    with script.client() as client:
        # interval is only for answers without Retry-After; the service's 0 s wins.
        assert client.wait("job-1", timeout=60, interval=600).status == JobStatus.succeeded
        assert len(script.requests) == 3
        with pytest.raises(WaitTimeout) as raised:
            Scripted(queued).client().wait("job-1", timeout=0)
    assert raised.value.job.status == JobStatus.queued
    assert raised.value.ref == "job-1"


def test_wait_asks_the_service_to_hold_each_answer_until_the_job_changes() -> None:
    etag = {"ETag": '"v1"', "Retry-After": "2"}
    script = Scripted(
        httpx.Response(200, json=job_json(), headers=etag),
        httpx.Response(304, headers=etag),  # the hold ran out: still as the client has it
        httpx.Response(200, json=job_json("succeeded"), headers={"ETag": '"v2"'}),
    )
    with script.client() as client:
        assert client.wait("job-1", timeout=100).status == JobStatus.succeeded
    first, second, third = script.requests
    assert 0 < float(first.url.params["wait"]) <= 30  # held, so Retry-After was not slept
    assert "if-none-match" not in first.headers
    assert second.headers["if-none-match"] == third.headers["if-none-match"] == '"v1"'
    assert float(third.url.params["wait"]) <= 100


def test_refs_are_quoted_into_the_path() -> None:
    script = Scripted(httpx.Response(200, json=job_json()))
    with script.client() as client:
        client.get("key with/slash?")
    assert script.requests[0].url.raw_path == b"/jobs/key%20with%2Fslash%3F"
    with pytest.raises(ValueError, match="ref"):
        client.get("")


def test_the_errors_pickle() -> None:
    job = Job.model_validate(job_json())
    for exc in (
        InvalidEvent(422, "validation_error", "bad", "timezone"),
        ConnectionFailed(None, "connection_failed", "down"),
        WaitTimeout("job-1", 1.5, job),
    ):
        again = pickle.loads(pickle.dumps(exc))
        assert (type(again), str(again), repr(again)) == (type(exc), str(exc), repr(exc))


def test_retries_are_validated() -> None:
    with pytest.raises(ValueError, match="attempts"):
        Retries(attempts=0)
    with pytest.raises(ValueError, match="negative"):
        Retries(total_seconds=-1)


def test_the_async_client_retries_with_the_same_key() -> None:
    script = Scripted(
        httpx.ConnectError("refused"),
        error(503, "busy", **{"Retry-After": "0"}),
        accepted(),
    )

    async def main() -> Job:
        async with AsyncProvisionerClient(
            "http://provisioner.test", TOKEN, retries=FAST, transport=httpx.MockTransport(script)
        ) as client:
            job = await client.submit({"domain": "a.example.com"})
            script.answers = [error(409, "wrong_status"), accepted()]
            with pytest.raises(Conflict):
                await client.cancel("job-1")
            return job

    assert anyio.run(main).id == "job-1"
    assert len(script.requests) == 4
    assert len({request.headers["Idempotency-Key"] for request in script.requests[:3]}) == 1

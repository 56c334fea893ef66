"""``worker.plausible.PlausibleClient`` on canned responses (MockTransport): wire format,
parsing, pagination, network failures, Retry-After, logging and secrecy."""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from testkit.plausible_clients import SECRET, assert_no_secret, sent_json
from worker.errors import (
    NotFoundError,
    PermanentError,
    PlausibleConnectionError,
    PlausibleError,
    RateLimitedError,
)
from worker.plausible import Goal, PlausibleClient, Site, SiteSummary

BASE = "https://plausible.test"

SITE_BODY: dict[str, Any] = {
    "domain": "example.com",
    "timezone": "Etc/UTC",
    "custom_properties": [],
    "tracker_script_configuration": {
        "id": "pa-abcdefghijklmnopqrstu",
        "installation_type": None,
        "track_404_pages": False,
        "hash_based_routing": False,
        "outbound_links": False,
        "file_downloads": False,
        "revenue_tracking": False,
        "tagged_events": False,
        "form_submissions": False,
        "pageview_props": False,
    },
}


class Recorder:
    """A MockTransport handler that replays canned responses and keeps every request."""

    def __init__(self, *responses: httpx.Response | Callable[[httpx.Request], httpx.Response]):
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        nxt = self.responses.pop(0)
        return nxt(request) if callable(nxt) else nxt

    def client(self, **kwargs: Any) -> PlausibleClient:
        return PlausibleClient(
            base_url=BASE, api_key=SECRET, transport=httpx.MockTransport(self), **kwargs
        )


def ok(body: Any) -> httpx.Response:
    return httpx.Response(200, json=body)


# --------------------------------------------------------------------------------------------
# Wire format
# --------------------------------------------------------------------------------------------


def test_every_request_carries_bearer_accept_json_body_and_bounded_timeouts() -> None:
    recorder = Recorder(ok(SITE_BODY))
    with recorder.client(connect_timeout=2.0, read_timeout=7.0) as client:
        client.create_site(
            "Example.com", timezone="Etc/UTC", tracker_script_configuration={"outbound_links": True}
        )
    (request,) = recorder.requests
    assert (request.method, request.url.path) == ("POST", "/api/v1/sites")
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.headers["accept"] == "application/json"
    assert request.headers["content-type"] == "application/json"
    assert sent_json(request) == {
        "domain": "Example.com",
        "timezone": "Etc/UTC",
        "tracker_script_configuration": {"outbound_links": True},
    }
    assert request.extensions["timeout"] == {"connect": 2.0, "read": 7.0, "write": 7.0, "pool": 2.0}


def test_unset_optional_parameters_are_omitted_not_sent_as_null() -> None:
    """A null timezone is rejected by the server while an omitted one defaults (§7.3)."""
    recorder = Recorder(ok(SITE_BODY))
    with recorder.client() as client:
        client.create_site("example.com")
    assert sent_json(recorder.requests[0]) == {"domain": "example.com"}


def test_domain_with_slash_is_one_encoded_path_segment() -> None:
    recorder = Recorder(ok(SITE_BODY), ok(SITE_BODY), ok({"deleted": True}))
    with recorder.client() as client:
        client.get_site("example.com/blog")
        client.update_site("example.com/blog", domain="example.com/news")
        client.delete_site("example.com/blog")
    paths = [r.url.raw_path for r in recorder.requests]
    assert paths == [b"/api/v1/sites/example.com%2Fblog"] * 3


def test_custom_prop_delete_keeps_slashes_and_encodes_the_rest() -> None:
    recorder = Recorder(ok({"deleted": True}))
    with recorder.client() as client:
        assert client.delete_custom_prop("a.com/x", "prop1/key with/slashes?")
    (request,) = recorder.requests
    assert request.url.raw_path == (
        b"/api/v1/sites/custom-props/prop1/key%20with/slashes%3F?site_id=a.com%2Fx"
    )


def test_delete_goal_and_guest_send_site_id_in_the_query() -> None:
    recorder = Recorder(ok({"deleted": True}), ok({"deleted": "true"}))
    with recorder.client() as client:
        assert client.delete_goal("example.com", 7) is True
        assert client.delete_guest("example.com", "a+b@x.com") is True
    goal, guest = recorder.requests
    assert goal.url.raw_path == b"/api/v1/sites/goals/7?site_id=example.com"
    assert guest.url.raw_path == b"/api/v1/sites/guests/a%2Bb%40x.com?site_id=example.com"


def test_empty_path_segments_are_refused_before_any_request() -> None:
    """``DELETE /api/v1/sites/`` would reach a different route, so it is never sent."""
    recorder = Recorder()
    with recorder.client() as client:
        for call in (
            lambda: client.get_site(""),
            lambda: client.delete_site(""),
            lambda: client.delete_guest("a.com", ""),
            lambda: client.delete_custom_prop("a.com", ""),
        ):
            with pytest.raises(ValueError, match="must not be empty"):
                call()
    assert recorder.requests == []


def test_one_call_is_one_request_even_when_it_fails() -> None:
    """Retries belong to the pipeline: a 503 is raised after exactly one attempt."""
    recorder = Recorder(httpx.Response(503, json={"error": "internal server error"}))
    with recorder.client() as client, pytest.raises(PlausibleError) as info:
        client.get_site("example.com")
    assert (info.value.code, info.value.retryable) == ("server_error", True)
    assert len(recorder.requests) == 1


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


def test_site_is_parsed_into_a_frozen_typed_result() -> None:
    body = {**SITE_BODY, "custom_properties": ["author", "title"]}
    recorder = Recorder(ok(body))
    with recorder.client() as client:
        site = client.get_site("example.com")
    assert site == Site(
        domain="example.com",
        timezone="Etc/UTC",
        custom_properties=("author", "title"),
        tracker_script_configuration=SITE_BODY["tracker_script_configuration"],
    )
    with pytest.raises(AttributeError):
        site.domain = "other.com"  # type: ignore[misc]
    with pytest.raises(TypeError):
        site.tracker_script_configuration["outbound_links"] = True  # type: ignore[index]


def test_string_goal_id_is_coerced_to_int() -> None:
    """The docs show ``"id": "1"`` though the code sends integers (§12b)."""
    body: dict[str, Any] = {
        "id": "1",
        "goal_type": "event",
        "event_name": "Signup",
        "page_path": None,
        "display_name": "Signup",
        "custom_props": {},
        "domain": "example.com",
    }
    recorder = Recorder(ok(body))
    with recorder.client() as client:
        goal = client.ensure_goal("example.com", goal_type="event", event_name="Signup")
    assert goal == Goal(1, "event", "Signup", None, "Signup", {}, "example.com")


@pytest.mark.parametrize(
    ("call", "body"),
    [
        ("get_site", {"domain": "example.com"}),
        ("get_site", ["not", "an", "object"]),
        ("delete_site", {"deleted": False}),
        ("delete_site", {"deleted": "yes"}),
        ("delete_site", {}),
        ("goal", {"id": True, "goal_type": "event", "display_name": "x"}),
        ("goal", {"id": 1, "goal_type": "event", "display_name": "x", "custom_props": {"a": 1}}),
        ("sites", {"sites": [{"domain": "a.com", "timezone": "Etc/UTC"}]}),
        ("sites", {"sites": "nope", "meta": {"after": None}}),
    ],
)
def test_a_200_with_the_wrong_shape_is_an_unexpected_response(call: str, body: Any) -> None:
    recorder = Recorder(ok(body))
    calls: dict[str, Callable[[PlausibleClient], object]] = {
        "get_site": lambda c: c.get_site("example.com"),
        "delete_site": lambda c: c.delete_site("example.com"),
        "goal": lambda c: c.ensure_goal("example.com", goal_type="event", event_name="x"),
        "sites": lambda c: list(c.list_sites()),
    }
    with recorder.client() as client, pytest.raises(PermanentError) as info:
        calls[call](client)
    assert (info.value.code, info.value.status) == ("unexpected_response", 200)


def test_a_200_that_is_not_json_is_an_unexpected_response() -> None:
    recorder = Recorder(httpx.Response(200, text="<html>maintenance</html>"))
    with recorder.client() as client, pytest.raises(PermanentError) as info:
        client.get_site("example.com")
    assert info.value.code == "unexpected_response"


# --------------------------------------------------------------------------------------------
# Pagination
# --------------------------------------------------------------------------------------------


def _sites_page(names: list[str], after: str | None) -> httpx.Response:
    sites = [{"domain": n, "timezone": "Etc/UTC"} for n in names]
    return ok({"sites": sites, "meta": {"after": after, "before": None, "limit": 2}})


def test_pagination_follows_after_cursors_lazily() -> None:
    recorder = Recorder(
        _sites_page(["e.com", "d.com"], "g3QAAAABZAACaWRhBQ=="),
        _sites_page(["c.com", "b.com"], "g3QAAAABZAACaWRhAw=="),
        _sites_page(["a.com"], None),
    )
    with recorder.client() as client:
        sites = client.list_sites(team_id="team-1", page_size=2)
        assert recorder.requests == []  # nothing is fetched until iteration starts
        assert next(sites) == SiteSummary("e.com", "Etc/UTC")
        assert len(recorder.requests) == 1
        assert [s.domain for s in sites] == ["d.com", "c.com", "b.com", "a.com"]
    queries = [dict(r.url.params) for r in recorder.requests]
    assert queries == [
        {"team_id": "team-1", "limit": "2"},
        {"team_id": "team-1", "limit": "2", "after": "g3QAAAABZAACaWRhBQ=="},
        {"team_id": "team-1", "limit": "2", "after": "g3QAAAABZAACaWRhAw=="},
    ]


def test_a_repeated_cursor_stops_instead_of_looping_forever() -> None:
    recorder = Recorder(_sites_page(["b.com"], "same"), _sites_page(["a.com"], "same"))
    with recorder.client() as client, pytest.raises(PermanentError) as info:
        list(client.list_sites())
    assert info.value.code == "unexpected_response"
    assert len(recorder.requests) == 2


@pytest.mark.parametrize("page_size", [0, 101])
def test_page_size_outside_the_servers_range_is_refused(page_size: int) -> None:
    """The server would silently use 100 instead (§6)."""
    with Recorder().client() as client, pytest.raises(ValueError, match="page_size"):
        client.list_goals("example.com", page_size=page_size)


# --------------------------------------------------------------------------------------------
# Network failures, Retry-After, logging, secrecy
# --------------------------------------------------------------------------------------------


def _raise(exc_type: type[httpx.RequestError]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type(f"boom while talking to {request.url}", request=request)

    return handler


@pytest.mark.parametrize(
    ("exc_type", "code"),
    [
        (httpx.ConnectError, "network_error"),
        (httpx.RemoteProtocolError, "network_error"),
        (httpx.ConnectTimeout, "timeout"),
        (httpx.ReadTimeout, "timeout"),
        (httpx.PoolTimeout, "timeout"),
    ],
)
def test_network_failures_become_connection_errors_without_a_chain(
    exc_type: type[httpx.RequestError], code: str
) -> None:
    """The httpx exception holds the request and its headers, so it is not chained."""
    recorder = Recorder(_raise(exc_type))
    with recorder.client() as client, pytest.raises(PlausibleConnectionError) as info:
        client.ensure_shared_link("example.com", "Wordpress")
    error = info.value
    assert (error.code, error.status, error.retryable) == (code, None, True)
    assert exc_type.__name__ in error.message
    assert error.__cause__ is None
    assert error.__context__ is None


def test_retry_after_header_is_honoured_through_the_client() -> None:
    now = 1_800_000_003.0
    recorder = Recorder(
        httpx.Response(
            429,
            json={"error": "Too many API requests. The limit is 600 per hour. Please contact us."},
            headers={"Retry-After": "30"},
        )
    )
    with recorder.client(clock=lambda: now) as client, pytest.raises(RateLimitedError) as info:
        client.get_site("example.com")
    assert info.value.limit == "hourly"
    assert info.value.reset_at.timestamp() == now + 30


def test_one_debug_line_per_request_with_method_path_status(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder(
        ok(SITE_BODY), httpx.Response(404, json={"error": "Site could not be found"})
    )
    caplog.set_level(logging.DEBUG, logger="worker.plausible")
    with recorder.client() as client:
        client.get_site("a.com/b")
        with pytest.raises(NotFoundError):
            client.delete_site("gone.com")
    lines = [r.getMessage() for r in caplog.records if r.name == "worker.plausible"]
    assert len(lines) == 2
    assert lines[0].startswith("GET /api/v1/sites/a.com%2Fb -> 200 in ")
    assert lines[1].startswith("DELETE /api/v1/sites/gone.com -> 404 in ")
    assert all(line.endswith(" ms") for line in lines)


def test_repr_and_constructor_errors_never_show_the_key() -> None:
    client = Recorder().client()
    assert SECRET not in repr(client)
    assert repr(client) == f"PlausibleClient(base_url={BASE!r})"
    client.close()
    bad = SECRET + "\n"
    with pytest.raises(ValueError, match="api_key must be") as info:
        PlausibleClient(base_url=BASE, api_key=bad)
    assert SECRET not in str(info.value)


def test_closed_client_refuses_requests() -> None:
    recorder = Recorder(ok(SITE_BODY))
    with recorder.client() as client:
        pass
    with pytest.raises(RuntimeError):
        client.get_site("example.com")
    assert recorder.requests == []


def test_key_never_leaks_with_mock_transport(caplog: pytest.LogCaptureFixture) -> None:
    """All loggers at DEBUG; success, mapped errors and transport failures all stay clean."""
    caplog.set_level(logging.DEBUG)
    recorder = Recorder(
        ok(SITE_BODY),
        httpx.Response(401, json={"error": "Invalid API key."}),
        httpx.Response(429, json={"error": "Too many API requests in a short period of time."}),
        httpx.Response(200, text="not json"),
        _raise(httpx.ConnectError),
        _raise(httpx.ReadTimeout),
    )
    errors: list[BaseException] = []
    with recorder.client() as client:
        client.get_site("example.com")
        for _ in range(5):
            try:
                client.get_site("example.com")
            except PlausibleError as exc:
                errors.append(exc)
    assert [getattr(e, "code", None) for e in errors] == [
        "invalid_api_key",
        "rate_limited",
        "unexpected_response",
        "network_error",
        "timeout",
    ]
    assert_no_secret(SECRET, caplog.records, errors)


def test_a_body_trickling_past_the_total_timeout_is_a_timeout() -> None:
    """httpx bounds each read, not the request: the client bounds the whole body itself."""
    now = [0.0]

    class Trickle(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            for _ in range(10):
                now[0] += 8.0  # each chunk arrives within the read timeout, but they add up
                yield b" "

    client = PlausibleClient(
        base_url="http://plausible.test",
        api_key="trickle-key",
        total_timeout=20.0,
        monotonic=lambda: now[0],
        transport=httpx.MockTransport(lambda request: httpx.Response(200, stream=Trickle())),
    )
    with pytest.raises(PlausibleConnectionError) as raised:
        client.get_site("slow.example.com")
    assert (raised.value.code, raised.value.status) == ("timeout", None)
    assert now[0] == 24.0  # gave up on the third chunk, not after all ten


def test_a_compressed_response_is_decoded() -> None:
    site = {
        "domain": "a.test",
        "timezone": "Etc/UTC",
        "custom_properties": [],
        "tracker_script_configuration": {},
    }
    body = gzip.compress(json.dumps(site).encode())
    client = PlausibleClient(
        base_url="http://plausible.test",
        api_key="gzip-key",
        transport=httpx.MockTransport(
            lambda request: httpx.Response(200, headers={"content-encoding": "gzip"}, content=body)
        ),
    )
    assert client.get_site("a.test").domain == "a.test"

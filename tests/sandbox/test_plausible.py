"""``worker.plausible.PlausibleClient``: wire format, parsing and secrecy (MockTransport), then
every route against the sandbox over real HTTP.

The mapping table itself is covered in tests/unit/test_errors.py; here the sandbox proves the client
and the mapping agree with a server that speaks the reference's exact texts.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from testkit.sandbox_process import SandboxProcess
from worker.errors import (
    AuthenticationError,
    BadRequestError,
    DomainTakenError,
    ForbiddenError,
    NotFoundError,
    PaymentRequiredError,
    PermanentError,
    PlausibleConnectionError,
    PlausibleError,
    RateLimitedError,
    ServerError,
)
from worker.plausible import Goal, PlausibleClient, Site, SiteSummary

SECRET = "sk-unit-Zx9QmR2vT7pL4wK8"
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


def sent_json(request: httpx.Request) -> Any:
    return json.loads(request.content)


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


def _texts_of(error: BaseException) -> Iterator[str]:
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
        for text in _texts_of(error):
            assert secret not in text


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


# ============================================================================================
# Against the sandbox, over real HTTP
# ============================================================================================

DOMAIN_TAKEN = (
    "domain: This domain cannot be registered. Perhaps one of your colleagues registered it? "
    "If that's not the case, please contact support@plausible.io\n"
)
INVALID_KEY = (
    "Invalid API key. Please make sure you're using a valid API key with access to the resource "
    "you've requested."
)
MISSING_KEY = "Missing API key. Please use a valid Plausible API key as a Bearer Token."
MISSING_SITE_ID = (
    "Missing site ID. Please provide the required site_id parameter with your request."
)
NO_SITES_API = (
    "The account that owns this API key does not have access to Sites API. Please make sure "
    "you're using the API key of a subscriber account and that the subscription plan includes "
    "Sites API"
)
LOCKED = (
    "This Plausible site is locked due to missing active subscription. In order to access it, "
    "the site owner should subscribe to a suitable plan"
)
NO_PROPS = "Your current subscription plan does not include Custom Properties"


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


def _drop_auth(request: httpx.Request) -> httpx.Request:
    del request.headers["authorization"]
    return request


def _edit_json(**changes: Any) -> Callable[[httpx.Request], httpx.Request]:
    """Set fields of the JSON body; a value of ``...`` removes the field."""

    def edit(request: httpx.Request) -> httpx.Request:
        body = {**sent_json(request), **changes}
        body = {k: v for k, v in body.items() if v is not ...}
        headers = {k: v for k, v in request.headers.items() if k != "content-length"}
        return httpx.Request(request.method, request.url, headers=headers, json=body)

    return edit


def _edit_path(old: str, new: str) -> Callable[[httpx.Request], httpx.Request]:
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


@pytest.fixture
def box(sandbox: SandboxProcess) -> Iterator[Box]:
    made = Box(sandbox)
    yield made
    made.close()


@pytest.fixture
def api(box: Box) -> PlausibleClient:
    """A client with the sandbox's Sites API key."""
    return box.client()


def expect_error(
    call: Callable[[], object], cls: type[PlausibleError], code: str, message: str, status: int
) -> PlausibleError:
    """The call fails with exactly this class, code, status and server message."""
    with pytest.raises(PlausibleError) as info:
        call()
    error = info.value
    assert (type(error), error.code, error.status, error.message) == (cls, code, status, message)
    return error


# -- sites ------------------------------------------------------------------------------------


def test_site_lifecycle_uses_the_normalised_domain(
    api: PlausibleClient, sandbox: SandboxProcess
) -> None:
    site = api.create_site(
        "https://www.Example.com/", tracker_script_configuration={"outbound_links": True}
    )
    assert (site.domain, site.timezone, site.custom_properties) == ("example.com", "Etc/UTC", ())
    assert site.tracker_script_configuration["outbound_links"] is True
    assert str(site.tracker_script_configuration["id"]).startswith("pa-")
    assert api.get_site("example.com") == site
    moved = api.update_site(
        "example.com", domain="example.org", tracker_script_configuration={"file_downloads": True}
    )
    assert moved.domain == "example.org"
    assert moved.tracker_script_configuration["outbound_links"] is True  # merged, not replaced
    assert api.get_site("example.com").domain == "example.org"  # the old domain still resolves
    assert api.delete_site("example.org") is True
    assert sandbox.state()["sites"] == []
    expect_error(
        lambda: api.delete_site("example.org"),
        NotFoundError,
        "site_not_found",
        "Site could not be found",
        404,
    )


def test_domain_with_a_slash_round_trips_through_every_site_route(api: PlausibleClient) -> None:
    site = api.create_site("example.com/blog", timezone="Europe/London")
    assert site.domain == "example.com/blog"
    assert api.get_site("example.com/blog").timezone == "Europe/London"
    goal = api.ensure_goal(site.domain, goal_type="page", page_path="/x")
    assert goal.domain == "example.com/blog"
    assert api.delete_goal(site.domain, goal.id) is True
    assert api.delete_site("example.com/blog") is True


@pytest.mark.parametrize(
    ("domain", "options", "message"),
    [
        ("", {}, "domain: can't be blank"),
        ("ok.test", {"timezone": "d"}, "timezone: is invalid"),
        ("h&llo.test", {}, "domain: must not contain URI reserved characters :?#[]@!$&'()*+,;="),
        ("a b.test", {}, "domain: only letters, numbers, slashes, underscores and period allowed"),
        (
            "ok.test",
            {"tracker_script_configuration": {"installation_type": "bogus"}},
            "tracker_script_configuration.installation_type: is invalid",
        ),
        (
            "ok.test",
            {"tracker_script_configuration": {"outbound_links": "maybe"}},
            "tracker_script_configuration.outbound_links: is invalid",
        ),
    ],
)
def test_create_site_validation_errors(
    api: PlausibleClient,
    sandbox: SandboxProcess,
    domain: str,
    options: dict[str, Any],
    message: str,
) -> None:
    expect_error(
        lambda: api.create_site(domain, **options),
        BadRequestError,
        "validation_error",
        message,
        400,
    )
    assert sandbox.state()["sites"] == []  # nothing half-created


def test_create_site_twice_is_domain_taken_with_the_trailing_newline(
    box: Box, api: PlausibleClient
) -> None:
    api.create_site("taken.test")
    expect_error(
        lambda: api.create_site("TAKEN.test"), DomainTakenError, "domain_taken", DOMAIN_TAKEN, 400
    )
    other = box.client(box.sandbox.other_team_api_key)
    expect_error(
        lambda: other.create_site("taken.test"), DomainTakenError, "domain_taken", DOMAIN_TAKEN, 400
    )


def test_create_site_account_errors(box: Box) -> None:
    """Every 401/402/403 a create can meet, each mapped to its class and code."""
    no_api = box.client(box.key(features=["StatsAPI"]))
    expect_error(
        lambda: no_api.create_site("a.test"),
        PaymentRequiredError,
        "sites_api_unavailable",
        NO_SITES_API,
        402,
    )
    locked = box.client(box.key(locked=True))
    expect_error(
        lambda: locked.create_site("a.test"), PaymentRequiredError, "site_locked", LOCKED, 402
    )
    limited = box.client(box.key(site_limit=1))
    limited.create_site("one.test")
    expect_error(
        lambda: limited.create_site("two.test"),
        PaymentRequiredError,
        "site_limit_reached",
        "Your account has reached the limit of 1 sites. To unlock more sites, please upgrade your subscription.",
        402,
    )
    viewer = box.client(box.key(role="viewer"))
    expect_error(
        lambda: viewer.create_site("a.test"),
        ForbiddenError,
        "team_forbidden",
        "You can't add sites to the selected team.",
        403,
    )
    stats = box.client(box.sandbox.stats_api_key)
    expect_error(
        lambda: stats.create_site("a.test"),
        AuthenticationError,
        "invalid_api_key",
        INVALID_KEY,
        401,
    )
    unknown = box.client("no-such-key")
    expect_error(
        lambda: unknown.create_site("a.test"),
        AuthenticationError,
        "invalid_api_key",
        INVALID_KEY,
        401,
    )
    anonymous = box.rewriting(_drop_auth)
    expect_error(
        lambda: anonymous.create_site("a.test"),
        AuthenticationError,
        "missing_api_key",
        MISSING_KEY,
        401,
    )


def test_delete_site_errors(box: Box, api: PlausibleClient) -> None:
    api.create_site("mine.test")
    expect_error(
        lambda: api.delete_site("nope.test"),
        NotFoundError,
        "site_not_found",
        "Site could not be found",
        404,
    )
    other = box.client(box.sandbox.other_team_api_key)
    expect_error(
        lambda: other.delete_site("mine.test"),
        AuthenticationError,
        "invalid_api_key",
        INVALID_KEY,
        401,
    )
    stats = box.client(box.sandbox.stats_api_key)
    expect_error(
        lambda: stats.delete_site("mine.test"),
        AuthenticationError,
        "invalid_api_key",
        INVALID_KEY,
        401,
    )
    # Only the owner may delete; a lower role is told the site does not exist (§7.6).
    admin = box.client(box.key(role="admin"))
    expect_error(
        lambda: admin.delete_site("mine.test"),
        NotFoundError,
        "site_not_found",
        "Site could not be found",
        404,
    )
    assert api.get_site("mine.test").domain == "mine.test"


def test_update_site_errors(api: PlausibleClient) -> None:
    api.create_site("a.test")
    api.create_site("b.test")
    expect_error(
        lambda: api.update_site("a.test"),
        BadRequestError,
        "validation_error",
        "Payload must contain at least one of the parameters 'domain', 'tracker_script_configuration'",
        400,
    )
    expect_error(
        lambda: api.update_site("a.test", domain="a.test"),
        BadRequestError,
        "validation_error",
        "domain: New domain must be different than the current one",
        400,
    )
    expect_error(
        lambda: api.update_site("a.test", domain="b.test"),
        DomainTakenError,
        "domain_taken",
        DOMAIN_TAKEN,
        400,
    )


def test_stats_key_reads_sites_and_teams(box: Box, api: PlausibleClient) -> None:
    api.create_site("read.test")
    stats = box.client(box.sandbox.stats_api_key)
    assert stats.get_site("read.test").domain == "read.test"
    assert [s.domain for s in stats.list_sites()] == ["read.test"]
    teams = list(stats.list_teams())
    assert len(teams) == 1
    assert teams[0].api_available is True


# -- lists and pagination ---------------------------------------------------------------------


def test_list_sites_pages_through_every_site_newest_first(box: Box, api: PlausibleClient) -> None:
    for n in range(5):
        api.create_site(f"s{n}.test")
    box.client(box.sandbox.other_team_api_key).create_site("elsewhere.test")
    requests_before = box.sandbox.state()["counters"]["total"]
    assert [s.domain for s in api.list_sites(page_size=2)] == [
        f"s{n}.test" for n in (4, 3, 2, 1, 0)
    ]
    assert box.sandbox.state()["counters"]["total"] - requests_before == 3  # pages of 2, 2, 1


def test_list_goals_pages_and_carries_no_domain(api: PlausibleClient) -> None:
    api.create_site("goals.test")
    made = [api.ensure_goal("goals.test", goal_type="event", event_name=f"E{n}") for n in range(3)]
    listed = list(api.list_goals("goals.test", page_size=1))
    assert [g.id for g in listed] == sorted((g.id for g in made), reverse=True)
    assert {g.domain for g in listed} == {None}
    assert listed[-1] == Goal(made[0].id, "event", "E0", None, "E0", {}, None)


def test_list_teams(box: Box, api: PlausibleClient) -> None:
    teams = list(api.list_teams(page_size=1))
    assert len(teams) == 1  # a team-scoped key sees only its own team
    assert isinstance(teams[0].id, str)
    assert isinstance(teams[0].name, str)


# -- shared links -----------------------------------------------------------------------------


def test_shared_link_is_find_or_create(box: Box, api: PlausibleClient) -> None:
    api.create_site("share.test")
    link = api.ensure_shared_link("share.test", "Wordpress")
    assert link.name == "Wordpress"
    assert link.url.startswith(f"{box.sandbox.base_url}/share/share.test?auth=")
    assert api.ensure_shared_link("share.test", "Wordpress") == link


def test_shared_link_errors(box: Box, api: PlausibleClient) -> None:
    api.create_site("share.test")
    expect_error(
        lambda: api.ensure_shared_link("share.test", "WordPress - Shared Dashboard"),
        BadRequestError,
        "reserved_name",
        "This name is reserved. Please choose another one",
        400,
    )
    expect_error(
        lambda: api.ensure_shared_link("share.test", " "),
        BadRequestError,
        "validation_error",
        "can't be blank",
        400,
    )
    nameless = box.rewriting(_edit_json(name=...))
    expect_error(
        lambda: nameless.ensure_shared_link("share.test", "x"),
        BadRequestError,
        "validation_error",
        "Parameter `name` is required to create a shared link",
        400,
    )
    expect_error(
        lambda: api.ensure_shared_link("", "x"),
        BadRequestError,
        "missing_site_id",
        MISSING_SITE_ID,
        400,
    )
    expect_error(
        lambda: api.ensure_shared_link("nope.test", "x"),
        NotFoundError,
        "site_not_found",
        "Site could not be found",
        404,
    )
    other = box.client(box.sandbox.other_team_api_key)
    expect_error(
        lambda: other.ensure_shared_link("share.test", "x"),
        AuthenticationError,
        "invalid_api_key",
        INVALID_KEY,
        401,
    )
    stats = box.client(box.sandbox.stats_api_key)
    expect_error(
        lambda: stats.ensure_shared_link("share.test", "x"),
        AuthenticationError,
        "invalid_api_key",
        INVALID_KEY,
        401,
    )
    plain = box.client(box.key(features=["SitesAPI", "StatsAPI"]))
    plain.create_site("plain.test")
    expect_error(
        lambda: plain.ensure_shared_link("plain.test", "x"),
        PaymentRequiredError,
        "shared_links_unavailable",
        "Your current subscription plan does not include Shared Links",
        402,
    )
    no_api = box.client(box.key(features=["StatsAPI", "SharedLinks"]))
    expect_error(
        lambda: no_api.ensure_shared_link("x.test", "x"),
        PaymentRequiredError,
        "sites_api_unavailable",
        NO_SITES_API,
        402,
    )


# -- goals ------------------------------------------------------------------------------------


def test_goals_are_find_or_create_and_deletable(api: PlausibleClient) -> None:
    api.create_site("goal.test")
    event = api.ensure_goal(
        "goal.test", goal_type="event", event_name=" Signup ", custom_props={"plan": "pro"}
    )
    assert (event.goal_type, event.event_name, event.display_name) == ("event", "Signup", "Signup")
    assert (event.custom_props, event.domain) == ({"plan": "pro"}, "goal.test")
    page = api.ensure_goal("goal.test", goal_type="page", page_path="pricing")
    assert (page.goal_type, page.page_path, page.display_name) == (
        "page",
        "/pricing",
        "Visit /pricing",
    )
    again = api.ensure_goal(
        "goal.test",
        goal_type="event",
        event_name="Signup",
        custom_props={"plan": "pro"},
        display_name="Other",
    )
    assert again == event  # same id, not renamed
    assert api.delete_goal("goal.test", page.id) is True
    expect_error(
        lambda: api.delete_goal("goal.test", page.id),
        NotFoundError,
        "goal_not_found",
        "Goal could not be found",
        404,
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"goal_type": "event"}, "Parameter `event_name` is required to create a goal"),
        ({"goal_type": "page"}, "Parameter `page_path` is required to create a goal"),
        (
            {
                "goal_type": "event",
                "event_name": "e",
                "custom_props": {"a": "1", "b": "2", "c": "3", "d": "4"},
            },
            "custom_props: use at most 3 properties per goal",
        ),
        (
            {"goal_type": "event", "event_name": "e", "custom_props": {"a": 1}},
            "custom_props: must be a map with string keys and string values",
        ),
        (
            {"goal_type": "event", "event_name": "e", "custom_props": {"k" * 301: "v"}},
            "custom_props: key length is 1..300 characters",
        ),
        (
            {"goal_type": "event", "event_name": "e", "custom_props": {"k": "v" * 2001}},
            "custom_props: value length is 1..2000 characters",
        ),
        (
            {"goal_type": "event", "event_name": "engagement"},
            "page_path: this field is required and must start with a /, "
            "event_name: The event name 'engagement' is reserved and cannot be used as a goal",
        ),
        (
            {"goal_type": "event", "event_name": "e", "page_path": "/p"},
            "event_name: cannot co-exist with page_path",
        ),
    ],
)
def test_ensure_goal_validation_errors(
    api: PlausibleClient, options: dict[str, Any], message: str
) -> None:
    api.create_site("goal.test")
    expect_error(
        lambda: api.ensure_goal("goal.test", **options),
        BadRequestError,
        "validation_error",
        message,
        400,
    )


def test_ensure_goal_errors_beyond_validation(box: Box, api: PlausibleClient) -> None:
    api.create_site("goal.test")
    typeless = box.rewriting(_edit_json(goal_type=...))
    expect_error(
        lambda: typeless.ensure_goal("goal.test", goal_type="event", event_name="e"),
        BadRequestError,
        "validation_error",
        "Parameter `goal_type` is required to create a goal",
        400,
    )
    listy = box.rewriting(_edit_json(custom_props=["a"]))
    expect_error(
        lambda: listy.ensure_goal("goal.test", goal_type="event", event_name="e", custom_props={}),
        BadRequestError,
        "validation_error",
        "custom_props: is invalid",
        400,
    )
    # An unknown goal_type crashes Plausible (FunctionClauseError): a 5xx, retryable by class.
    expect_error(
        lambda: api.ensure_goal("goal.test", goal_type="scroll", page_path="/"),
        ServerError,
        "server_error",
        "internal server error",
        500,
    )
    box.sandbox.configure(max_goals_per_site=1)
    api.ensure_goal("goal.test", goal_type="event", event_name="first")
    expect_error(
        lambda: api.ensure_goal("goal.test", goal_type="event", event_name="second"),
        BadRequestError,
        "validation_error",
        "event_name: Maximum number of goals reached, page_path: Maximum number of goals reached",
        400,
    )
    expect_error(
        lambda: api.ensure_goal("", goal_type="event", event_name="e"),
        BadRequestError,
        "missing_site_id",
        MISSING_SITE_ID,
        400,
    )
    expect_error(
        lambda: api.ensure_goal("nope.test", goal_type="event", event_name="e"),
        NotFoundError,
        "site_not_found",
        "Site could not be found",
        404,
    )
    other = box.client(box.sandbox.other_team_api_key)
    expect_error(
        lambda: other.ensure_goal("goal.test", goal_type="event", event_name="e"),
        AuthenticationError,
        "invalid_api_key",
        INVALID_KEY,
        401,
    )
    no_api = box.client(box.key(features=["StatsAPI", "Props"]))
    expect_error(
        lambda: no_api.ensure_goal("x.test", goal_type="event", event_name="e"),
        PaymentRequiredError,
        "sites_api_unavailable",
        NO_SITES_API,
        402,
    )
    no_props = box.client(box.key(features=["SitesAPI", "StatsAPI"]))
    no_props.create_site("noprops.test")
    expect_error(
        lambda: no_props.ensure_goal(
            "noprops.test", goal_type="event", event_name="e", custom_props={"a": "b"}
        ),
        PaymentRequiredError,
        "custom_props_unavailable",
        NO_PROPS,
        402,
    )


def test_delete_goal_errors(box: Box, api: PlausibleClient) -> None:
    api.create_site("one.test")
    api.create_site("two.test")
    goal = api.ensure_goal("one.test", goal_type="event", event_name="e")
    expect_error(
        lambda: api.delete_goal("two.test", goal.id),
        NotFoundError,
        "goal_not_found",
        "Goal could not be found",
        404,
    )
    expect_error(
        lambda: api.delete_goal("nope.test", goal.id),
        NotFoundError,
        "site_not_found",
        "Site could not be found",
        404,
    )
    expect_error(
        lambda: api.delete_goal("", goal.id),
        BadRequestError,
        "missing_site_id",
        MISSING_SITE_ID,
        400,
    )
    non_numeric = box.rewriting(_edit_path(f"/goals/{goal.id}", "/goals/abc"))
    expect_error(
        lambda: non_numeric.delete_goal("one.test", goal.id),
        BadRequestError,
        "validation_error",
        "internal server error",
        400,
    )
    other = box.client(box.sandbox.other_team_api_key)
    expect_error(
        lambda: other.delete_goal("one.test", goal.id),
        AuthenticationError,
        "invalid_api_key",
        INVALID_KEY,
        401,
    )
    stats = box.client(box.sandbox.stats_api_key)
    expect_error(
        lambda: stats.delete_goal("one.test", goal.id),
        AuthenticationError,
        "invalid_api_key",
        INVALID_KEY,
        401,
    )
    no_api = box.client(box.key(features=["StatsAPI"]))
    expect_error(
        lambda: no_api.delete_goal("x.test", goal.id),
        PaymentRequiredError,
        "sites_api_unavailable",
        NO_SITES_API,
        402,
    )
    assert [g.id for g in api.list_goals("one.test")] == [goal.id]


# -- custom properties and guests -------------------------------------------------------------


def test_custom_props_add_list_delete(api: PlausibleClient) -> None:
    api.create_site("props.test")
    assert api.add_custom_prop("props.test", "title") is True
    assert api.add_custom_prop("props.test", "author") is True
    assert api.add_custom_prop("props.test", "author") is True  # idempotent
    assert api.add_custom_prop("props.test", "a/b/c") is True
    assert api.list_custom_props("props.test") == ["a/b/c", "author", "title"]
    assert api.get_site("props.test").custom_properties == ("a/b/c", "author", "title")
    assert api.delete_custom_prop("props.test", "a/b/c") is True
    assert api.delete_custom_prop("props.test", "never-there") is True
    assert api.list_custom_props("props.test") == ["author", "title"]
    expect_error(
        lambda: api.add_custom_prop("props.test", "p" * 301),
        BadRequestError,
        "validation_error",
        "Parameter `property` is too long",
        400,
    )


def test_custom_props_need_the_props_feature(box: Box) -> None:
    plain = box.client(box.key(features=["SitesAPI", "StatsAPI"]))
    plain.create_site("plain.test")
    expect_error(
        lambda: plain.add_custom_prop("plain.test", "x"),
        PaymentRequiredError,
        "custom_props_unavailable",
        NO_PROPS,
        402,
    )


def test_guests_invite_list_delete(api: PlausibleClient) -> None:
    api.create_site("guests.test")
    guest = api.ensure_guest("guests.test", "ann@example.com", "viewer")
    assert (guest.email, guest.role, guest.status) == ("ann@example.com", "viewer", "invited")
    assert api.ensure_guest("guests.test", "ann@example.com", "editor") == guest  # role unchanged
    api.ensure_guest("guests.test", "bob+x@example.com", "editor")
    assert [g.email for g in api.list_guests("guests.test", page_size=1)] == [
        "ann@example.com",
        "bob+x@example.com",
    ]
    assert api.delete_guest("guests.test", "bob+x@example.com") is True
    assert api.delete_guest("guests.test", "bob+x@example.com") is True  # no-op, still 200
    assert [g.email for g in api.list_guests("guests.test")] == ["ann@example.com"]
    expect_error(
        lambda: api.ensure_guest("guests.test", "c@example.com", "owner"),
        BadRequestError,
        "validation_error",
        "Parameter `role` is required to create guest. Possible values: `viewer` or `editor`",
        400,
    )


# -- rate limits ------------------------------------------------------------------------------


class RecordingClock:
    """Wall time (the sandbox's windows are real), remembering what it told the client."""

    def __init__(self) -> None:
        self.readings: list[float] = []

    def __call__(self) -> float:
        self.readings.append(time.time())
        return self.readings[-1]


def test_hourly_429_resets_at_the_next_hour_window(box: Box) -> None:
    # A limit of 0 refuses the first request, so no window boundary can fall in between.
    box.sandbox.configure(hourly_limit=0, hour_seconds=60)
    clock = RecordingClock()
    client = box.client(hour_seconds=60, clock=clock)
    error = expect_error(
        lambda: client.create_site("rl.test"),
        RateLimitedError,
        "rate_limited",
        "Too many API requests. The limit is 0 per hour. Please contact us to request more capacity.",
        429,
    )
    assert isinstance(error, RateLimitedError)
    (now,) = clock.readings
    assert error.limit == "hourly"
    assert error.reset_at.timestamp() == (math.floor(now / 60) + 1) * 60
    assert now < error.reset_at.timestamp() <= now + 60


def test_burst_429_resets_at_the_next_burst_window(box: Box) -> None:
    box.sandbox.configure(burst_limit=0, burst_seconds=7)
    clock = RecordingClock()
    client = box.client(clock=clock)
    error = expect_error(
        lambda: client.ensure_shared_link("x.test", "x"),
        RateLimitedError,
        "rate_limited",
        "Too many API requests in a short period of time. The limit is 0 per 7 seconds. Please throttle your requests.",
        429,
    )
    assert isinstance(error, RateLimitedError)
    (now,) = clock.readings
    assert error.limit == "burst"
    assert error.reset_at.timestamp() == (math.floor(now / 7) + 1) * 7
    assert now < error.reset_at.timestamp() <= now + 7


# -- transport failures and secrecy -----------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_refused_connection_and_read_timeout(box: Box) -> None:
    refused = PlausibleClient(base_url=f"http://127.0.0.1:{_closed_port()}", api_key=SECRET)
    with refused, pytest.raises(PlausibleConnectionError) as info:
        refused.get_site("example.com")
    assert (info.value.code, info.value.status) == ("network_error", None)
    box.sandbox.configure(latency_ms=2000)
    slow = box.client(read_timeout=0.05)
    with pytest.raises(PlausibleConnectionError) as timed_out:
        slow.get_site("example.com")
    assert timed_out.value.code == "timeout"


def test_key_appears_in_no_log_record_and_no_error(
    box: Box, caplog: pytest.LogCaptureFixture
) -> None:
    """Real HTTP with every logger (httpx, httpcore, ours) at DEBUG, across every kind of outcome."""
    for name in (None, "httpx", "httpcore"):  # a CLI run earlier in the process may quiet some
        caplog.set_level(logging.DEBUG, logger=name)
    secret = "sk-live-Qw3rTy8uIoP4aSdF"
    box.sandbox.add_key(key=secret)
    client = box.client(secret)
    errors: list[BaseException] = []

    def attempt(call: Callable[[], object]) -> None:
        try:
            call()
        except PlausibleError as exc:
            errors.append(exc)

    client.create_site("leak.test")
    client.ensure_goal("leak.test", goal_type="event", event_name="e")
    list(client.list_goals("leak.test", page_size=1))
    attempt(lambda: client.create_site("leak.test"))
    attempt(lambda: client.delete_site("nope.test"))
    attempt(lambda: client.ensure_shared_link("", "x"))
    box.sandbox.configure(burst_limit=0)
    attempt(lambda: client.get_site("leak.test"))
    box.sandbox.configure(burst_limit=60, latency_ms=2000)
    attempt(lambda: box.client(secret, read_timeout=0.05).get_site("leak.test"))
    attempt(
        lambda: PlausibleClient(
            base_url=f"http://127.0.0.1:{_closed_port()}", api_key=secret
        ).get_site("x")
    )
    assert [getattr(e, "code", None) for e in errors] == [
        "domain_taken",
        "site_not_found",
        "missing_site_id",
        "rate_limited",
        "timeout",
        "network_error",
    ]
    assert {r.name.split(".")[0] for r in caplog.records} >= {"httpx", "httpcore", "worker"}
    assert_no_secret(secret, caplog.records, errors)


def test_crashes_inside_plausible_keep_their_plug_status(api: PlausibleClient) -> None:
    """``internal server error`` comes with 500 or, from Ecto.NoResultsError, 404 (§5, §7.9)."""
    expect_error(
        lambda: api.create_site("a" * 251 + ".test"),
        ServerError,
        "server_error",
        "internal server error",
        500,
    )
    api.create_site("clash.test")
    api.ensure_goal("clash.test", goal_type="event", event_name="A", display_name="Shown")
    expect_error(
        lambda: api.ensure_goal(
            "clash.test", goal_type="event", event_name="B", display_name="Shown"
        ),
        NotFoundError,
        "not_found",
        "internal server error",
        404,
    )


# -- legacy keys, memberships, UI-made sites and consolidated views (§3, §4, §7.3) -----------

CONSOLIDATED = "This operation is unavailable for a consolidated view"
SITE_NOT_FOUND = "Site could not be found"


def _seed_calls(client: PlausibleClient, domain: str) -> list[Callable[[], object]]:
    """The seed's operations on an existing site: shared link, goal, goal delete, site delete."""
    return [
        lambda: client.ensure_shared_link(domain, "link"),
        lambda: client.ensure_goal(domain, goal_type="event", event_name="E"),
        lambda: client.delete_goal(domain, 1),
        lambda: client.delete_site(domain),
    ]


def _default_team(box: Box) -> str:
    team: str = box.sandbox.state()["teams"][0]["id"]
    return team


def test_guest_editor_on_a_foreign_team_without_sites_api_cannot_delete(box: Box) -> None:
    foreign = box.sandbox.add_team(name="Foreign", features=["StatsAPI"])
    box.sandbox.add_site(domain="foreign.test", team=foreign["id"])
    box.sandbox.add_legacy_key("guest-key", "gail")
    box.sandbox.add_membership(user="gail", site="foreign.test", role="editor")
    guest = box.client("guest-key")
    expect_error(
        lambda: guest.delete_site("foreign.test"),
        PaymentRequiredError,
        "sites_api_unavailable",
        NO_SITES_API,
        402,
    )
    # A key of that team meets the same 402 on every seed operation.
    own = box.client(box.key(team=foreign["id"]))
    for call in _seed_calls(own, "foreign.test"):
        expect_error(call, PaymentRequiredError, "sites_api_unavailable", NO_SITES_API, 402)
    assert [s["domain"] for s in box.sandbox.state()["sites"]] == ["foreign.test"]


def test_consolidated_view_refuses_every_seed_operation(box: Box, api: PlausibleClient) -> None:
    view = "6f1c2a4e-0000-4000-8000-00000000000a"
    box.sandbox.add_site(domain=view, team=_default_team(box), consolidated=True)
    for call in _seed_calls(api, view):
        expect_error(call, BadRequestError, "consolidated_view", CONSOLIDATED, 400)
    # Before the key's team is compared (7a before 7c).
    other = box.client(box.sandbox.other_team_api_key)
    expect_error(
        lambda: other.ensure_goal(view, goal_type="page", page_path="/"),
        BadRequestError,
        "consolidated_view",
        CONSOLIDATED,
        400,
    )
    assert list(api.list_sites()) == []


def test_legacy_create_site_team_resolution(box: Box) -> None:
    sandbox = box.sandbox
    sandbox.add_legacy_key("legacy-key", "pat")
    for name in ("One", "Two"):
        sandbox.add_membership(
            user="pat", team=sandbox.add_team(name=name, setup=False)["id"], role="owner"
        )
    viewed = sandbox.add_team(name="Viewed")
    sandbox.add_membership(user="pat", team=viewed["id"], role="viewer")
    legacy = box.client("legacy-key")
    expect_error(
        lambda: legacy.create_site("which.test"),
        BadRequestError,
        "team_required",
        "You must select a team with 'team_id' parameter.",
        400,
    )
    expect_error(
        lambda: legacy.create_site("which.test", team_id=viewed["id"]),
        ForbiddenError,
        "team_forbidden",
        "You can't add sites to the selected team.",
        403,
    )
    stranger = sandbox.add_team(name="Stranger")
    expect_error(
        lambda: legacy.create_site("which.test", team_id=stranger["id"]),
        AuthenticationError,
        "invalid_api_key",
        INVALID_KEY,
        401,
    )
    assert sandbox.state()["sites"] == []


def test_legacy_create_in_a_new_personal_team_then_402_on_the_site(box: Box) -> None:
    box.sandbox.add_legacy_key("legacy-key", "pat")
    legacy = box.client("legacy-key")
    site = legacy.create_site("personal.test")
    assert site.domain == "personal.test"
    (team,) = legacy.list_teams()
    assert (team.name, team.api_available) == ("My personal sites", True)
    # The trial lacks the Sites API: the site exists, yet every provisioning call is refused.
    for call in _seed_calls(legacy, "personal.test"):
        expect_error(call, PaymentRequiredError, "sites_api_unavailable", NO_SITES_API, 402)
    assert legacy.get_site("personal.test") == site


def test_roles_too_low_get_site_not_found(box: Box, api: PlausibleClient) -> None:
    api.create_site("roles.test")
    team = _default_team(box)
    editor = box.client(box.key(team=team, role="editor"))
    expect_error(
        lambda: editor.delete_site("roles.test"),
        NotFoundError,
        "site_not_found",
        SITE_NOT_FOUND,
        404,
    )
    viewer = box.client(box.key(team=team, role="viewer"))
    expect_error(
        lambda: viewer.ensure_goal("roles.test", goal_type="event", event_name="E"),
        NotFoundError,
        "site_not_found",
        SITE_NOT_FOUND,
        404,
    )
    box.sandbox.add_legacy_key("guest-viewer-key", "vic")
    box.sandbox.add_membership(user="vic", site="roles.test", role="viewer")
    guest_viewer = box.client("guest-viewer-key")
    for call in _seed_calls(guest_viewer, "roles.test"):
        expect_error(call, NotFoundError, "site_not_found", SITE_NOT_FOUND, 404)
    box.sandbox.add_legacy_key("guest-editor-key", "edith")
    box.sandbox.add_membership(user="edith", site="roles.test", role="editor")
    guest_editor = box.client("guest-editor-key")
    goal = guest_editor.ensure_goal("roles.test", goal_type="event", event_name="E")
    assert guest_editor.ensure_shared_link("roles.test", "n").name == "n"
    assert guest_editor.delete_goal("roles.test", goal.id) is True
    expect_error(
        lambda: guest_editor.delete_site("roles.test"),
        NotFoundError,
        "site_not_found",
        SITE_NOT_FOUND,
        404,
    )
    assert api.get_site("roles.test").domain == "roles.test"


def test_legacy_keys_429_on_the_users_bucket_and_on_the_sites_team(box: Box) -> None:
    sandbox = box.sandbox
    # A window of ~31 years: no boundary can fall between the calls below.
    sandbox.configure(legacy_hourly_limit=1, hour_seconds=1_000_000_000)
    team = sandbox.add_team(name="Quota", hourly_limit=1)
    sandbox.add_site(domain="quota.test", team=team["id"])
    sandbox.add_legacy_key("legacy-a", "pat")
    sandbox.add_legacy_key("legacy-b", "pat")
    sandbox.add_membership(user="pat", team=team["id"], role="owner")
    first, second = box.client("legacy-a"), box.client("legacy-b")
    hourly = "Too many API requests. The limit is 1 per hour. Please contact us to request more capacity."
    # Both keys share the user's bucket for calls without a resolvable site.
    expect_error(
        lambda: first.ensure_goal("nowhere.test", goal_type="event", event_name="E"),
        NotFoundError,
        "site_not_found",
        SITE_NOT_FOUND,
        404,
    )
    error = expect_error(
        lambda: second.create_site("late.test", team_id=team["id"]),
        RateLimitedError,
        "rate_limited",
        hourly,
        429,
    )
    assert isinstance(error, RateLimitedError)
    assert error.limit == "hourly"
    # A resolvable site counts against its team's bucket instead, shared with the team's keys.
    assert second.ensure_shared_link("quota.test", "n").name == "n"
    team_key = box.client(box.key(team=team["id"]))
    for call in (
        lambda: first.delete_site("quota.test"),
        lambda: team_key.ensure_goal("quota.test", goal_type="event", event_name="E"),
    ):
        expect_error(call, RateLimitedError, "rate_limited", hourly, 429)
    assert [s["domain"] for s in sandbox.state()["sites"]] == ["quota.test"]


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

"""Fuzzing the Plausible client with odd responses (hypothesis): each becomes a
``PlausibleError``.

No junk input crashes a process or costs a neighbouring valid input. How runs are derandomized
and scaled: ``testkit.strategies``; a falsifying example found stays as an ``@example``.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from hypothesis import event as tally
from hypothesis import example, given
from hypothesis import strategies as st

from testkit.strategies import (
    ANY_TEXT,
    JSONISH,
    TRICKY_LATIN1,
    deep_json,
    fuzz,
    spliced,
)
from worker.errors import PlausibleError, RateLimitedError
from worker.plausible import PlausibleClient, error_from_response

# -- the Plausible client and odd responses ------------------------------------------------------

SITE = {
    "domain": "example.com",
    "timezone": "Etc/UTC",
    "custom_properties": [],
    "tracker_script_configuration": {"id": "pa-x"},
}
GOAL = {
    "id": 1,
    "goal_type": "event",
    "event_name": "Signup",
    "page_path": None,
    "display_name": "Signup",
    "custom_props": {},
    "domain": "example.com",
}
PAGE_META = {"after": None, "before": None, "limit": 100}
#: Each client method, called as the pipeline calls it (iterators drained), and the 200 body
#: it expects.
METHODS: dict[str, tuple[Callable[[PlausibleClient], object], object]] = {
    "create_site": (lambda c: c.create_site("example.com", timezone="Etc/UTC"), SITE),
    "get_site": (lambda c: c.get_site("example.com"), SITE),
    "update_site": (lambda c: c.update_site("example.com", domain="new.example.com"), SITE),
    "delete_site": (lambda c: c.delete_site("example.com"), {"deleted": True}),
    "list_sites": (
        lambda c: list(c.list_sites()),
        {"sites": [{"domain": "a.com", "timezone": "Etc/UTC"}], "meta": PAGE_META},
    ),
    "list_teams": (
        lambda c: list(c.list_teams()),
        {"teams": [{"id": "t", "name": "T", "api_available": True}], "meta": PAGE_META},
    ),
    "ensure_shared_link": (
        lambda c: c.ensure_shared_link("example.com", "WordPress"),
        {"name": "WordPress", "url": "https://plausible.test/share/x"},
    ),
    "ensure_goal": (
        lambda c: c.ensure_goal("example.com", goal_type="event", event_name="Signup"),
        GOAL,
    ),
    "delete_goal": (lambda c: c.delete_goal("example.com", 1), {"deleted": True}),
    "list_goals": (
        lambda c: list(c.list_goals("example.com")),
        {"goals": [GOAL], "meta": PAGE_META},
    ),
    "list_custom_props": (
        lambda c: c.list_custom_props("example.com"),
        {"custom_properties": [{"property": "plan"}]},
    ),
    "add_custom_prop": (lambda c: c.add_custom_prop("example.com", "plan"), {"created": True}),
    "delete_custom_prop": (
        lambda c: c.delete_custom_prop("example.com", "plan"),
        {"deleted": True},
    ),
    "list_guests": (
        lambda c: list(c.list_guests("example.com")),
        {"guests": [{"email": "a@b.c", "role": "viewer", "status": "invited"}], "meta": PAGE_META},
    ),
    "ensure_guest": (
        lambda c: c.ensure_guest("example.com", "a@b.c", "viewer"),
        {"email": "a@b.c", "role": "viewer", "status": "invited"},
    ),
    "delete_guest": (lambda c: c.delete_guest("example.com", "a@b.c"), {"deleted": True}),
}

HTML_PAGE = (
    "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    "<body><h1>Bad Gateway</h1><p>nginx</p></body></html>"
)
#: Fragments of Plausible's real error texts, so the message-driven branches are reached.
MESSAGES = st.one_of(
    st.sampled_from(
        [
            "Too many API requests in a short period of time, the limit is 600 per 10 seconds",
            "Too many API requests, the limit is 600 per hour",
            "This domain cannot be registered",
            "Your account has reached the limit",
            "Site could not be found",
            "Missing API key",
        ]
    ),
    st.builds(
        "in a short period of time, the limit is {} per {} seconds".format,
        st.integers(0, 10**4),
        st.one_of(
            st.integers(0, 10**30).map(str),
            st.floats(0, 1e30, allow_nan=False).map(lambda f: f"{f:f}"),
            st.integers(1, 500).map(lambda z: "1" + "0" * z),
            st.sampled_from(["0", "0.0", "0.000001", "00"]),
        ),
    ),
    ANY_TEXT,
)


#: Retry-After as a server or proxy might send it: seconds, HTTP dates, and any bytes at all.
RETRY_AFTER = st.one_of(
    st.integers(0, 10**30).map(lambda i: str(i).encode()),
    st.integers(0, 999)
    .flatmap(lambda i: spliced(str(i), TRICKY_LATIN1))
    .map(lambda t: t.encode("latin-1")),
    st.sampled_from([b"Wed, 21 Oct 2015 07:28:00 GMT", b"Mon, 01 Jan 0001 00:00:00 GMT", b"-1"]),
    st.datetimes().map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S GMT").encode()),
    st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"").strip()),
)


def _wrong(value: object, draw: st.DrawFn) -> object:
    """``value`` with one part dropped, mistyped or replaced, at any depth."""
    if isinstance(value, dict) and value and draw(st.integers(0, 3)):
        key = draw(st.sampled_from(sorted(value)))
        changed = dict(value)
        if draw(st.booleans()):
            del changed[key]
        else:
            changed[key] = _wrong(value[key], draw)
        return changed
    if isinstance(value, list) and value and draw(st.booleans()):
        return [_wrong(value[0], draw), *value[1:]]
    return draw(JSONISH)


def _json_bytes(value: object) -> bytes:
    return json.dumps(value).encode("utf-8", "surrogatepass")


@st.composite
def odd_responses(draw: st.DrawFn, valid: object) -> tuple[httpx.Response, str]:
    """A response a real (or broken) server or proxy could send, and what kind of body it has."""
    status = draw(
        st.one_of(
            st.sampled_from([200, 200, 201, 204, 301, 400, 401, 402, 403, 404, 406, 409, 422]),
            st.sampled_from([429, 429, 500, 502, 503, 504]),
            st.integers(200, 599),
        )
    )
    kind = draw(
        st.sampled_from(
            ["valid", "truncated", "html", "wrong", "jsonish", "empty", "error", "deep", "bytes"]
        )
    )
    good = _json_bytes(valid)
    body = {
        "valid": lambda: good,
        "truncated": lambda: good[: draw(st.integers(0, len(good) - 1))],
        "html": lambda: HTML_PAGE.encode(),
        "wrong": lambda: _json_bytes(_wrong(valid, draw)),
        "jsonish": lambda: _json_bytes(draw(JSONISH)),
        "empty": lambda: b"",
        "error": lambda: _json_bytes(
            {draw(st.sampled_from(["error", "message", "errors"])): draw(MESSAGES)}
        ),
        "deep": lambda: deep_json(
            draw(st.integers(100, 100_000)), draw(st.sampled_from("[{"))
        ).encode(),
        "bytes": lambda: draw(st.binary(max_size=200)),
    }[kind]()
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", draw(st.sampled_from([b"application/json", b"text/html", b"text/plain"])))
    ]
    if draw(st.booleans()):
        charset = draw(st.sampled_from([b"utf-8", b"latin-1", b"utf-16", b"no-such-codec", b""]))
        headers[0] = (b"content-type", headers[0][1] + b"; charset=" + charset)
    if status == 429 or draw(st.integers(0, 4)) == 0:
        retry_after = draw(RETRY_AFTER)
        headers.append((b"retry-after", retry_after))
    return httpx.Response(status, headers=headers, content=body), kind


def _client(response: httpx.Response) -> PlausibleClient:
    def handler(request: httpx.Request) -> httpx.Response:
        # A fresh copy per request: paginated methods may ask more than once.
        return httpx.Response(
            response.status_code, headers=response.headers.raw, content=response.content
        )

    return PlausibleClient(
        base_url="https://plausible.test",
        api_key="sk-fuzz",
        transport=httpx.MockTransport(handler),
        clock=lambda: 1_700_000_000.0,
    )


#: (client method, response, kind of body).
CALLS = st.sampled_from(sorted(METHODS)).flatmap(
    lambda name: odd_responses(METHODS[name][1]).map(lambda answer: (name, *answer))
)


@fuzz(400)
@given(case=CALLS)
@example(  # found: RecursionError from response.json() escaped _call
    case=("get_site", httpx.Response(200, content=b"[" * 100_000), "deep")
)
@example(  # found: RecursionError escaped _server_message too
    case=("create_site", httpx.Response(502, content=b"{" * 100_000), "deep")
)
@example(  # found: response.text raised UnicodeError ("UTF-16 stream does not start with BOM")
    case=(
        "get_site",
        httpx.Response(
            201, headers={"content-type": "text/html; charset=utf-16"}, content=b"<html>"
        ),
        "html",
    )
)
def test_every_odd_response_becomes_a_plausible_error(
    case: tuple[str, httpx.Response, str],
) -> None:
    name, response, kind = case
    call, _ = METHODS[name]
    with _client(response) as client:
        try:
            result: object = call(client)
        except PlausibleError as exc:
            result = exc
    tally(f"{kind} body -> {type(result).__name__}")
    if isinstance(result, PlausibleError):
        assert result.code
        assert str(result)
        # The documented body of a 200 is never refused.
        assert (response.status_code, kind) != (200, "valid"), result
    else:
        assert response.status_code == 200, result
        assert result is not None


@fuzz(500)
@given(
    status=st.one_of(st.sampled_from([400, 401, 402, 403, 404, 429, 500]), st.integers(201, 599)),
    message=MESSAGES,
    wrap=st.sampled_from(["error", "message", "raw"]),
    retry_after=st.none() | RETRY_AFTER,
    now=st.floats(0, 4e9),
)
@example(  # found: "²".isdigit() is true, float("²") raised ValueError
    status=429, message="x", wrap="error", retry_after="\u00b2".encode("latin-1"), now=0.0
)
@example(  # found: a burst window of 0 s divided by zero
    status=429,
    message="Too many API requests in a short period of time, the limit is 600 per 0 seconds",
    wrap="error",
    retry_after=None,
    now=1.7e9,
)
@example(  # found: a burst window of 10**20 s overflowed datetime.fromtimestamp
    status=429,
    message="in a short period of time, the limit is 1 per 100000000000000000000 seconds",
    wrap="message",
    retry_after=None,
    now=1.7e9,
)
def test_error_from_response_maps_every_error_response(
    status: int, message: str, wrap: str, retry_after: bytes | None, now: float
) -> None:
    body = (
        message.encode("utf-8", "surrogatepass") if wrap == "raw" else _json_bytes({wrap: message})
    )
    headers = [] if retry_after is None else [(b"retry-after", retry_after)]
    error = error_from_response(httpx.Response(status, headers=headers, content=body), now=now)
    assert isinstance(error, PlausibleError)
    assert error.status == status
    if isinstance(error, RateLimitedError):
        # Never in the past, and never further than the hourly window's cap.
        assert now - 1 <= error.reset_at.timestamp() <= now + 3600 + 1, error.reset_at


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_accepts_its_valid_body(name: str) -> None:
    """The fuzz test's baseline: with the documented 200 body, each method returns."""
    call, valid = METHODS[name]
    with _client(httpx.Response(200, json=valid)) as client:
        assert call(client) is not None

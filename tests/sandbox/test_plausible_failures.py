"""``PlausibleClient`` against the sandbox over real HTTP when things go wrong: 429s and their
reset times, refused connections and timeouts, crashes inside Plausible, and the API key kept
out of every log record and error.

The mapping table itself is covered in tests/unit/test_errors.py; here the sandbox proves
the client and the mapping agree with a server that speaks the reference's exact texts.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Callable

import pytest

from testkit.plausible_clients import SECRET, Box, assert_no_secret, expect_error
from worker.errors import (
    NotFoundError,
    PlausibleConnectionError,
    PlausibleError,
    RateLimitedError,
    ServerError,
)
from worker.plausible import PlausibleClient

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

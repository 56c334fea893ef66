"""The error tree and ``error_from_response``, the one mapping from a response to it.

Bodies are literal strings from shared/plausible-sites-api.md, so a drift in the matching rules
shows up here without a server.
"""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from worker.errors import (
    AuthenticationError,
    BadRequestError,
    DomainTakenError,
    ForbiddenError,
    NotFoundError,
    NotTheApiError,
    PaymentRequiredError,
    PermanentError,
    PlausibleConnectionError,
    PlausibleError,
    RateLimitedError,
    ServerError,
    TransientError,
)
from worker.plausible import error_from_response
from worker.plausible.responses import api_error_message

#: A fixed "now", 3 s past a 10 s boundary and 3 s past a whole UTC hour.
NOW = 1_800_000_003
NOW_DT = datetime.fromtimestamp(NOW, tz=UTC)

DOMAIN_TAKEN = (
    "domain: This domain cannot be registered. Perhaps one of your colleagues registered it? "
    "If that's not the case, please contact support@plausible.io\n"
)
INVALID_KEY = (
    "Invalid API key. Please make sure you're using a valid API key with access to the resource "
    "you've requested."
)
SITES_API = (
    "The account that owns this API key does not have access to Sites API. Please make sure "
    "you're using the API key of a subscriber account and that the subscription plan includes "
    "Sites API"
)
HOURLY = (
    "Too many API requests. The limit is 600 per hour. Please contact us to request more capacity."
)
LEGACY_HOURLY = (
    "Too many API requests. Your API key is limited to 600 requests per hour. "
    "Please contact us to request more capacity."
)
BURST = (
    "Too many API requests in a short period of time. The limit is 60 per 10 seconds. "
    "Please throttle your requests."
)


def _response(
    status: int, body: Any = None, *, text: str | None = None, **headers: str
) -> httpx.Response:
    if text is not None:
        return httpx.Response(status, text=text, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


def _map(response: httpx.Response, *, hour_seconds: float = 3600.0) -> PlausibleError:
    return error_from_response(response, now=NOW, hour_seconds=hour_seconds)


@pytest.mark.parametrize(
    ("status", "message", "cls", "code"),
    [
        (400, DOMAIN_TAKEN, DomainTakenError, "domain_taken"),
        (
            400,
            "Missing site ID. Please provide the required site_id parameter with your request.",
            BadRequestError,
            "missing_site_id",
        ),
        (400, "You must select a team with 'team_id' parameter.", BadRequestError, "team_required"),
        (400, "This name is reserved. Please choose another one", BadRequestError, "reserved_name"),
        (
            400,
            "This operation is unavailable for a consolidated view",
            BadRequestError,
            "consolidated_view",
        ),
        (400, "domain: can't be blank", BadRequestError, "validation_error"),
        (
            400,
            "Parameter `name` is required to create a shared link",
            BadRequestError,
            "validation_error",
        ),
        (
            401,
            "Missing API key. Please use a valid Plausible API key as a Bearer Token.",
            AuthenticationError,
            "missing_api_key",
        ),
        (401, INVALID_KEY, AuthenticationError, "invalid_api_key"),
        (402, SITES_API, PaymentRequiredError, "sites_api_unavailable"),
        (
            402,
            SITES_API.replace("Sites API", "Stats API"),
            PaymentRequiredError,
            "stats_api_unavailable",
        ),
        (
            402,
            "Your account has reached the limit of 10 sites. To unlock more sites, please upgrade "
            "your subscription.",
            PaymentRequiredError,
            "site_limit_reached",
        ),
        (
            402,
            "This Plausible site is locked due to missing active subscription. In order to access "
            "it, the site owner should subscribe to a suitable plan",
            PaymentRequiredError,
            "site_locked",
        ),
        (
            402,
            "Your current subscription plan does not include Shared Links",
            PaymentRequiredError,
            "shared_links_unavailable",
        ),
        (
            402,
            "Your current subscription plan does not include Custom Properties",
            PaymentRequiredError,
            "custom_props_unavailable",
        ),
        (402, "Payment required", PaymentRequiredError, "payment_required"),
        (403, "You can't add sites to the selected team.", ForbiddenError, "team_forbidden"),
        (404, "Site could not be found", NotFoundError, "site_not_found"),
        (404, "Goal could not be found", NotFoundError, "goal_not_found"),
        (404, "internal server error", NotFoundError, "not_found"),
        (500, "internal server error", ServerError, "server_error"),
        (503, "Service Unavailable", ServerError, "server_error"),
        (409, "conflict", PermanentError, "api_error"),
    ],
)
def test_error_body_maps_to_class_code_and_message(
    status: int, message: str, cls: type[PlausibleError], code: str
) -> None:
    """Each documented ``{"error": …}`` body lands on its class and stable code, message intact."""
    error = _map(_response(status, {"error": message}))
    assert type(error) is cls
    assert (error.status, error.code, error.message) == (status, code, message)


NGINX_404 = (
    "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n<center><h1>404 Not Found"
    "</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("Site could not be found", "site_not_found"),
        ("Goal could not be found", "goal_not_found"),
        ("internal server error", "not_found"),  # Ecto.NoResultsError in the controller (§5)
    ],
)
def test_plausibles_own_404s_keep_their_meaning(message: str, code: str) -> None:
    """The API's 404s are ``{"error": string}`` (§5, §7): the thing asked for is not there."""
    response = _response(404, {"error": message})
    assert api_error_message(response) == message
    error = _map(response)
    assert (type(error), error.code, error.message) == (NotFoundError, code, message)


@pytest.mark.parametrize(
    "response",
    [
        # Phoenix's router, JSON accepted (§5), and the shape of Phoenix's generated ErrorJSON.
        _response(404, {"message": "Not Found", "status": 404}),
        _response(404, {"errors": {"detail": "Not Found"}}),
        # Phoenix's HTML error page, a reverse proxy's page, a bare server's text, nothing.
        _response(404, text="<!DOCTYPE html><html><body>Not Found</body></html>"),
        _response(404, text=NGINX_404, **{"content-type": "text/html"}),
        _response(404, text="404 page not found"),
        _response(404, text=""),
        # Some other API's JSON: "error" is there but not the Sites API's string.
        _response(404, {"error": {"code": 404, "message": "Not Found"}}),
        _response(404, ["Not Found"]),
    ],
)
def test_a_404_not_in_the_apis_shape_is_no_api_at_the_base_url(response: httpx.Response) -> None:
    assert api_error_message(response) is None
    error = error_from_response(response, now=NOW, base_url="https://plausible.io")
    assert type(error) is NotTheApiError
    assert (error.status, error.code, error.retryable) == (404, "wrong_base_url", False)
    assert error.message == (
        "PLAUSIBLE_BASE_URL https://plausible.io answered 404 Not Found, which is not "
        "Plausible's API: is this Plausible? PLAUSIBLE_BASE_URL should be the site's root, e.g. "
        "https://plausible.io (Community Edition has no Sites API)"
    )


@pytest.mark.parametrize(
    ("base_url", "fix"),
    [
        ("http://127.0.0.1:8000/api/v1", "http://127.0.0.1:8000 (without /api/v1)"),
        ("https://stats.example.com/api/v1/", "https://stats.example.com (without /api/v1)"),
        ("https://stats.example.com/api", "https://stats.example.com (without /api)"),
        (
            "https://example.com/plausible/api/v1/sites",
            "https://example.com/plausible (without /api/v1/sites)",
        ),
        # The base URL's credentials, if any, are never repeated.
        ("https://user:secret@example.com/api/v1", "https://example.com (without /api/v1)"),
    ],
)
def test_a_base_url_ending_in_the_apis_path_is_told_which_url_to_set(
    base_url: str, fix: str
) -> None:
    response = _response(404, {"message": "Not Found", "status": 404})
    error = error_from_response(response, now=NOW, base_url=base_url)
    assert type(error) is NotTheApiError
    assert error.message.startswith("PLAUSIBLE_BASE_URL http")
    assert error.message.endswith(f"which is not Plausible's API: set PLAUSIBLE_BASE_URL={fix}")
    assert "secret" not in error.message


def test_framework_406_is_a_permanent_api_error() -> None:
    """Router/endpoint errors use ``{"message", "status"}`` (§5); 406 is a permanent api_error."""
    not_acceptable = _map(_response(406, {"message": "Not Acceptable", "status": 406}))
    assert type(not_acceptable) is PermanentError
    assert (not_acceptable.code, not_acceptable.message) == ("api_error", "Not Acceptable")


def test_non_json_body_becomes_the_message() -> None:
    """An HTML or plain-text error page is kept as text (truncated), not a decode crash."""
    error = _map(_response(502, text="<html>Bad Gateway</html>" + "x" * 2000))
    assert type(error) is ServerError
    assert error.message.startswith("<html>Bad Gateway</html>")
    assert len(error.message) == 500


def test_retryable_split_follows_the_tree() -> None:
    """Connection, 5xx and 429 errors are retryable; every 4xx is not."""
    assert _map(_response(500, {"error": "x"})).retryable
    assert _map(_response(429, {"error": HOURLY})).retryable
    assert PlausibleConnectionError("refused", code="network_error").retryable
    for status in (400, 401, 402, 403, 404, 406):
        error = _map(_response(status, {"error": "x"}))
        assert isinstance(error, PermanentError)
        assert not error.retryable


@pytest.mark.parametrize("message", [HOURLY, LEGACY_HOURLY])
def test_hourly_429_resets_at_the_next_whole_hour(message: str) -> None:
    """The hourly window is aligned to UTC hours, so the reset is the next hour boundary."""
    error = _map(_response(429, {"error": message}))
    assert isinstance(error, RateLimitedError)
    assert (error.code, error.limit, error.status) == ("rate_limited", "hourly", 429)
    assert error.reset_at == datetime(2027, 1, 15, 9, 0, tzinfo=UTC)
    assert error.reset_at.timestamp() == (NOW // 3600 + 1) * 3600
    assert error.retry_after(NOW_DT) == 3600 - 3


def test_hourly_429_uses_the_compressed_hour() -> None:
    """A sandbox with a 60 s "hour" resets on the next 60 s boundary."""
    error = _map(_response(429, {"error": HOURLY}), hour_seconds=60)
    assert isinstance(error, RateLimitedError)
    assert error.reset_at.timestamp() == (NOW // 60 + 1) * 60


def test_burst_429_resets_at_the_next_window_boundary() -> None:
    """The burst window length is read from "per S seconds"."""
    error = _map(_response(429, {"error": BURST}))
    assert isinstance(error, RateLimitedError)
    assert error.limit == "burst"
    assert error.reset_at.timestamp() == NOW - 3 + 10
    other = _map(_response(429, {"error": BURST.replace("per 10 seconds", "per 7 seconds")}))
    assert isinstance(other, RateLimitedError)
    assert other.reset_at.timestamp() == (NOW // 7 + 1) * 7


def test_retry_after_seconds_overrides_the_window() -> None:
    error = _map(_response(429, {"error": BURST}, **{"Retry-After": "42"}))
    assert isinstance(error, RateLimitedError)
    assert (error.limit, error.reset_at) == ("burst", NOW_DT + timedelta(seconds=42))


def test_retry_after_http_date_overrides_the_window() -> None:
    when = email.utils.formatdate(NOW + 120, usegmt=True)
    error = _map(_response(429, {"error": HOURLY}, **{"Retry-After": when}))
    assert isinstance(error, RateLimitedError)
    assert (error.limit, error.reset_at) == ("hourly", NOW_DT + timedelta(seconds=120))


def test_retry_after_is_capped_at_one_hour() -> None:
    error = _map(_response(429, {"error": BURST}, **{"Retry-After": "86400"}))
    assert isinstance(error, RateLimitedError)
    assert error.reset_at == NOW_DT + timedelta(hours=1)


def test_retry_after_in_the_past_means_now_and_garbage_is_ignored() -> None:
    past = email.utils.formatdate(NOW - 100, usegmt=True)
    error = _map(_response(429, {"error": BURST}, **{"Retry-After": past}))
    assert isinstance(error, RateLimitedError)
    assert error.reset_at == NOW_DT
    garbage = _map(_response(429, {"error": BURST}, **{"Retry-After": "soon"}))
    assert isinstance(garbage, RateLimitedError)
    assert garbage.reset_at.timestamp() == NOW - 3 + 10


def test_unknown_429_text_is_treated_as_the_hourly_quota() -> None:
    """Clients should match on 429, not on text (§4); the conservative guess is the long wait."""
    error = _map(_response(429, text="slow down"))
    assert isinstance(error, RateLimitedError)
    assert error.limit == "hourly"
    assert error.message == "slow down"


def test_error_str_and_repr_show_code_status_and_message() -> None:
    error = _map(_response(404, {"error": "Site could not be found"}))
    assert str(error) == "site_not_found (HTTP 404): Site could not be found"
    assert repr(error) == (
        "NotFoundError(code='site_not_found', status=404, message='Site could not be found')"
    )
    offline = PlausibleConnectionError("refused", code="network_error")
    assert str(offline) == "network_error (no response): refused"
    assert isinstance(offline, TransientError)


def test_retry_after_helper_never_goes_negative() -> None:
    error = RateLimitedError("x", limit="burst", reset_at=NOW_DT)
    assert error.retry_after(NOW_DT + timedelta(seconds=5)) == 0.0

"""The sandbox over real HTTP, asserted against the Sites API reference: the rate limits
(team buckets, windows, the clock offset, legacy keys' buckets) and the faults it injects."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from testkit.sandbox_http import create, error_of
from testkit.sandbox_process import SandboxProcess

# -- rate limits -------------------------------------------------------------------------------

HOURLY = (
    "Too many API requests. The limit is 3 per hour. Please contact us to request more capacity."
)
BURST = "Too many API requests in a short period of time. The limit is 1 per 1000000 seconds. Please throttle your requests."


def test_hourly_limit_counts_burst_rejections_and_is_shared_by_the_team(
    sandbox: SandboxProcess, http: httpx.Client
) -> None:
    sandbox.configure(
        hourly_limit=3, burst_limit=1, burst_seconds=1_000_000, hour_seconds=1_000_000_000
    )
    sandbox.add_key(key="second-key")
    assert http.get("/api/v1/sites").status_code == 200
    with sandbox.client("second-key") as second:
        assert second.get("/api/v1/sites").json() == {"error": BURST}
    assert error_of(http.get("/api/v1/sites")) == BURST
    fourth = http.get("/api/v1/sites")
    assert (fourth.status_code, fourth.json()) == (429, {"error": HOURLY})
    assert not any(h.lower().startswith(("retry-after", "x-ratelimit")) for h in fourth.headers)
    with sandbox.client("other-team-key") as other:
        assert other.get("/api/v1/sites").status_code == 200
    assert sandbox.state()["counters"]["rate_limited"] == 3


def test_invalid_keys_and_missing_site_ids_are_not_counted(
    sandbox: SandboxProcess, http: httpx.Client
) -> None:
    sandbox.configure(hourly_limit=1, hour_seconds=1_000_000_000)
    httpx.get(f"{sandbox.base_url}/api/v1/sites", headers={"authorization": "Bearer bogus"})
    http.get("/api/v1/sites/goals")
    assert http.get("/api/v1/sites").status_code == 200
    assert http.get("/api/v1/sites").status_code == 429


def test_hourly_window_rolls_over(sandbox: SandboxProcess, http: httpx.Client) -> None:
    sandbox.configure(hourly_limit=1, hour_seconds=0.5)
    statuses: list[int] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (429 in statuses and statuses[-1] == 200):
        statuses.append(http.get("/api/v1/sites").status_code)
    assert 429 in statuses
    assert statuses[-1] == 200


def test_a_clock_offset_moves_the_windows_and_the_request_log_records_sandbox_time() -> None:
    from sandbox.api import SandboxAPI
    from sandbox.http import Request
    from sandbox.state import Settings

    host = [9_999.8]  # 0.2 s before a burst boundary by the host's clock
    api = SandboxAPI(
        settings=Settings(burst_limit=1, burst_seconds=10, clock_offset_ms=500),
        clock=lambda: host[0],
    )
    api.add_key("k", api.add_team("T"))
    headers = [("authorization", "Bearer k"), ("accept", "application/json")]

    def status() -> int:
        return api.handle(Request("GET", "/api/v1/sites", headers=headers)).status

    assert status() == 200  # counted at 10_000.3: the sandbox is already in the next window
    host[0] = 9_999.9
    assert status() == 429  # same sandbox window, although the host is still in the old one
    host[0] = 10_009.6
    assert status() == 200  # 10_010.1 for the sandbox: a new window
    log = api.requests
    assert [(round(t, 1), code) for t, code, _ in log] == [
        (10_000.3, 200),
        (10_000.4, 429),
        (10_010.1, 200),
    ]
    assert {bucket for _, _, bucket in log} == {f"api_request:team:{api.world.teams[1].identifier}"}


def test_the_request_log_is_served_from_a_given_time(
    sandbox: SandboxProcess, http: httpx.Client
) -> None:
    start = time.time()
    assert http.get("/api/v1/sites").status_code == 200
    log = sandbox.admin.get("/_sandbox/requests", params={"since": start - 1}).json()["requests"]
    assert [entry[1] for entry in log] == [200]
    later = sandbox.admin.get("/_sandbox/requests", params={"since": time.time() + 60}).json()
    assert later == {"requests": []}


# -- fault injection ---------------------------------------------------------------------------


def test_fail_rate_answers_500_and_changes_nothing(
    sandbox: SandboxProcess, http: httpx.Client
) -> None:
    sandbox.configure(fail_rate=1.0)
    response = create(http, "fail.test")
    assert (response.status_code, response.json()) == (500, {"error": "internal server error"})
    state = sandbox.state()
    assert state["sites"] == []
    assert state["counters"]["failed_injected"] == 1
    # Faults never touch the admin routes.
    assert sandbox.admin.get("/_sandbox/health").json() == {"status": "ok"}


def test_drop_rate_applies_the_change_then_closes_without_answering(
    sandbox: SandboxProcess, http: httpx.Client
) -> None:
    sandbox.configure(drop_rate=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        create(http, "dropped.test")
    state = sandbox.state()
    assert [s["domain"] for s in state["sites"]] == ["dropped.test"]
    assert state["counters"]["dropped"] == 1


@pytest.fixture(scope="module")
def seeded() -> Iterator[SandboxProcess]:
    with SandboxProcess(extra_args=["--seed", "7", "--fail-rate", "0.5"]) as process:
        yield process


def test_faults_repeat_with_a_seed(seeded: SandboxProcess) -> None:
    def run() -> list[int]:
        seeded.reset()
        with seeded.client() as client:
            return [client.get("/api/v1/sites").status_code for _ in range(20)]

    first = run()
    assert {200, 500} <= set(first)
    assert run() == first


def test_admin_config_rejects_unknown_settings(sandbox: SandboxProcess) -> None:
    response = sandbox.admin.post("/_sandbox/config", json={"speed": 1})
    assert (response.status_code, response.json()) == (400, {"error": "unknown setting: speed"})


def test_embedded_sandbox_serves_in_a_thread() -> None:
    from sandbox.api import SandboxAPI
    from sandbox.server import start_in_thread

    api = SandboxAPI(seed=1)
    api.add_key("embedded-key", api.add_team("Embedded"))
    handle = start_in_thread(api)
    try:
        headers = {"authorization": "Bearer embedded-key"}
        created = httpx.post(
            f"{handle.url}/api/v1/sites", json={"domain": "in.test"}, headers=headers
        )
        link = httpx.put(
            f"{handle.url}/api/v1/sites/shared-links",
            json={"site_id": "in.test", "name": "n"},
            headers=headers,
        )
    finally:
        handle.stop()
    assert created.status_code == 200
    assert link.json()["url"].startswith(f"{handle.url}/share/in.test?auth=")


# -- legacy rate-limit buckets (§4) ---------------------------------------------------------------

LEGACY_HOURLY = (
    "Too many API requests. The limit is 2 per hour. Please contact us to request more capacity."
)


def test_legacy_keys_share_their_users_hourly_bucket(sandbox: SandboxProcess) -> None:
    sandbox.configure(legacy_hourly_limit=2, hourly_limit=100, hour_seconds=1_000_000_000)
    sandbox.add_legacy_key("pat-1", "pat")
    sandbox.add_legacy_key("pat-2", "pat")
    sandbox.add_legacy_key("sam-1", "sam")
    with (
        sandbox.client("pat-1") as first,
        sandbox.client("pat-2") as second,
        sandbox.client("sam-1") as sam,
    ):
        assert first.get("/api/v1/sites").status_code == 200
        # An unknown site on a site-context route still counts against the user.
        assert (
            second.put(
                "/api/v1/sites/goals",
                json={"site_id": "nowhere.test", "goal_type": "event", "event_name": "E"},
            ).status_code
            == 404
        )
        refused = first.post("/api/v1/sites", json={"domain": "late.test"})
        assert (refused.status_code, refused.json()) == (429, {"error": LEGACY_HOURLY})
        assert error_of(second.get("/api/v1/sites/teams")) == LEGACY_HOURLY
        assert sam.get("/api/v1/sites").status_code == 200
    # Team-scoped keys keep the team's own bucket and limit.
    with sandbox.client() as team_key:
        assert team_key.get("/api/v1/sites").status_code == 200


def test_legacy_key_on_a_resolved_site_counts_against_the_sites_team(
    sandbox: SandboxProcess,
) -> None:
    sandbox.configure(legacy_hourly_limit=1, hour_seconds=1_000_000_000)
    team = sandbox.add_team(name="Small quota", hourly_limit=2)
    sandbox.add_site(domain="quota.test", team=team["id"])
    view = "6f1c2a4e-0000-4000-8000-000000000002"
    sandbox.add_site(domain=view, team=team["id"], consolidated=True)
    sandbox.add_key(key="quota-team-key", team=team["id"])
    sandbox.add_legacy_key("legacy-key", "pat")
    sandbox.add_membership(user="pat", team=team["id"], role="owner")
    goal = {"site_id": "quota.test", "goal_type": "event", "event_name": "E"}
    team_hourly = "Too many API requests. The limit is 2 per hour. Please contact us to request more capacity."
    user_hourly = "Too many API requests. The limit is 1 per hour. Please contact us to request more capacity."
    with sandbox.client("legacy-key") as legacy, sandbox.client("quota-team-key") as team_key:
        assert legacy.get("/api/v1/sites").status_code == 200  # the user's bucket: now full
        assert error_of(legacy.get("/api/v1/sites")) == user_hourly
        # A consolidated view is not a regular site: still the user's bucket.
        assert error_of(legacy.get(f"/api/v1/sites/{view}")) == user_hourly
        assert legacy.put("/api/v1/sites/goals", json=goal).status_code == 200
        assert team_key.get("/api/v1/sites").status_code == 200
        refused = legacy.put("/api/v1/sites/goals", json=goal)
        assert (refused.status_code, refused.json()) == (429, {"error": team_hourly})
        assert error_of(team_key.get("/api/v1/sites")) == team_hourly

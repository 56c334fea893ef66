"""The quota scheduler with real workers, a real broker and status table, and the sandbox's limits
over compressed windows: the interactive reserve, round-robin between batches, two accounts on
two teams, and a flushed broker that cannot reset the counts into overspending."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testkit.waiting import wait_for
from testkit.waiting import wait_for as wait_until
from testkit.workers import Stack, assert_all_succeeded, assert_provisioned_once, provision_request
from worker.jobs.states import JobStatus, Priority
from worker.times import as_utc

#: A burst window of 2 s on both sides (the sandbox and the provisioner), the hour out of reach.
SECONDS = 2.0
GUARD = 0.2


def quota(burst: int, **more: Any) -> dict[str, Any]:
    return {"burst_limit": burst, "burst_seconds": SECONDS, "hourly_limit": 10_000_000, **more}


def requests_log(stack: Stack) -> list[list[Any]]:
    return list(stack.sandbox.admin.get("/_sandbox/requests").json()["requests"])


def per_window(log: list[list[Any]], bucket: str | None = None) -> Counter[int]:
    """Requests Plausible would count, by burst window (by the sandbox's clock)."""
    return Counter(int(at // SECONDS) for at, _, where in log if bucket is None or where == bucket)


def enqueue_bulk(stack: Stack, batch: str, count: int) -> list[str]:
    return [
        stack.store.enqueue(
            provision_request(f"{batch}{n}.example.com"),
            key=f"{batch}-{n}",
            batch=batch,
            priority=Priority.bulk,
        ).job.id
        for n in range(count)
    ]


def test_new_signups_start_at_once_behind_a_bulk_backlog(stack: Stack) -> None:
    limits = quota(20)
    stack.sandbox.configure(**limits)
    stack.start_worker(
        concurrency=4,
        **limits,
        quota_guard_seconds=GUARD,
        interactive_reserve=0.2,
        reserve_release_seconds=0.3,
    )
    bulk = enqueue_bulk(stack, "backlog", 40)  # 160 calls: 8 windows or more
    wait_until(
        lambda: stack.status_counts(bulk)[JobStatus.succeeded] >= 4,
        timeout=30,
        describe=lambda: f"the backlog to start; {stack.status_counts(bulk)}\n{stack.logs()}",
    )
    signups = []
    for n in range(3):
        signup = stack.submit(provision_request(f"signup{n}.example.com"), key=f"signup-{n}").job
        signups.append(signup.id)
        done = stack.wait_done([signup.id], timeout=20)[0]
        assert done.status is JobStatus.succeeded, (done.error_code, done.error_message)
        assert done.started_at is not None
        # Its reserve was there: it started within the window it arrived in, or the next when
        # a signup before it in the same window took the calls held for one, not behind the
        # backlog.
        arrived = math.floor(as_utc(signup.created_at).timestamp() / SECONDS)
        assert as_utc(done.started_at).timestamp() < (arrived + 2) * SECONDS
        left = stack.status_counts(bulk)
        assert left[JobStatus.queued] >= 5, left
    jobs = stack.wait_done(bulk + signups, timeout=60)
    assert_all_succeeded(jobs)
    assert_provisioned_once(stack.sandbox.state(), jobs)
    assert stack.sandbox.state()["counters"]["rate_limited"] == 0
    windows = per_window(requests_log(stack))
    assert max(windows.values()) <= 20
    # While work waited, bulk jobs were given each window but the one signup's calls (4) that
    # the reserve holds to its end: the windows between the first and the last were (almost
    # all) spent to those 16, and never past 20 with a signup.
    inner = [windows[w] for w in sorted(windows)[1:-1]]
    assert sum(1 for n in inner if n >= 20 - 4) >= 0.8 * len(inner), windows


def test_a_small_batch_is_not_stuck_behind_a_large_one(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    limits = quota(12)
    stack.sandbox.configure(**limits)
    big = enqueue_bulk(stack, "big", 30)
    small = enqueue_bulk(stack, "small", 6)  # queued after every job of the big batch
    stack.start_worker(concurrency=2, **limits, quota_guard_seconds=GUARD, interactive_reserve=0)
    stack.wait_done(small, timeout=30)
    big_left = stack.status_counts(big)
    # 3 jobs a window, shared round-robin: the small batch was done in about 4 windows.
    assert big_left[JobStatus.queued] >= 15, big_left
    jobs = stack.wait_done(big + small, timeout=60)
    assert_all_succeeded(jobs)
    assert stack.sandbox.state()["counters"]["rate_limited"] == 0


def test_two_accounts_on_two_teams_each_fill_their_own_quota(
    sqlite_stack: Stack, tmp_path: Path
) -> None:
    stack = sqlite_stack
    limits = quota(8)
    stack.sandbox.configure(**limits)
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(
        '[accounts.agency-b]\napi_key_env = "PLAUSIBLE_API_KEY_B"\nburst_limit = 8\n'
        f"burst_seconds = {SECONDS}\n"
    )
    stack.start_worker(
        concurrency=4,
        **limits,
        quota_guard_seconds=GUARD,
        accounts_file=accounts,
        extra_env={"PLAUSIBLE_API_KEY_B": stack.sandbox.other_team_api_key or ""},
    )
    ids = []
    for n in range(10):
        ids.append(stack.submit(provision_request(f"a{n}.example.com")).job.id)
        b = provision_request(f"b{n}.example.com").model_copy(update={"account": "agency-b"})
        ids.append(stack.submit(b).job.id)
    jobs = stack.wait_done(ids, timeout=60)
    assert_all_succeeded(jobs)
    state = stack.sandbox.state()
    assert state["counters"]["rate_limited"] == 0
    teams = {site["domain"][0]: site["team"] for site in state["sites"]}
    assert teams["a"] != teams["b"]  # each account's sites went to its own team
    log = requests_log(stack)
    buckets = {where for _, _, where in log}
    assert len(buckets) == 2
    by_team = [per_window(log, bucket) for bucket in buckets]
    assert all(max(windows.values()) <= 8 for windows in by_team)
    both = per_window(log)
    # Side by side: in some window the two teams together sent more than one quota allows.
    assert max(both.values()) > 8, both


def test_a_broker_flushed_mid_window_resets_nothing_into_overspending(
    stack: Stack, flush_broker: Callable[[], int]
) -> None:
    limits = quota(12)
    stack.sandbox.configure(latency_ms=50, **limits)
    stack.start_worker(concurrency=2, **limits, quota_guard_seconds=GUARD)
    ids = stack.submit_sites(f"flush{n}.example.com" for n in range(15))
    wait_for(
        lambda: stack.status_counts(ids)[JobStatus.succeeded] >= 3,
        timeout=30,
        describe=lambda: f"the first jobs; {stack.status_counts(ids)}\n{stack.logs()}",
    )
    flush_broker()  # messages and every broker key gone; the quota's counts are in the database
    jobs = stack.wait_done(ids, timeout=90)
    assert_all_succeeded(jobs)
    assert_provisioned_once(stack.sandbox.state(), jobs)
    assert stack.sandbox.state()["counters"]["rate_limited"] == 0
    assert max(per_window(requests_log(stack)).values()) <= 12

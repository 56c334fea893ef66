"""The quota: window arithmetic, the shared limiter, one job's permits and the scheduler."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from testkit.databases import migrated_engine
from testkit.fakes import RecordingDispatcher
from worker.accounts import Accounts, Quota, load_accounts
from worker.errors import QuotaWait, RateLimitedError
from worker.jobs.specs import GoalSpec, JobRequest, Progress, SiteRecord, calls_needed
from worker.jobs.states import Operation, Priority
from worker.jobs.store import JobStore
from worker.quota import windows
from worker.quota.limiter import Limiter
from worker.quota.permits import JobPermits
from worker.quota.scheduler import PUBLISH_EVERY, Scheduler
from worker.quota.windows import BURST, HOUR, Window
from worker.settings import Settings

QUOTA = Quota("q", hourly_limit=600, burst_limit=60, burst_seconds=10, hour_seconds=3600)
#: A moment well inside a burst window and an hour (both start at multiples of their length).
T0 = 1_800_000_000.0 + 3.0


class Clock:
    """Epoch seconds that tests move by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'q.db'}" if request.param == "sqlite" else None
    engine = migrated_engine(url or request.getfixturevalue("postgres_url"))
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limiter(engine: Engine, clock: Clock) -> Limiter:
    return Limiter(engine, interactive_reserve=0.1, release_seconds=1.0, guard=0.5, clock=clock)


def provision(domain: str, goals: int = 2, links: int = 1) -> JobRequest:
    return JobRequest(
        operation=Operation.provision_site,
        domain=domain,
        goals=tuple(GoalSpec(goal_type="event", event_name=f"E{n}") for n in range(goals)),
        shared_links=tuple(f"L{n}" for n in range(links)),
    )


# -- windows -----------------------------------------------------------------------------------


def test_windows_are_aligned_to_the_epoch_as_plausible_aligns_them() -> None:
    assert windows.current(QUOTA, BURST, 1_800_000_009.99) == Window(BURST, 180_000_000)
    assert windows.current(QUOTA, BURST, 1_800_000_010.0) == Window(BURST, 180_000_001)
    assert windows.current(QUOTA, HOUR, 1_800_000_000.0) == Window(HOUR, 1_800_000_000 // 3600)


def test_a_request_near_a_boundary_is_charged_to_both_windows() -> None:
    inside = windows.span(QUOTA, 1_800_000_005.0, guard=0.5)
    assert inside == [Window(HOUR, 500_000), Window(BURST, 180_000_000)]
    before = windows.span(QUOTA, 1_800_000_009.7, guard=0.5)
    after = windows.span(QUOTA, 1_800_000_010.3, guard=0.5)
    both = [Window(BURST, 180_000_000), Window(BURST, 180_000_001)]
    assert [w for w in before if w.kind == BURST] == both
    assert [w for w in after if w.kind == BURST] == both


# -- the limiter -------------------------------------------------------------------------------


def test_permits_never_exceed_the_limit_whoever_asks_concurrently(
    limiter: Limiter, engine: Engine
) -> None:
    granted = Counter[int]()
    lock = threading.Lock()

    def worker(n: int) -> None:
        other = Limiter(engine, guard=0.5, clock=limiter.clock)  # as another process would
        for _ in range(20):
            if other.take(QUOTA, other.span(QUOTA), 1, Priority.interactive) is None:
                with lock:
                    granted[n] += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted.values()) == 60  # 160 asked, exactly the burst limit granted
    usage = {u.window.kind: u for u in limiter.usage(QUOTA)}
    assert (usage[BURST].used, usage[BURST].remaining) == (60, 0)
    assert usage[HOUR].used == 60


def test_a_take_is_all_or_nothing_across_windows(limiter: Limiter, clock: Clock) -> None:
    clock.now = T0 + 6.7  # within the guard of the next burst window
    span = limiter.span(QUOTA)
    assert len([w for w in span if w.kind == BURST]) == 2
    nxt = Window(BURST, windows.current(QUOTA, BURST, clock.now).index + 1)
    assert limiter.take(QUOTA, [nxt], 55, Priority.interactive) is None
    refusal = limiter.take(QUOTA, span, 10, Priority.interactive)
    assert refusal is not None
    assert refusal.window == nxt
    current = {u.window: u.used for u in limiter.usage(QUOTA)}
    assert current[windows.current(QUOTA, BURST, clock.now)] == 0  # nothing was taken


def test_bulk_leaves_the_interactive_reserve_until_it_is_released(
    limiter: Limiter, clock: Clock
) -> None:
    assert limiter.take(QUOTA, limiter.span(QUOTA), 54, Priority.bulk) is None
    refusal = limiter.take(QUOTA, limiter.span(QUOTA), 1, Priority.bulk)
    assert refusal is not None
    burst = windows.current(QUOTA, BURST, clock.now)
    # Released one second (plus the guard) before the window ends.
    assert refusal.retry_at == windows.end(QUOTA, burst) - 0.5 - 1.0
    clock.now = refusal.retry_at
    # The reserve above one signup's calls (6 - 4) goes to bulk; those 4 are held to the end.
    assert limiter.take(QUOTA, limiter.span(QUOTA), 2, Priority.bulk) is None
    assert limiter.room(QUOTA, Priority.bulk) == 0
    assert limiter.room(QUOTA, Priority.interactive) == 4
    clock.now = windows.end(QUOTA, burst) + 0.5 - 0.01  # the window still in the span
    assert limiter.take(QUOTA, limiter.span(QUOTA), 4, Priority.interactive) is None
    assert limiter.room(QUOTA, Priority.interactive) == 0


def test_one_signup_s_calls_are_never_released_to_bulk_whatever_the_limits(
    engine: Engine, clock: Clock
) -> None:
    """15 calls per 5 s: the whole reserve is one 4-call signup, so nothing is released: a
    signup arriving at the window's last moment still finds room, where it used to wait for the
    next window behind bulk jobs that took the released reserve."""
    small = Quota("small", hourly_limit=600, burst_limit=15, burst_seconds=5, hour_seconds=3600)
    limiter = Limiter(engine, interactive_reserve=0.1, release_seconds=1.0, guard=0.5, clock=clock)
    burst = windows.current(small, BURST, clock.now)
    assert (limiter.reserve(small, BURST), limiter.held(small, BURST)) == (4, 4)
    assert not limiter.releases(small, BURST)
    assert limiter.take(small, limiter.span(small), 11, Priority.bulk) is None
    refusal = limiter.take(small, limiter.span(small), 1, Priority.bulk)
    assert refusal is not None
    # Bulk asks again once the window is out of the span, not at a release that gives nothing.
    assert refusal.retry_at == windows.end(small, burst) + 0.5
    for moment in (limiter.release_at(small, burst), windows.end(small, burst) + 0.49):
        clock.now = moment
        assert limiter.room(small, Priority.bulk) == 0
        assert limiter.room(small, Priority.interactive) == 4
    # And the scheduler is not woken for a release that changes nothing.
    clock.now = T0
    assert limiter.next_change(small) == windows.end(small, burst) + 0.5


def test_the_hour_releases_all_but_one_signup_s_calls_before_it_ends(
    limiter: Limiter, clock: Clock
) -> None:
    hour = windows.current(QUOTA, HOUR, clock.now)
    assert (limiter.reserve(QUOTA, HOUR), limiter.held(QUOTA, HOUR)) == (60, 4)
    # 56 calls are released: two burst windows (plus one) before the hour ends.
    assert limiter.release_at(QUOTA, hour) == windows.end(QUOTA, hour) - 0.5 - 2 * 10
    assert limiter.limit(QUOTA, hour, Priority.bulk, clock.now) == 540
    assert limiter.limit(QUOTA, hour, Priority.bulk, limiter.release_at(QUOTA, hour)) == 596
    assert limiter.limit(QUOTA, hour, Priority.interactive, clock.now) == 600


def test_no_reserve_holds_nothing_and_bulk_may_spend_the_whole_window(engine: Engine) -> None:
    limiter = Limiter(engine, interactive_reserve=0)
    burst = Window(BURST, 1)
    assert limiter.held(QUOTA, BURST) == 0
    assert limiter.limit(QUOTA, burst, Priority.bulk, 0.0) == 60


def test_unused_permits_go_back_only_to_windows_still_open(limiter: Limiter, clock: Clock) -> None:
    span = limiter.span(QUOTA)
    assert limiter.take(QUOTA, span, 4, Priority.interactive) is None
    limiter.give_back(QUOTA, dict.fromkeys(span, 3))
    assert limiter.room(QUOTA, Priority.interactive) == 59
    clock.now += 3600  # the hour and the burst window are over
    limiter.give_back(QUOTA, dict.fromkeys(span, 1))
    assert limiter._read(QUOTA, span) == dict.fromkeys(span, (1, False))


def test_a_window_marked_spent_takes_nothing_more_and_refunds_do_not_reopen_it(
    limiter: Limiter, clock: Clock
) -> None:
    span = limiter.span(QUOTA)
    assert limiter.take(QUOTA, span, 2, Priority.interactive) is None
    burst = windows.current(QUOTA, BURST, clock.now)
    limiter.mark_spent(QUOTA, burst)
    refusal = limiter.take(QUOTA, span, 1, Priority.interactive)
    assert refusal is not None
    assert (refusal.window, refusal.spent) == (burst, True)
    limiter.give_back(QUOTA, {burst: 2})
    assert limiter.room(QUOTA, Priority.interactive) == 0
    clock.now = windows.end(QUOTA, burst) + 0.6  # the next window is unaffected
    assert limiter.take(QUOTA, limiter.span(QUOTA), 1, Priority.interactive) is None


# -- one job's permits -------------------------------------------------------------------------


def test_calls_needed_counts_what_is_left_on_the_happy_path() -> None:
    request = provision("a.example.com", goals=3, links=2)
    assert calls_needed(request, Progress()) == 6
    done = Progress(site=SiteRecord(domain="a.example.com", timezone="UTC"))
    assert calls_needed(request, done) == 5
    by_name = JobRequest(
        operation=Operation.delete_goal,
        domain="a.example.com",
        goal=GoalSpec(goal_type="event", event_name="x"),
    )
    assert calls_needed(by_name, Progress()) == 2
    assert calls_needed(by_name, Progress(goal_id=7)) == 1


def test_a_job_spends_its_reservation_then_takes_what_it_needs_in_a_new_window(
    limiter: Limiter, clock: Clock
) -> None:
    span = limiter.span(QUOTA)
    assert limiter.take(QUOTA, span, 4, Priority.bulk) is None  # as the scheduler reserves
    left = [4]
    permits = JobPermits(
        limiter, QUOTA, Priority.bulk, {w.key: 4 for w in span}, needed=lambda: left[0]
    )
    for _ in range(2):
        permits.before_request()
        left[0] -= 1
    assert limiter.room(QUOTA, Priority.interactive) == 56  # no new permits for those two
    clock.now = windows.end(QUOTA, windows.current(QUOTA, BURST, clock.now)) + 0.6
    permits.before_request()  # a new burst window: the 2 calls still needed are taken there
    left[0] -= 1
    assert limiter.room(QUOTA, Priority.interactive) == 58
    permits.release()
    assert limiter.room(QUOTA, Priority.interactive) == 59  # the unused one went back


def test_no_room_raises_quota_wait_before_anything_is_sent(limiter: Limiter, clock: Clock) -> None:
    assert limiter.take(QUOTA, limiter.span(QUOTA), 60, Priority.interactive) is None
    permits = JobPermits(limiter, QUOTA, Priority.interactive, {}, needed=lambda: 4)
    with pytest.raises(QuotaWait) as raised:
        permits.before_request()
    assert "burst window full" in raised.value.message
    assert raised.value.retry_at > clock.now


def test_a_429_shuts_the_window_it_landed_in(limiter: Limiter, clock: Clock) -> None:
    permits = JobPermits(limiter, QUOTA, Priority.interactive, {}, needed=lambda: 1)
    permits.before_request()
    reset = clock.now + 7
    from datetime import UTC, datetime

    refused = RateLimitedError(
        "Too many", limit="burst", reset_at=datetime.fromtimestamp(reset, tz=UTC)
    )
    permits.after_response(refused)
    assert limiter.room(QUOTA, Priority.interactive) == 0
    assert limiter.room(QUOTA, Priority.bulk) == 0


# -- the scheduler -----------------------------------------------------------------------------


def accounts_for(**quota: float) -> Accounts:
    limits = {"hourly_limit": 600, "burst_limit": 60, "burst_seconds": 10, **quota}
    settings = Settings(**limits)  # type: ignore[arg-type]
    return load_accounts(settings)


@pytest.fixture
def store(engine: Engine) -> JobStore:
    return JobStore(engine)


def scheduler(store: JobStore, limiter: Limiter, accounts: Accounts) -> Scheduler:
    return Scheduler(store, limiter, accounts, RecordingDispatcher())


def test_interactive_jobs_go_first_and_only_what_fits_is_dispatched(
    store: JobStore, limiter: Limiter
) -> None:
    bulk = [
        store.enqueue(provision(f"b{n}.example.com"), batch="big", priority=Priority.bulk).job
        for n in range(20)
    ]
    signup = store.enqueue(provision("new.example.com")).job
    sched = scheduler(store, limiter, accounts_for())
    dispatched = sched.tick()
    assert dispatched[0] == signup.id
    # 4 calls each: the interactive job, then bulk until 54 of the 60 are taken (12 jobs): the
    # reserve stays whole for the next signups until it is released near the window's end.
    assert len(dispatched) == 1 + 12
    assert set(dispatched[1:]) <= {j.id for j in bulk}
    assert sched.tick() == []  # nothing more fits in this window
    reserved = store.get(signup.id)
    assert reserved is not None
    assert reserved.permits is not None
    assert set(reserved.permits.values()) == {4}


def test_a_tick_admitting_many_jobs_publishes_them_as_it_goes(
    store: JobStore, limiter: Limiter
) -> None:
    """Published in chunks, not all at the end: otherwise, with a lifted quota, the first jobs
    of a long tick would sit marked dispatched but unpublished, and look lost to the sweeper."""
    for n in range(3 * PUBLISH_EVERY + 5):
        store.enqueue(provision(f"s{n}.example.com", goals=0, links=0))
    dispatcher = RecordingDispatcher()
    accounts = load_accounts(Settings(hourly_limit=10_000, burst_limit=10_000))
    sched = Scheduler(store, limiter, accounts, dispatcher)
    dispatched = sched.tick()
    assert len(dispatched) == 3 * PUBLISH_EVERY + 5
    assert [len(c) for c in dispatcher.calls] == [PUBLISH_EVERY] * 3 + [5]
    assert dispatcher.published == dispatched


def test_a_failed_publish_gives_the_permits_back_and_offers_the_jobs_again(
    store: JobStore, limiter: Limiter
) -> None:
    class DownBroker(RecordingDispatcher):
        def publish(
            self, job_ids: Sequence[str], *, first: bool = False, bulk: bool = False
        ) -> None:
            raise ConnectionError("broker down")

    ids = [store.enqueue(provision(f"d{n}.example.com")).job.id for n in range(3)]
    accounts = accounts_for()
    quota = accounts.quotas["default"]
    room = limiter.room(quota, Priority.interactive)
    with pytest.raises(ConnectionError):
        Scheduler(store, limiter, accounts, DownBroker()).tick()
    assert limiter.room(quota, Priority.interactive) == room  # nothing spent on them
    for job_id in ids:
        job = store.get(job_id)
        assert job is not None
        assert (job.dispatched_at, job.permits) == (None, None)
    assert Scheduler(store, limiter, accounts, RecordingDispatcher()).tick() == ids


def test_at_most_ahead_dispatched_jobs_wait_for_a_worker(store: JobStore, limiter: Limiter) -> None:
    ids = [store.enqueue(provision(f"a{n}.example.com", goals=0, links=0)).job.id for n in range(9)]
    accounts = load_accounts(Settings(hourly_limit=10_000, burst_limit=10_000))
    sched = Scheduler(store, limiter, accounts, RecordingDispatcher(), ahead=4)
    first = sched.tick()
    assert first == ids[:4]
    assert sched.tick() == []  # four wait in the broker already
    assert store.claim(first[0], lease_seconds=10) is not None  # a worker starts one
    assert sched.tick() == [ids[4]]


def test_bulk_batches_share_the_window_round_robin(
    store: JobStore, limiter: Limiter, clock: Clock
) -> None:
    for n in range(30):
        store.enqueue(provision(f"a{n}.example.com"), batch="big", priority=Priority.bulk)
    for n in range(4):
        store.enqueue(provision(f"s{n}.example.com"), batch="small", priority=Priority.bulk)
    sched = scheduler(store, limiter, accounts_for())
    first = sched.tick()
    batches = Counter(store.get(job_id).batch_id for job_id in first)  # type: ignore[union-attr]
    assert batches == {"big": 9, "small": 4}  # alternating until the small batch ran out


def test_the_round_robin_resumes_after_the_batch_served_last(
    store: JobStore, limiter: Limiter, clock: Clock
) -> None:
    for batch in ("a", "b", "c"):
        for n in range(10):
            store.enqueue(
                provision(f"{batch}{n}.example.com", goals=13, links=0),  # 14 calls each
                batch=batch,
                priority=Priority.bulk,
            )
    sched = scheduler(store, limiter, accounts_for())
    order = []
    for _ in range(3):
        for job_id in sched.tick():  # 3 jobs of 14 calls fit in 54
            order.append(store.get(job_id).batch_id)  # type: ignore[union-attr]
        clock.now += 10
    assert order == ["a", "b", "c", "a", "b", "c", "a", "b", "c"]


def test_two_schedulers_never_dispatch_a_job_twice_or_overspend(
    store: JobStore, limiter: Limiter, engine: Engine
) -> None:
    for n in range(40):
        store.enqueue(provision(f"x{n}.example.com"))
    accounts = accounts_for()
    results: list[list[str]] = []

    def run() -> None:
        other = Limiter(engine, guard=0.5, clock=limiter.clock)
        results.append(scheduler(JobStore(engine), other, accounts).tick())

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    dispatched = [job_id for result in results for job_id in result]
    assert len(dispatched) == len(set(dispatched)) == 15  # 60 permits, 4 per job
    assert limiter.room(QUOTA_OF_DEFAULT, Priority.interactive) == 0


QUOTA_OF_DEFAULT = Quota("default", 600, 60, 10.0, 3600.0)


def test_each_quota_fills_on_its_own(store: JobStore, limiter: Limiter, tmp_path: Path) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text('[accounts.b]\napi_key_env = "KEY_B"\nburst_limit = 8\n')
    accounts = accounts_for(accounts_file=path)
    for n in range(10):
        store.enqueue(provision(f"d{n}.example.com"))
        request = provision(f"o{n}.example.com").model_copy(update={"account": "b"})
        store.enqueue(request)
    dispatched = scheduler(store, limiter, accounts).tick()
    by_account = Counter(store.get(job_id).account for job_id in dispatched)  # type: ignore[union-attr]
    assert by_account == {"default": 10, "b": 2}  # 40 of 60 calls; 8 of 8 calls


# -- the report --------------------------------------------------------------------------------


def test_a_batch_eta_counts_the_work_ahead_of_it_and_the_budget(
    store: JobStore, limiter: Limiter, clock: Clock
) -> None:
    from worker.quota.report import Reporter

    reporter = Reporter(store, limiter, accounts_for())
    for n in range(300):
        store.enqueue(provision(f"big{n}.example.com"), batch="big", priority=Priority.bulk)
    for n in range(30):
        store.enqueue(provision(f"s{n}.example.com"), batch="small", priority=Priority.bulk)
    for n in range(5):
        store.enqueue(provision(f"i{n}.example.com"))
    eta = reporter.batch_eta("small")
    assert eta is not None
    # 120 calls of its own, as many of the big batch's (round-robin), 20 interactive: 260 calls
    # at 60 per 10 s, all within this hour's 600.
    assert eta.timestamp() == pytest.approx(clock.now + 260 / 6)
    big = reporter.batch_eta("big")
    assert big is not None
    # 1,200 + 120 + 20 calls: the hour's 600 now, then 600 in each hour after.
    hour_end = windows.end(QUOTA_OF_DEFAULT, windows.current(QUOTA_OF_DEFAULT, HOUR, clock.now))
    assert big.timestamp() == pytest.approx(hour_end + 3600 + 140 / 6)
    assert reporter.batch_eta("nothing") is None


def test_the_quota_report_shows_windows_and_waiting_jobs(
    store: JobStore, limiter: Limiter, clock: Clock
) -> None:
    from worker.quota.report import Reporter

    store.enqueue(provision("a.example.com"))
    store.enqueue(provision("b.example.com"), batch="x", priority=Priority.bulk)
    limiter.take(QUOTA_OF_DEFAULT, limiter.span(QUOTA_OF_DEFAULT), 7, Priority.interactive)
    [report] = Reporter(store, limiter, accounts_for()).quotas()
    assert report["quota"] == "default"
    assert report["waiting"] == {"interactive": 1, "bulk": 1}
    by_kind = {w["kind"]: w for w in report["windows"]}
    assert (by_kind["burst"]["used"], by_kind["burst"]["remaining"]) == (7, 53)
    assert (by_kind["hour"]["limit"], by_kind["hour"]["interactive_reserve"]) == (600, 60)
    assert by_kind["burst"]["resets_at"].startswith("20")


def test_the_reserve_is_released_as_early_as_jobs_lately_need_to_finish(
    engine: Engine, limiter: Limiter
) -> None:
    from testkit.clock import FakeClock

    clock = FakeClock()
    store = JobStore(engine, clock=clock)
    for n in range(10):
        job = store.enqueue(provision(f"slow{n}.example.com")).job
        assert job.id in store.admit({job.id: {}})
        claim = store.claim(job.id, lease_seconds=60)
        assert claim is not None
        clock.advance(1.2)  # each took 1.2 s from its dispatch to done (a slow API)
        store.succeed(claim, Progress())
    sched = scheduler(store, limiter, accounts_for())
    assert limiter.release_seconds == 1.0
    sched.tick()
    assert limiter.release_seconds == pytest.approx(1.2)
    burst = windows.current(QUOTA_OF_DEFAULT, BURST, limiter.clock())
    assert limiter.release_at(QUOTA_OF_DEFAULT, burst) == pytest.approx(
        windows.end(QUOTA_OF_DEFAULT, burst) - 0.5 - 1.2
    )


def test_the_reserve_holds_a_typical_signup_whatever_the_limits(engine: Engine) -> None:
    small = Quota("small", hourly_limit=600, burst_limit=15, burst_seconds=5, hour_seconds=3600)
    tiny = Quota("tiny", hourly_limit=600, burst_limit=3, burst_seconds=5, hour_seconds=3600)
    limiter = Limiter(engine, interactive_reserve=0.1)
    assert limiter.reserve(small, BURST) == 4  # 10 % would be 1.5 calls: less than one signup
    assert limiter.reserve(small, HOUR) == 60
    assert limiter.reserve(tiny, BURST) == 2  # never the whole window: bulk jobs still run
    assert Limiter(engine, interactive_reserve=0).reserve(small, BURST) == 0  # off means off


def test_a_signup_is_admitted_at_once_while_an_import_fills_a_small_window(
    store: JobStore, limiter: Limiter
) -> None:
    """15 calls per 5 s: a 10 % reserve would keep 1.5 calls, less than one 4-call signup, and
    the signup would wait a window behind the import. The reserve keeps 4."""
    for n in range(20):
        store.enqueue(provision(f"b{n}.example.com"), batch="big", priority=Priority.bulk)
    sched = scheduler(store, limiter, accounts_for(burst_limit=15, burst_seconds=5))
    assert len(sched.tick()) == 2  # 8 calls: a third job would take 3 of the 4 kept
    assert sched.tick() == []  # the import has all it may have of this window
    signup = store.enqueue(provision("new.example.com")).job
    assert sched.tick() == [signup.id]


def test_a_signup_arriving_after_the_release_is_admitted_in_the_same_window(
    store: JobStore, limiter: Limiter, clock: Clock
) -> None:
    """The import took what it may of the window; near its end (past the moment the reserve
    used to be released, and inside the guard) a signup still finds its calls held."""
    for n in range(20):
        store.enqueue(provision(f"b{n}.example.com"), batch="big", priority=Priority.bulk)
    sched = scheduler(store, limiter, accounts_for(burst_limit=15, burst_seconds=5))
    [quota] = sched.accounts.quotas.values()
    assert len(sched.tick()) == 2
    burst = windows.current(quota, BURST, clock.now)
    for moment in (limiter.release_at(quota, burst), windows.end(quota, burst)):
        clock.now = moment
        assert sched.tick() == []  # nothing released to the import
    signup = store.enqueue(provision("late.example.com")).job
    assert sched.tick() == [signup.id]


def test_the_scheduler_sizes_the_reserve_to_the_signups_waiting(
    store: JobStore, limiter: Limiter
) -> None:
    small = {"burst_limit": 15, "burst_seconds": 5}
    store.enqueue(provision("big.example.com", goals=5, links=1))  # 7 calls
    sched = scheduler(store, limiter, accounts_for(**small))
    sched.tick()
    [quota] = sched.accounts.quotas.values()
    assert limiter.reserve(quota, BURST) == 7


def test_a_used_up_hour_puts_the_next_room_at_its_end_whatever_the_burst_windows_do(
    limiter: Limiter, clock: Clock
) -> None:
    """A worker waiting on a spent hour sleeps until the hour is over: the burst windows that
    open meanwhile give no room."""
    assert limiter.next_room(QUOTA) == limiter.next_change(QUOTA)  # nothing used: the next change
    hour = [w for w in limiter.span(QUOTA) if w.kind == HOUR]
    assert limiter.take(QUOTA, hour, limiter.budget(QUOTA, HOUR), Priority.interactive) is None
    hour_over = max(windows.end(QUOTA, w) for w in hour) + 0.5
    assert limiter.next_change(QUOTA) < clock() + QUOTA.burst_seconds + 1  # a burst window
    assert limiter.next_room(QUOTA) == hour_over

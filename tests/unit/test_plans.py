"""The planner on a seeded inventory: Terraform's notation, prune limited to what the set made,
timezones said to be impossible, shared links ensure-only, the jobs and their calls, the cost
line from the quota's estimate, and a saved plan refused once the inventory changed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from producers.plans import saved as plans
from producers.plans.desired import DesiredState, parse
from producers.plans.planner import Plan, make_plan
from testkit.databases import migrated_engine
from testkit.inventory import record_site
from worker.accounts import load_accounts
from worker.jobs.states import Operation, Priority
from worker.jobs.store import JobStore
from worker.quota.limiter import Limiter
from worker.quota.report import Reporter
from worker.settings import Settings

FILE = {
    "set": "agency",
    "defaults": {"goals": [{"event": "Signup"}], "shared_links": ["Dash"]},
    "sites": [
        {
            "domain": "a.example.com",
            "timezone": "Etc/UTC",
            "goals": [{"event": "Renamed", "display_name": "New name"}, {"event": "New"}],
            "shared_links": ["Client"],
        },
        {"domain": "d.example.com", "goals": [{"event": "Extra"}]},
        {"domain": "n.example.com", "timezone": "Europe/Paris", "goals": [{"page": "/thanks"}]},
    ],
}


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return migrated_engine(f"sqlite:///{tmp_path / 'status.db'}")


@pytest.fixture
def store(engine: Engine) -> JobStore:
    """a and b made by set agency; c and d by an import; e by another set."""
    store = JobStore(engine)
    record_site(
        store,
        "a.example.com",
        goals={"Signup": 11, "Old": 12, "Renamed": 13},
        links={"Dash": "https://p/share/a?auth=1"},
        managed_set="agency",
    )
    record_site(store, "b.example.com", goals={"Signup": 21}, managed_set="agency")
    record_site(store, "c.example.com", goals={"Signup": 31})
    record_site(store, "d.example.com", goals={"Legacy": 41, "Signup": 42})
    record_site(store, "e.example.com", managed_set="other")
    return store


def planned(store: JobStore, data: object = FILE, targets: tuple[str, ...] = ()) -> Plan:
    desired = parse(data)
    return make_plan(desired, plans.inventory(store, desired.account), targets)


def test_the_plan_shows_each_change_in_terraforms_notation(store: JobStore) -> None:
    plan = planned(store)
    assert plan.lines() == [
        "~ site a.example.com",
        "    ! timezone Europe/Berlin -> Etc/UTC: not possible through the API (Plausible's "
        "Sites API cannot change a site's timezone); left as is",
        "    -/+ goal event:Renamed: display name 'Renamed' -> 'New name'",
        "    + goal event:New",
        "    - goal event:Old: #12",
        "    + shared link Client",
        "~ site d.example.com",
        "    + goal event:Extra",
        "    + shared link Dash",
        "+ site n.example.com: timezone Europe/Paris",
        "    + goal event:Signup",
        "    + goal page:/thanks",
        "    + shared link Dash",
        "- site b.example.com: the site's data is lost, and the domain cannot be registered "
        "again for up to 48 hours; apply needs --allow-destroy",
        "    - goal event:Signup: with the site",
    ]
    assert plan.summary() == (
        "Plan: 1 site, 4 goals, 3 shared links to add; 1 site, 2 goals to destroy; "
        "1 goal to replace."
    )
    assert plan.destroys_sites == ["b.example.com"]
    # Only what set agency made is pruned: c (an import's), d's Legacy goal and e (another
    # set's) are left alone, and so is every shared link.
    assert not any(c.domain in ("c.example.com", "e.example.com") for c in plan.changes)
    assert "Legacy" not in "\n".join(plan.lines())


def test_the_jobs_make_the_changes_with_the_calls_the_cost_line_counts(store: JobStore) -> None:
    plan = planned(store)
    jobs = {job.resource: job for job in plan.jobs}
    assert sorted(jobs) == [
        "delete-goal:a.example.com:event:Old",
        "delete-goal:a.example.com:event:Renamed",
        "delete-site:b.example.com",
        "provision:a.example.com",
        "provision:d.example.com",
        "provision:n.example.com",
        "recreate:a.example.com",
    ]
    a = jobs["provision:a.example.com"]
    # A site the inventory holds starts with its create step done: no create call.
    assert a.progress is not None
    assert a.progress.site is not None
    assert [g.natural_key for g in a.request.goals] == ["event:New"]
    assert a.request.shared_links == ("Client",)
    assert a.request.managed_set == "agency"
    assert a.calls == 2
    again = jobs["recreate:a.example.com"]
    assert again.phase == 2
    assert [(g.natural_key, g.display_name) for g in again.request.goals] == [
        ("event:Renamed", "New name")
    ]
    old = jobs["delete-goal:a.example.com:event:Old"].request
    assert (old.operation, old.goal_id) == (Operation.delete_goal, 12)
    assert jobs["provision:n.example.com"].calls == 4  # the site, two goals, a link
    assert jobs["delete-site:b.example.com"].request.operation is Operation.delete_site
    # 2 (a) + 1 (a again) + 2 goal deletes + 2 (d) + 4 (n) + 1 site delete
    assert plan.calls == 12


def test_targets_limit_the_plan_and_a_matching_inventory_plans_nothing(store: JobStore) -> None:
    plan = planned(store, targets=("d.example.com",))
    assert plan.lines() == [
        "~ site d.example.com",
        "    + goal event:Extra",
        "    + shared link Dash",
    ]
    same = {
        "set": "agency",
        "sites": [
            {
                "domain": "a.example.com",
                "goals": [{"event": "Signup"}, {"event": "Old"}, {"event": "Renamed"}],
            },
            {
                "domain": "b.example.com",
                "timezone": "Europe/Berlin",
                "goals": [{"event": "Signup"}],
            },
        ],
    }
    plan = planned(store, same)
    assert (plan.has_changes, plan.jobs, plan.calls) == (False, [], 0)
    assert (
        plan.summary() == "No changes. Plausible matches the file, as far as the inventory knows."
    )


def test_a_timezone_alone_is_reported_but_is_no_change(store: JobStore) -> None:
    data = {"set": "other", "sites": [{"domain": "e.example.com", "timezone": "Asia/Tokyo"}]}
    plan = planned(store, data)
    assert not plan.has_changes
    assert plan.lines()[1].startswith("    ! timezone Europe/Berlin -> Asia/Tokyo: not possible")


def test_a_saved_plan_reads_back_the_same_and_is_refused_once_the_inventory_changed(
    store: JobStore, tmp_path: Path
) -> None:
    plan = planned(store)
    desired: DesiredState = parse(FILE)
    views = list(plans.inventory(store, "default"))
    fingerprint = plans.fingerprint(views, "default", desired.set, plan.domains)
    saved = plans.Saved(plan, fingerprint, datetime.now(UTC))
    path = tmp_path / "plan.json"
    import json

    path.write_text(json.dumps(saved.as_json()))
    again = plans.read(path)
    assert again.identity == saved.identity
    assert [job.request for job in again.plan.jobs] == [job.request for job in plan.jobs]
    plans.check_current(store, again)
    # Applying twice makes no second job: the keys come from the plan and the resource.
    first = plans.enqueue(store, again, phase=1)
    second = plans.enqueue(store, again, phase=1)
    assert len(first.created) == 6
    assert (second.created, len(second.duplicate)) == ({}, 6)
    batch = store.batch_summary(again.batch.id)
    assert batch.total == 6
    # A job of an unrelated site leaves the plan current; one of its sites makes it stale.
    record_site(store, "unrelated.example.com")
    plans.check_current(store, again)
    record_site(store, "d.example.com", goals={"Extra": 43})
    with pytest.raises(plans.StalePlanError, match="plan again"):
        plans.check_current(store, again)
    edited = path.read_text().replace("Client", "Clients")
    path.write_text(edited)
    with pytest.raises(plans.ProvisionerError, match="edited after it was written"):
        plans.read(path)


def test_the_cost_line_is_the_quota_schedulers_estimate(store: JobStore) -> None:
    clock = {"now": datetime(2026, 12, 7, 12, 0, tzinfo=UTC).timestamp()}
    limiter = Limiter(store.engine, clock=lambda: clock["now"])
    settings = Settings(hourly_limit=600, burst_limit=60, burst_seconds=10)  # type: ignore[call-arg]
    reporter = Reporter(store, limiter, load_accounts(settings))
    assert plans.cost(reporter, "default", 0).line() == "Cost: 0 calls."
    for n in range(5):  # interactive work goes first: 5 calls
        store.enqueue(planned(store).jobs[0].request.model_copy(update={"domain": f"i{n}.com"}))
    from worker.jobs.specs import JobRequest

    for n in range(900):  # a bulk batch of 900 calls shares round-robin
        store.enqueue(
            JobRequest(operation=Operation.delete_site, domain=f"big{n}.example.com"),
            batch="big",
            priority=Priority.bulk,
        )
    cost = plans.cost(reporter, "default", 1000)
    # 1,000 of ours, 900 of the big batch's and 5 interactive: 1,905 calls at 600/h.
    assert (cost.calls, cost.ahead, cost.hourly) == (1000, 905, 600)
    assert cost.done_at is not None
    assert cost.line(datetime(2026, 12, 7, 12, 0, tzinfo=UTC)) == (
        f"Cost: 1,000 calls; at 600/h with 905 calls queued ahead, done about "
        f"{cost.done_at:%H:%M} UTC (3 h 0 min)."
    )
    small = plans.cost(reporter, "default", 10)
    # Round-robin: 10 of the big batch's calls go with these 10, after the 5 interactive.
    assert (small.ahead, small.queued) == (15, 905)
    assert "with 905 calls queued (15 of them ahead, round-robin), done about" in small.line()


def test_a_set_never_takes_over_what_was_recorded_before_it(store: JobStore) -> None:
    # A set's job ensuring an import's site and goal: both stay the import's, so never pruned.
    record_site(store, "c.example.com", goals={"Signup": 31, "Mine": 32}, managed_set="agency")
    [view] = store.site("c.example.com")
    assert view.site.managed_set is None
    assert {g.natural_key: g.managed_set for g in view.goals} == {
        "event:Mine": "agency",
        "event:Signup": None,
    }
    plan = planned(store, {"set": "agency", "sites": [{"domain": "a.example.com"}]})
    # c is not the set's, so it stays; the goal the set made on it goes with the file.
    assert "- site c.example.com" not in "\n".join(plan.lines())
    assert [c.line() for c in plan.changes if c.domain == "c.example.com"] == [
        "- goal event:Mine: #32"
    ]


def test_custom_properties_and_guests_are_planned_like_goals(store: JobStore) -> None:
    record_site(
        store,
        "p.example.com",
        props=("plan", "old"),
        guests={
            "a@p.example.com": "viewer",
            "b@p.example.com": "viewer",
            "c@p.example.com": "editor",
        },
        managed_set="agency",
    )
    record_site(store, "p.example.com", props=("theirs",), guests={"z@p.example.com": "viewer"})
    data = {
        "set": "agency",
        "defaults": {"custom_props": ["plan"]},
        "sites": [
            {
                "domain": "p.example.com",
                "custom_props": ["author"],
                "guests": [
                    {"email": "a@p.example.com", "role": "viewer"},
                    {"email": "b@p.example.com", "role": "editor"},
                    {"email": "z@p.example.com", "role": "editor"},
                    {"email": "new@p.example.com", "role": "viewer"},
                ],
            },
            {"domain": "q.example.com", "guests": [{"email": "o@q.example.com", "role": "viewer"}]},
        ],
    }
    plan = planned(store, data, targets=("p.example.com", "q.example.com"))
    assert plan.lines() == [
        "~ site p.example.com",
        "    + custom property author",
        "    - custom property old",
        "    -/+ guest b@p.example.com: role viewer -> editor; Plausible emails an invitation again",
        "    ! guest z@p.example.com: role viewer -> editor: not invited by set 'agency', so not "
        "replaced",
        "    + guest new@p.example.com: viewer; Plausible emails an invitation",
        "    - guest c@p.example.com",
        "+ site q.example.com: timezone Etc/UTC",
        "    + custom property plan",
        "    + guest o@q.example.com: viewer; Plausible emails an invitation",
    ]
    assert plan.summary() == (
        "Plan: 1 site, 2 custom properties, 2 guests to add; 1 custom property, 1 guest to "
        "destroy; 1 guest to replace."
    )
    jobs = {job.resource: job for job in plan.jobs}
    assert jobs["delete-prop:p.example.com:old"].request.custom_prop == "old"
    assert jobs["delete-guest:p.example.com:c@p.example.com"].request.email == "c@p.example.com"
    assert jobs["delete-guest:p.example.com:b@p.example.com"].phase == 1
    again = jobs["recreate:p.example.com"]
    assert (again.phase, [g.email for g in again.request.guests]) == (2, ["b@p.example.com"])
    add = jobs["provision:p.example.com"].request
    assert (add.custom_props, [g.email for g in add.guests]) == (("author",), ["new@p.example.com"])
    # 1 prop + 1 guest, a prop delete, two guest deletes, the re-invite, q: site, prop, guest.
    assert plan.calls == 2 + 1 + 2 + 1 + 3


def test_a_goal_whose_custom_props_differ_is_deleted_and_made_again(store: JobStore) -> None:
    record_site(
        store,
        "g.example.com",
        goals={"Signup": 51, "Buy": 52, "Same": 53},
        goal_props={"Signup": {"plan": "free"}, "Same": {"plan": "pro"}},
        managed_set="agency",
    )
    pro = {"plan": "pro"}
    data = {
        "set": "agency",
        "sites": [
            {
                "domain": "g.example.com",
                "goals": [
                    {"event": "Signup", "custom_props": pro},
                    {"event": "Buy", "display_name": "Buys", "custom_props": {"a": "1"}},
                    {"event": "Same", "custom_props": pro},
                    {"event": "New", "custom_props": pro},
                ],
            },
            # c's Signup is an import's: it differs, but is not the set's to replace.
            {"domain": "c.example.com", "goals": [{"event": "Signup", "custom_props": pro}]},
        ],
    }
    plan = planned(store, data, targets=("g.example.com", "c.example.com"))
    assert plan.lines() == [
        "~ site g.example.com",
        '    -/+ goal event:Signup: custom props {"plan": "free"} -> {"plan": "pro"}',
        "    -/+ goal event:Buy: display name 'Buy' -> 'Buys', custom props {} -> {\"a\": \"1\"}",
        '    + goal event:New: custom props {"plan": "pro"}',
        "~ site c.example.com",
        '    ! goal event:Signup: custom props {} -> {"plan": "pro"}: not created by set '
        "'agency', so not replaced",
    ]
    assert plan.summary() == "Plan: 1 goal to add; 2 goals to replace."
    jobs = {job.resource: job for job in plan.jobs}
    assert sorted(jobs) == [
        "delete-goal:g.example.com:event:Buy",
        "delete-goal:g.example.com:event:Signup",
        "provision:g.example.com",
        "recreate:g.example.com",
    ]
    assert jobs["delete-goal:g.example.com:event:Signup"].request.goal_id == 51
    again = jobs["recreate:g.example.com"]
    assert again.phase == 2
    assert [(g.natural_key, g.custom_props) for g in again.request.goals] == [
        ("event:Signup", pro),
        ("event:Buy", {"a": "1"}),
    ]
    # Each replacement: a delete by id and a find-or-create; New: one find-or-create.
    assert [jobs[r].calls for r in sorted(jobs)] == [1, 1, 1, 2]
    priced = plans.cost(
        Reporter(store, Limiter(store.engine), load_accounts(Settings())),  # type: ignore[call-arg]
        "default",
        plan.calls,
    )
    assert priced.line().startswith("Cost: 5 calls; at ")
    # Once Plausible answered the new goals, recorded, the same file plans nothing there.
    record_site(
        store,
        "g.example.com",
        goals={"Signup": 54, "Buy": 56, "Same": 53, "New": 55},
        goal_props={"Signup": pro, "Buy": {"a": "1"}, "Same": pro, "New": pro},
        managed_set="agency",
    )
    data["sites"][0]["goals"][1] = {"event": "Buy", "custom_props": {"a": "1"}}  # type: ignore[index]
    assert not planned(store, data, targets=("g.example.com",)).has_changes


def test_tracker_settings_are_sent_with_a_create_or_changed_in_place(store: JobStore) -> None:
    recorded = {"installation_type": None, "outbound_links": False, "file_downloads": False}
    record_site(store, "t.example.com", tracker=recorded, managed_set="agency")
    record_site(store, "same.example.com", tracker={**recorded, "outbound_links": True})
    tracker = "tracker_script_configuration"
    data = {
        "set": "agency",
        "defaults": {tracker: {"outbound_links": True}},
        "sites": [
            {"domain": "t.example.com", tracker: {"installation_type": "manual"}},
            {"domain": "same.example.com"},
            {"domain": "c.example.com"},  # an import's site: no configuration recorded
            {"domain": "u.example.com", "inherit": False, tracker: {"file_downloads": True}},
        ],
    }
    targets = ("t.example.com", "same.example.com", "c.example.com", "u.example.com")
    plan = planned(store, data, targets)
    assert plan.lines() == [
        "~ site t.example.com",
        '    ~ tracker configuration installation_type null -> "manual", outbound_links false '
        "-> true",
        "~ site c.example.com",
        "    ~ tracker configuration outbound_links = true",
        "+ site u.example.com: timezone Etc/UTC",
        "    + tracker configuration file_downloads = true",
    ]
    assert plan.summary() == (
        "Plan: 1 site, 1 tracker configuration to add; 2 tracker configurations to change."
    )
    jobs = {job.resource: job for job in plan.jobs}
    assert sorted(jobs) == [
        "provision:u.example.com",
        "tracker:c.example.com",
        "tracker:t.example.com",
    ]
    changed = jobs["tracker:t.example.com"].request
    assert changed.operation is Operation.set_tracker
    assert changed.tracker_script_configuration == {
        "installation_type": "manual",
        "outbound_links": True,
    }
    created = jobs["provision:u.example.com"].request
    assert created.tracker_script_configuration == {"file_downloads": True}
    # One PUT for each change; a new site's settings go with its create, at no extra call.
    assert [jobs[r].calls for r in sorted(jobs)] == [1, 1, 1]
    assert plan.calls == 3
    priced = plans.cost(
        Reporter(store, Limiter(store.engine), load_accounts(Settings())),  # type: ignore[call-arg]
        "default",
        plan.calls,
    )
    assert priced.line().startswith("Cost: 3 calls; at ")
    # Once the changes are recorded, the same file plans nothing.
    record_site(
        store, "t.example.com", tracker={**recorded, **changed.tracker_script_configuration}
    )
    record_site(store, "c.example.com", tracker={"outbound_links": True})
    record_site(store, "u.example.com", tracker={"file_downloads": True}, managed_set="agency")
    again = planned(store, data, targets)
    assert (again.has_changes, again.jobs) == (False, [])


def test_a_tracker_set_job_records_what_plausible_answered_in_the_inventory(
    store: JobStore,
) -> None:
    from worker.jobs.specs import JobRequest, Progress

    request = JobRequest(
        operation=Operation.set_tracker,
        domain="c.example.com",
        tracker_script_configuration={"tagged_events": True},
    )
    job_id = str(store.enqueue(request).job.id)
    assert job_id in store.admit({job_id: {}})
    claim = store.claim(job_id, lease_seconds=60)
    assert claim is not None
    answered = {"installation_type": None, "tagged_events": True, "outbound_links": False}
    store.succeed(claim, Progress(tracker=answered))
    [view] = store.site("c.example.com")
    assert view.site.tracker == answered

"""Desired state against the sandbox with real workers: a file of 20 sites applied, then planned
again with no changes; an edit (a goal removed from every site, a display name and a goal's
custom properties changed, a timezone changed, two sites dropped) planned, refused without
--allow-destroy, applied, and Plausible's state then matching the file; what was made outside
the set never pruned; a stale plan refused; the cost line's call count equal to the calls the
apply made; and workers SIGKILLed during an apply losing and duplicating nothing."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from testkit.inventory import inventory
from testkit.waiting import wait_for
from testkit.workers import Stack, assert_all_succeeded, assert_provisioned_once, provision_request
from worker.jobs.states import JobStatus

SITES = [f"site{n:02}.example.com" for n in range(20)]


def desired(sites: list[str], *, edited: bool = False) -> str:
    """The file: every site with two default goals (one on edit), a shared link, a custom
    property (two on edit) and its owner as a guest (site03's an editor on edit); site02 made
    with a tracker setting, and on edit every site's installation type set and site04's Signup
    given a custom property."""
    goals = '[{ event = "Signup" }]' if edited else '[{ event = "Signup" }, { page = "/checkout" }]'
    props = '["plan", "author"]' if edited else '["plan"]'
    lines = [
        'set = "agency"',
        "[defaults]",
        'timezone = "Europe/Berlin"',
        f"goals = {goals}",
        'shared_links = ["Client dashboard"]',
        f"custom_props = {props}",
    ]
    if edited:
        lines.append('tracker_script_configuration = { installation_type = "manual" }')
    for domain in sites:
        lines += ["[[sites]]", f'domain = "{domain}"']
        role = "editor" if edited and domain == "site03.example.com" else "viewer"
        lines.append(f'guests = [{{ email = "owner@{domain}", role = "{role}" }}]')
        if domain == "site05.example.com":
            name = "Purchases!" if edited else "Purchases"
            lines.append(f'goals = [{{ event = "Purchase", display_name = "{name}" }}]')
        if domain == "site04.example.com" and edited:
            lines.append('goals = [{ event = "Signup", custom_props = { plan = "pro" } }]')
        if domain == "site06.example.com" and edited:
            lines.append('timezone = "Asia/Tokyo"')
        if domain == "site02.example.com":
            lines.append("tracker_script_configuration = { hash_based_routing = true }")
    return "\n".join(lines) + "\n"


def calls_made(stack: Stack) -> int:
    return int(stack.sandbox.state()["counters"]["total"])


def cost_of(out: str) -> int:
    found = re.search(r"^Cost: ([\d,]+) calls?", out, re.MULTILINE)
    assert found, out
    return int(found.group(1).replace(",", ""))


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return stack.provision_cli(*args, timeout=120)


def goals_of(state: dict[str, Any]) -> dict[str, set[tuple[str, str]]]:
    out: dict[str, set[tuple[str, str]]] = {}
    for goal in state["goals"]:
        key = f"event:{goal['event_name']}" if goal["event_name"] else f"page:{goal['page_path']}"
        out.setdefault(goal["domain"], set()).add((key, goal["display_name"]))
    return out


def test_a_file_of_20_sites_applied_edited_and_pruned_matches_plausible(
    stack: Stack, tmp_path: Path
) -> None:
    stack.start_worker(concurrency=3)
    # Made outside the set, before it: an import's site in the file (site00) and one not in it.
    outside = [
        stack.submit(provision_request("site00.example.com", goals=[], links=[])).job.id,
        stack.submit(provision_request("outside.example.com")).job.id,
    ]
    stack.wait_done(outside)
    path = tmp_path / "sites.toml"
    path.write_text(desired(SITES))

    planned = cli(stack, "plan", str(path), "--detailed-exitcode")
    assert planned.returncode == 2, planned.stderr
    assert (
        "Plan: 19 sites, 41 goals, 20 shared links, 20 custom properties, 20 guests, "
        "1 tracker configuration to add." in planned.stdout
    )
    cost = cost_of(planned.stdout)
    # 19 new sites (the site, 2 goals, a link, a property, a guest); on site00 (the import's)
    # all but the site; site05's Purchase. site02's tracker setting goes with its create.
    assert cost == 19 * 6 + 5 + 1
    before = calls_made(stack)
    applied = cli(stack, "apply", str(path), "--auto-approve", "--wait")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert calls_made(stack) - before == cost
    again = cli(stack, "plan", str(path), "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "No changes." in again.stdout
    # Applying the same file again makes no job.
    jobs = len(stack.jobs())
    assert cli(stack, "apply", str(path), "--auto-approve").returncode == 0
    assert len(stack.jobs()) == jobs
    # A goal added to a set's site by hand (an import): not the set's, so never pruned.
    legacy = provision_request(
        "site01.example.com", goals=[{"goal_type": "event", "event_name": "Legacy"}], links=[]
    )
    stack.wait_done([stack.submit(legacy).job.id])

    # The edit: /checkout leaves every site, a property joins them, site05's goal is renamed,
    # site03's guest becomes an editor, site06's timezone changes, site00 (the import's) and
    # site19 (the set's) leave the file.
    kept = SITES[1:19]
    path.write_text(desired(kept, edited=True))
    saved = tmp_path / "plan.json"
    planned = cli(stack, "plan", str(path), "--out", str(saved), "--detailed-exitcode")
    assert planned.returncode == 2, planned.stderr
    out = planned.stdout
    assert (
        "  ~ site site01.example.com\n"
        '      ~ tracker configuration installation_type = "manual"\n'
        "      - goal page:/checkout: #"
    ) in out
    assert "      -/+ goal event:Purchase: display name 'Purchases' -> 'Purchases!'" in out
    assert '      -/+ goal event:Signup: custom props {} -> {"plan": "pro"}' in out
    assert "      ! timezone Europe/Berlin -> Asia/Tokyo: not possible through the API" in out
    assert "  - site site19.example.com: the site's data is lost" in out
    assert "      + custom property author" in out
    assert (
        "  ~ site site02.example.com\n      ~ tracker configuration installation_type null -> "
        '"manual"\n' in out
    )
    assert (
        "      -/+ guest owner@site03.example.com: role viewer -> editor; Plausible emails an "
        "invitation again"
    ) in out
    # The import's site00 stays; what the set made on it goes with the file.
    assert "  ~ site site00.example.com\n      - goal event:Signup: #" in out
    assert "- site site00.example.com" not in out
    assert "outside.example.com" not in out
    assert "Legacy" not in out
    assert (
        "Plan: 18 custom properties to add; 18 tracker configurations to change; 1 site, "
        "22 goals, 2 custom properties, 2 guests to destroy; 2 goals, 1 guest to replace."
    ) in out, out
    cost = cost_of(out)
    # 18 /checkout deletes, 18 new properties, 18 tracker settings (a PUT each), site19's
    # delete, site05's and site04's goals and site03's guest deleted and made again, site00's
    # 2 goals, property and guest deleted.
    assert cost == 18 + 18 + 18 + 1 + 2 + 2 + 2 + 4

    refused = cli(stack, "apply", str(saved), "--wait")
    assert refused.returncode == 1
    assert "Apply with --allow-destroy" in refused.stderr
    assert "site19.example.com" in {s["domain"] for s in stack.sandbox.state()["sites"]}
    before = calls_made(stack)
    applied = cli(stack, "apply", str(saved), "--wait", "--allow-destroy")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert calls_made(stack) - before == cost

    state = stack.sandbox.state()
    assert {s["domain"] for s in state["sites"]} == {
        *kept,
        "site00.example.com",
        "outside.example.com",
    }
    goals = goals_of(state)
    for domain in kept:
        expected = {("event:Signup", "Signup")}
        if domain == "site05.example.com":
            expected.add(("event:Purchase", "Purchases!"))
        if domain == "site01.example.com":
            expected.add(("event:Legacy", "Legacy"))
        assert goals[domain] == expected, domain
    assert "site00.example.com" not in goals
    props = {(g["domain"], g["event_name"]): g["custom_props"] for g in state["goals"]}
    assert props[("site04.example.com", "Signup")] == {"plan": "pro"}
    assert props[("site05.example.com", "Signup")] == {}
    sites = {s["domain"]: s for s in state["sites"]}
    for domain in kept:
        site = sites[domain]
        assert [link["name"] for link in site["shared_links"]] == ["Client dashboard"]
        assert sorted(site["custom_properties"]) == ["author", "plan"]
        role = "editor" if domain == "site03.example.com" else "viewer"
        assert [(g["email"], g["role"]) for g in site["guests"]] == [(f"owner@{domain}", role)]
        tracker = site["tracker_script_configuration"]
        assert tracker["installation_type"] == "manual"
        assert tracker["hash_based_routing"] is (domain == "site02.example.com")
    site00 = sites["site00.example.com"]
    assert (site00["custom_properties"], site00["guests"]) == ([], [])
    final = cli(stack, "plan", str(path), "--detailed-exitcode")
    assert final.returncode == 0, final.stdout
    assert "No changes." in final.stdout

    stale = cli(stack, "apply", str(saved), "--allow-destroy")
    assert stale.returncode == 1
    assert "the inventory has changed since this plan was made" in stale.stderr
    assert stale.stderr.strip().endswith("plan again")
    assert json.loads(saved.read_text())["batch"].startswith("plan-")


def test_workers_killed_during_an_apply_lose_and_duplicate_nothing(
    sqlite_stack: Stack, tmp_path: Path
) -> None:
    stack = sqlite_stack
    stack.sandbox.configure(latency_ms=120)
    worker = stack.start_worker(pool="prefork", concurrency=2)
    path = tmp_path / "sites.toml"
    path.write_text(desired(SITES))
    applied = cli(stack, "apply", str(path), "--auto-approve")  # queued; the workers run it
    assert applied.returncode == 0, applied.stderr
    for _ in range(2):  # twice while a job is between its goals
        wait_for(
            lambda: [
                j
                for j in stack.jobs()
                if j.status == JobStatus.running and j.progress.site and len(j.progress.goals) < 2
            ],
            timeout=30,
            interval=0.02,
            describe=lambda: f"a job between its goals\n{stack.logs()}",
        )
        assert worker.kill_pool()
        wait_for(lambda: len(worker.pool_pids()) == 2, timeout=10, describe="new pool processes")
    jobs = stack.wait_done([j.id for j in stack.jobs()], timeout=90)
    assert len(jobs) == 20
    assert_all_succeeded(jobs)
    state = stack.sandbox.state()
    assert_provisioned_once(state, jobs)
    rows = inventory(stack.engine)
    assert {row[1] for row in rows["sites"]} == set(SITES)
    assert {(row[1], row[3]) for row in rows["goals"]} == {
        (g["domain"], g["id"]) for g in state["goals"]
    }
    again = cli(stack, "plan", str(path), "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr


def test_refresh_reports_a_goal_deleted_behind_our_back_and_apply_puts_it_back(
    sqlite_stack: Stack, tmp_path: Path
) -> None:
    stack = sqlite_stack
    stack.start_worker(concurrency=2)
    sites = SITES[:3]
    path = tmp_path / "sites.toml"
    path.write_text(desired(sites))
    assert cli(stack, "apply", str(path), "--auto-approve", "--wait").returncode == 0
    [gone] = [
        g for g in stack.sandbox.state()["goals"] if g["domain"] == sites[1] and g["page_path"]
    ]
    with stack.sandbox.client() as http:
        http.delete(
            f"/api/v1/sites/goals/{gone['id']}", params={"site_id": sites[1]}
        ).raise_for_status()
    quiet = cli(stack, "plan", str(path), "--detailed-exitcode")
    assert quiet.returncode == 0  # the inventory alone cannot know
    before = calls_made(stack)
    saved = tmp_path / "plan.json"
    planned = cli(stack, "plan", str(path), "--refresh", "--out", str(saved), "--detailed-exitcode")
    assert planned.returncode == 2, planned.stdout + planned.stderr
    # The site, its goals, its guests: 3 calls a site, through the quota, all counted.
    assert calls_made(stack) - before == 9
    assert "Refreshed (9 calls): 1 difference(s) from the inventory" in planned.stdout
    assert (
        f"  drift: goal {sites[1]} page:/checkout: in the inventory, gone from Plausible"
        in planned.stdout
    )
    assert f"  ~ site {sites[1]}\n      + goal page:/checkout" in planned.stdout
    assert "Cost: 1 call (the refresh spent 9);" in planned.stdout
    assert cli(stack, "apply", str(saved), "--wait").returncode == 0
    back = {(g["domain"], g["page_path"]) for g in stack.sandbox.state()["goals"]}
    assert (sites[1], "/checkout") in back
    after = cli(stack, "plan", str(path), "--refresh", "--detailed-exitcode")
    assert after.returncode == 0, after.stdout
    assert "Refreshed (9 calls): no drift from the inventory" in after.stdout

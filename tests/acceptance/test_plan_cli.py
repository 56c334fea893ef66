"""``provision plan`` and ``provision apply`` as a user runs them, on a seeded inventory and no
API: exit codes, a refused file, --json and --out, a saved plan refused once stale, and a plan
that deletes a site refused without --allow-destroy (nothing queued)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from provision.cli import main
from testkit.databases import migrated_engine
from testkit.inventory import record_site
from worker.jobs.filters import JobFilter
from worker.jobs.store import JobStore
from worker.settings import get_settings

FILE = """
set = "agency"

[defaults]
goals = [{ event = "Signup" }]

[[sites]]
domain = "a.example.com"

[[sites]]
domain = "new.example.com"
shared_links = ["Client"]
"""


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JobStore]:
    url = f"sqlite:///{tmp_path / 'status.db'}"
    monkeypatch.setenv("PROVISIONER_DATABASE_URL", url)
    monkeypatch.setenv("PLAUSIBLE_API_KEY", "unused")
    monkeypatch.delenv("PROVISIONER_BROKER_URL", raising=False)
    get_settings.cache_clear()
    store = JobStore(migrated_engine(url))
    record_site(store, "a.example.com", goals={"Signup": 11}, managed_set="agency")
    record_site(store, "gone.example.com", managed_set="agency")
    yield store
    get_settings.cache_clear()


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def desired(tmp_path: Path) -> Path:
    path = tmp_path / "sites.toml"
    path.write_text(FILE)
    return path


def test_plan_shows_the_changes_and_exits_by_whether_there_are_any(
    store: JobStore, desired: Path
) -> None:
    code, out, _ = run("plan", str(desired))
    assert code == 0
    assert out.splitlines()[:6] == [
        "Set agency, account default:",
        "  + site new.example.com: timezone Etc/UTC",
        "      + goal event:Signup",
        "      + shared link Client",
        "  - site gone.example.com: the site's data is lost, and the domain cannot be registered "
        "again for up to 48 hours; apply needs --allow-destroy",
        "",
    ]
    assert "Plan: 1 site, 1 goal, 1 shared link to add; 1 site to destroy." in out
    assert "Cost: 4 calls; at 600/h with 0 calls queued ahead, done about " in out
    assert run("plan", str(desired), "--detailed-exitcode")[0] == 2
    code, out, _ = run("plan", str(desired), "--target", "a.example.com", "--detailed-exitcode")
    assert code == 0
    assert "No changes." in out
    code, out, _ = run("plan", str(desired), "--json")
    plan = json.loads(out)
    assert plan["set"] == "agency"
    assert plan["cost"]["calls"] == 4
    assert [job["resource"] for job in plan["jobs"]] == [
        "provision:new.example.com",
        "delete-site:gone.example.com",
    ]


def test_a_bad_file_is_refused_line_by_line_and_errors_exit_1(
    store: JobStore, tmp_path: Path
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        'set = "agency"\n[[sites]]\ndomain = "a.example.com"\ntimezone = "Nowhere"\n'
        '[[sites]]\ndomain = "b.example.com"\ntracker_script_configuration = {}\n'
    )
    code, out, err = run("plan", str(path), "--detailed-exitcode")
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"{path}: sites[0] a.example.com: timezone: 'Nowhere' is not an IANA timezone",
        f"{path}: sites[1] b.example.com: tracker_script_configuration: must be an object "
        'naming at least one setting, such as {"outbound_links": true}',
        f"{path}: refused, nothing planned (2 problem(s))",
    ]
    missing = path.with_name("missing.toml")
    code, _, err = run("plan", str(missing), "--detailed-exitcode")
    assert code == 1
    assert err.startswith(f"{missing}: cannot be read: ")
    path.write_text('set = "agency"\n')
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PROVISIONER_DATABASE_URL", f"sqlite:///{tmp_path}/no/such/dir/status.db")
        get_settings.cache_clear()
        code, _, err = run("plan", str(path), "--detailed-exitcode")
    get_settings.cache_clear()
    assert code == 1
    assert err.startswith("Error: ")
    assert len(err.strip().splitlines()) == 1


def test_a_saved_plan_is_refused_when_stale_and_a_site_delete_needs_allow_destroy(
    store: JobStore, desired: Path, tmp_path: Path
) -> None:
    saved = tmp_path / "plan.json"
    code, out, _ = run("plan", str(desired), "--out", str(saved))
    assert code == 0
    assert f"Saved the plan to {saved}; apply it with: provision apply {saved}" in out
    code, _, err = run("apply", str(saved))
    assert code == 1
    assert "the plan deletes 1 site(s) (gone.example.com)" in err
    assert "Apply with --allow-destroy" in err
    batch = json.loads(saved.read_text())["batch"]
    assert store.list_jobs(JobFilter(batch_id=batch)) == []
    record_site(store, "new.example.com")  # made meanwhile by an import
    code, _, err = run("apply", str(saved), "--allow-destroy")
    assert code == 1
    assert "the inventory has changed since this plan was made" in err
    assert err.strip().endswith("plan again")
    code, _, err = run("apply", str(desired), stdin="no\n")
    assert code == 1
    assert "apply cancelled; nothing was queued" in err

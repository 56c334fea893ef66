"""``provision sites`` and ``provision export`` as a user runs them: the inventory as a table,
JSON Lines and CSV, by domain, each saying what it wrote."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from provision.cli import main
from testkit.databases import migrated_engine
from testkit.inventory import record_site
from worker.jobs.store import JobStore
from worker.settings import get_settings


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JobStore]:
    url = f"sqlite:///{tmp_path / 'status.db'}"
    monkeypatch.setenv("PROVISIONER_DATABASE_URL", url)
    get_settings.cache_clear()
    store = JobStore(migrated_engine(url))
    record_site(
        store, "shop.example.com", goals={"Signup": 11}, links={"Dash": "https://p/s?auth=x"}
    )
    record_site(store, "blog.example.com", account="agency", batch="b2")
    record_site(store, "app.example.com", goals={"Purchase": 12})
    yield store
    get_settings.cache_clear()


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_sites_lists_the_inventory_by_domain(store: JobStore) -> None:
    code, out, _ = run("sites")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "DOMAIN",
        "ACCOUNT",
        "TIMEZONE",
        "ORIGIN",
        "GOALS",
        "SHARED",
        "LINKS",
    ]
    assert [line.split()[0] for line in lines[1:]] == [
        "app.example.com",
        "blog.example.com",
        "shop.example.com",
    ]
    assert "event:Signup#11" in out
    code, out, _ = run("sites", "--account", "agency")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["blog.example.com"]


def test_sites_as_json_lines_and_csv_say_what_they_wrote(store: JobStore, tmp_path: Path) -> None:
    code, out, err = run("sites", "--json")
    assert code == 0
    sites = [json.loads(line) for line in out.splitlines()]
    assert [s["domain"] for s in sites] == [
        "app.example.com",
        "blog.example.com",
        "shop.example.com",
    ]
    shop = sites[2]
    assert shop["goals"][0]["natural_key"] == "event:Signup"
    assert shop["goals"][0]["id"] == 11
    assert shop["shared_links"][0]["url"] == "https://p/s?auth=x"
    assert shop["origin"] == "created"
    assert err.strip() == "wrote 3 site(s) to standard output"
    target = tmp_path / "sites.csv"
    code, out, err = run("sites", "--csv", "-o", str(target))
    assert (code, out) == (0, "")
    assert err.strip() == f"wrote 3 site(s) to {target}"
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert [row["domain"] for row in rows] == [s["domain"] for s in sites]
    assert json.loads(rows[2]["goals"]) == {"event:Signup": 11}
    assert run("sites", "--json", "--csv")[0] == 2


def test_export_writes_a_batch_by_domain_or_the_inventory(store: JobStore, tmp_path: Path) -> None:
    target = tmp_path / "b1.jsonl"
    code, _, err = run("export", "b1", "-o", str(target))
    assert code == 0
    assert err.strip() == f"wrote 2 job(s) of batch b1 to {target}"
    jobs = [json.loads(line) for line in target.read_text().splitlines()]
    assert [job["domain"] for job in jobs] == ["app.example.com", "shop.example.com"]
    code, out, err = run("export", "b1", "--csv")
    assert [row["domain"] for row in csv.DictReader(io.StringIO(out))] == [
        "app.example.com",
        "shop.example.com",
    ]
    code, out, err = run("export")
    assert code == 0
    assert [json.loads(line)["domain"] for line in out.splitlines()] == [
        "app.example.com",
        "blog.example.com",
        "shop.example.com",
    ]
    assert err.strip() == "wrote 3 site(s) to standard output"
    assert run("export", "nope")[0] == 1

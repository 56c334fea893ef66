"""The CLI as a user runs it with nothing but SQLite: embedded workers against the sandbox."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from testkit.cli import clean_environ, provision
from testkit.sandbox_process import SandboxProcess

EVENTS = [
    {
        "id": "evt_a",
        "domain": "https://www.Shop.Example.com/",
        "timezone": "Europe/Berlin",
        "goals": [
            {"goal_type": "event", "event_name": "Signup"},
            {"goal_type": "page", "page_path": "/pricing/*"},
        ],
        "shared_links": ["WordPress"],
    },
    {
        "id": "evt_b",
        "domain": "blog.example.org",
        "goals": [{"goal_type": "event", "event_name": "Newsletter"}],
    },
    {"id": "evt_c", "domain": "taken.example.net"},
]


@pytest.fixture
def env(sandbox: SandboxProcess, tmp_path: Path) -> dict[str, str]:
    return {
        **clean_environ(),
        "PROVISIONER_DATABASE_URL": f"sqlite:///{tmp_path / 'status.db'}",
        "PLAUSIBLE_BASE_URL": sandbox.base_url,
        "PLAUSIBLE_API_KEY": "test-key",
    }


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_embedded_import_provisions_and_status_reports_every_way(
    sandbox: SandboxProcess, env: dict[str, str], tmp_path: Path
) -> None:
    with sandbox.client("other-team-key") as other:
        assert other.post("/api/v1/sites", json={"domain": "taken.example.net"}).status_code == 200
    signups = tmp_path / "signups.jsonl"
    signups.write_text("".join(json.dumps(e) + "\n" for e in EVENTS))

    result = provision(env, "import", str(signups), "--json")
    assert result.returncode == 3, result.stderr  # the import waited, and a job failed

    out = json.loads(result.stdout)
    assert (out["queued"], out["duplicate"], out["invalid"]) == (3, 0, 0)
    batch = out["batch"]
    assert batch["done"] is True
    assert batch["counts"]["succeeded"] == 2
    assert [f["error"]["code"] for f in batch["failures"]] == ["domain_taken"]

    job = as_json(provision(env, "status", "--json", "evt_a"))
    state = sandbox.state()
    assert job["status"] == "succeeded"
    assert job["domain"] == "shop.example.com"
    assert {g["id"] for g in job["goals"]} == {
        g["id"] for g in state["goals"] if g["domain"] == "shop.example.com"
    }
    [link] = job["shared_links"]
    assert link["url"].startswith(f"{sandbox.base_url}/share/shop.example.com?auth=")

    by_batch = as_json(provision(env, "status", "--by", "batch", "--json", batch["batch_id"]))
    assert by_batch["counts"] == batch["counts"]
    by_domain = provision(env, "status", "--by", "domain", "Shop.Example.com")
    assert by_domain.returncode == 0, by_domain.stderr
    assert "evt_a" in by_domain.stdout
    assert "succeeded" in by_domain.stdout

    again = as_json(provision(env, "import", str(signups), "--json"))  # a batch of no new job
    assert (again["queued"], again["duplicate"]) == (0, 3)
    assert len(sandbox.state()["sites"]) == 3  # ours two, the other team's one; nothing new


def test_demo_command_onboards_the_sample_files(tmp_path: Path) -> None:
    result = provision(clean_environ(), "demo", "--database", f"sqlite:///{tmp_path / 'demo.db'}")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    statuses = [
        line.split()[2] for line in lines if line.split()[:1] and len(line.split()[0]) == 32
    ]
    # Five sites provisioned, two goals and one site deleted, each shown with its job id.
    assert statuses == ["succeeded"] * 8
    assert "line 6: domain:" in result.stdout
    assert "Traceback" not in result.stderr


def test_embedded_import_without_an_api_key_stops_with_a_clear_error(tmp_path: Path) -> None:
    signups = tmp_path / "signups.jsonl"
    signups.write_text(json.dumps(EVENTS[0]) + "\n")
    env = {**clean_environ(), "PROVISIONER_DATABASE_URL": f"sqlite:///{tmp_path / 'status.db'}"}
    result = provision(env, "import", str(signups))
    assert result.returncode == 2
    assert "PLAUSIBLE_API_KEY is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_import_with_invalid_rows_and_a_failed_job_exits_3(
    sandbox: SandboxProcess, env: dict[str, str], tmp_path: Path
) -> None:
    """Failed jobs win over invalid rows: a script learns that work it queued did not happen."""
    with sandbox.client("other-team-key") as other:
        assert other.post("/api/v1/sites", json={"domain": "taken.example.net"}).status_code == 200
    signups = tmp_path / "mixed.jsonl"
    rows = [{"id": "ok", "domain": "fine.example.com"}, {"id": "bad", "domain": ""}, EVENTS[2]]
    signups.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = provision(env, "import", str(signups))
    assert result.returncode == 3, result.stderr
    assert "line 2: domain" in result.stderr
    assert "domain_taken" in result.stdout

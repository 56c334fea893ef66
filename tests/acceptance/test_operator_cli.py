"""Operator commands as a user runs them (subprocesses, the sandbox over HTTP, SQLite files):
recovering a batch in bulk, listing and exporting outcomes, one-line errors with their exit
codes, ``doctor``, and following an import."""

from __future__ import annotations

import csv
import io
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.cli import REPO, clean_environ, provision
from testkit.databases import migrated_engine
from testkit.sandbox_process import SandboxProcess


def signups(path: Path, count: int) -> Path:
    rows = [
        {
            "id": f"evt_{n}",
            "domain": f"shop{n}.example.com",
            "goals": [{"goal_type": "event", "event_name": "Signup"}],
            "shared_links": ["Client dashboard"],
        }
        for n in range(count)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def env(sandbox: SandboxProcess, tmp_path: Path) -> dict[str, str]:
    return {
        **clean_environ(),
        "PROVISIONER_DATABASE_URL": f"sqlite:///{tmp_path / 'status.db'}",
        "PLAUSIBLE_BASE_URL": sandbox.base_url,
        "PLAUSIBLE_API_KEY": "test-key",
    }


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    return lines[-1] if lines else ""


def batch_of(result: subprocess.CompletedProcess[str]) -> str:
    return result.stderr.splitlines()[0].removeprefix("batch ")


def test_a_wrong_key_pauses_the_account_and_a_bulk_retry_resumes_it(
    sandbox: SandboxProcess, env: dict[str, str], tmp_path: Path
) -> None:
    file = signups(tmp_path / "s.jsonl", 12)
    wrong = provision({**env, "PLAUSIBLE_API_KEY": "not-a-key"}, "import", str(file))
    assert wrong.returncode == 3, wrong.stderr  # embedded mode waited; nothing can run
    assert "account default is paused (invalid_api_key)" in wrong.stderr
    assert "provision retry --account default" in wrong.stderr
    batch = batch_of(wrong)
    held = provision(env, "jobs", "--batch", batch, "--code", "invalid_api_key", "--json")
    assert held.returncode == 0, held.stderr
    assert {job["status"] for job in json.loads(held.stdout)} == {"queued"}  # not failed
    assert len(json.loads(held.stdout)) == 12
    # Only the calls in flight when the first refusal came (at most one per worker thread);
    # after it, none of the calls certain to fail went out.
    assert sandbox.state()["counters"]["total"] <= 8

    fixed = provision(env, "retry", "--batch", batch, "--code", "invalid_api_key")
    assert fixed.returncode == 0, fixed.stderr
    lines = fixed.stdout.splitlines()
    assert lines[:2] == ["resumed account default: its waiting jobs go on", "retried 12 job(s)"]
    assert fixed.stdout.count(" succeeded ") == 12  # they ran here, in embedded mode
    assert len(sandbox.state()["sites"]) == 12
    again = provision(env, "retry", "--batch", batch)
    assert again.stdout.splitlines()[0] == "retried 0 job(s)"


def test_reimporting_with_retry_failed_queues_the_failed_rows_again(
    sandbox: SandboxProcess, env: dict[str, str], tmp_path: Path
) -> None:
    file = signups(tmp_path / "s.jsonl", 3)
    with sandbox.client("other-team-key") as other:
        for n in range(3):
            assert other.post("/api/v1/sites", json={"domain": f"shop{n}.example.com"}).is_success
    assert provision(env, "import", str(file)).returncode == 3  # domain_taken, three times
    with sandbox.client("other-team-key") as other:
        for n in range(3):
            assert other.delete(f"/api/v1/sites/shop{n}.example.com").is_success
    plain = provision(env, "import", str(file), "--json")
    assert json.loads(plain.stdout)["retried"] == 0  # a duplicate is left alone by default
    retried = provision(env, "import", str(file), "--retry-failed", "--json")
    assert retried.returncode == 0, retried.stderr
    assert (json.loads(retried.stdout)["duplicate"], json.loads(retried.stdout)["retried"]) == (
        3,
        3,
    )
    done = json.loads(provision(env, "jobs", "--status", "succeeded", "--json").stdout)
    assert len(done) == 3


def test_jobs_and_export_give_back_every_outcome(
    sandbox: SandboxProcess, env: dict[str, str], tmp_path: Path
) -> None:
    file = signups(tmp_path / "s.jsonl", 3)
    batch = batch_of(provision(env, "import", str(file)))
    table = provision(env, "jobs", "--batch", batch)
    assert table.returncode == 0, table.stderr
    assert table.stdout.count(" succeeded ") == 3
    exported = provision(env, "export", batch, "--csv")
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    state = sandbox.state()
    goals = {g["domain"]: g["id"] for g in state["goals"]}
    assert sorted(r["domain"] for r in rows) == sorted(goals)
    for row in rows:
        [goal] = json.loads(row["goals"])
        assert goal["id"] == goals[row["domain"]]
        links = json.loads(row["shared_links"])
        assert links["Client dashboard"].startswith(f"{sandbox.base_url}/share/{row['domain']}")
    out = tmp_path / "out.jsonl"
    assert provision(env, "export", batch, "--jsonl", "-o", str(out)).returncode == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {line["status"] for line in lines} == {"succeeded"}
    assert provision(env, "export", "no-such-batch").returncode == 1


def test_cancel_acts_on_one_job_or_a_filter_and_says_how_many(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'status.db'}"
    from producers.events import parse_event
    from worker.jobs.store import JobStore

    store = JobStore(migrated_engine(url))
    for n in range(4):
        request = parse_event({"domain": f"c{n}.example.com"}).request
        store.enqueue(request, key=f"k{n}", batch="B")
    env = {
        **clean_environ(),
        "PROVISIONER_DATABASE_URL": url,
        "PROVISIONER_BROKER_URL": "redis://127.0.0.1:1/0",
    }
    one = provision(env, "cancel", "k0")
    assert (one.returncode, one.stdout.strip()) == (0, "cancelled 1 job(s)")
    again = provision(env, "cancel", "k0")
    assert again.returncode == 1
    assert "only a queued or waiting job can be cancelled" in last_line(again)
    rest = provision(env, "cancel", "--batch", "B")
    assert rest.stdout.strip() == "cancelled 3 job(s)"
    bare = provision(env, "cancel")
    assert bare.returncode == 2
    assert "say which jobs to cancel" in last_line(bare)
    assert provision(env, "retry", "k1").returncode == 1  # cancelled, not failed
    store.engine.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("settings", "args", "message"),
    [
        ({"PROVISIONER_DATABASE_URL": "foo://x"}, ["jobs"], "PROVISIONER_DATABASE_URL"),
        (
            {"PROVISIONER_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/x"},
            ["jobs"],
            "cannot use the status database postgresql+psycopg://nobody@127.0.0.1:1/x",
        ),
        ({"PROVISIONER_IMPORT_BATCH_SIZE": "abc"}, ["jobs"], "PROVISIONER_IMPORT_BATCH_SIZE: "),
        ({"PROVISIONER_HOURLY_LIMIT": "-5"}, ["quota"], "PROVISIONER_HOURLY_LIMIT: "),
        ({}, ["consume", "--redis", "redis://127.0.0.1:1/0"], "cannot reach Redis"),
        ({}, ["consume"], "--redis URL or PROVISIONER_STREAM_REDIS_URL"),
        (
            {"PROVISIONER_BROKER_URL": "redis://127.0.0.1:1/0", "PLAUSIBLE_API_KEY": "k"},
            ["worker"],
            "cannot reach the broker redis://127.0.0.1:1/0",
        ),
    ],
)
def test_each_misconfiguration_is_one_line_naming_what_to_fix(
    tmp_path: Path, settings: dict[str, str], args: list[str], message: str
) -> None:
    url = f"sqlite:///{tmp_path / 'status.db'}"
    migrated_engine(url).dispose()
    env = {**clean_environ(), "PROVISIONER_DATABASE_URL": url, **settings}
    result = provision(env, *args, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert last_line(result).startswith("Error: ")
    assert message in last_line(result)


def test_a_schema_not_upgraded_says_to_run_db_upgrade(tmp_path: Path) -> None:
    from sqlalchemy import text

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = migrated_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    engine.dispose()
    result = provision({**clean_environ(), "PROVISIONER_DATABASE_URL": url}, "status", "x")
    assert result.returncode == 2
    assert last_line(result).endswith("run `provision db upgrade`")


def test_a_port_in_use_is_one_line_for_the_service_and_the_sandbox(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'status.db'}"
    migrated_engine(url).dispose()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        env = {**clean_environ(), "PROVISIONER_DATABASE_URL": url, "PROVISIONER_API_TOKEN": "t"}
        for args in (["serve", "--port", port], ["sandbox", "--port", port]):
            result = provision(env, *args, timeout=60)
            assert result.returncode == 2, result.stderr
            assert "Traceback" not in result.stderr
            assert "port" in last_line(result)
            assert "--port" in last_line(result)


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    env = {**clean_environ(), "PROVISIONER_DATABASE_URL": "foo://x"}
    result = provision(env, "--debug", "jobs")
    assert result.returncode != 0
    assert "Traceback" in result.stderr
    assert "Traceback" in provision({**env, "PROVISIONER_DEBUG": "1"}, "jobs").stderr


def test_settings_are_read_from_a_dot_env_file_and_read_only_commands_create_nothing(
    tmp_path: Path,
) -> None:
    (tmp_path / ".env").write_text(
        f"PROVISIONER_DATABASE_URL=sqlite:///{tmp_path / 'fromenv.db'}\n"
    )
    env = clean_environ()
    for read_only in (["status", "x"], ["jobs"], ["quota"], ["export", "B"]):
        assert provision(env, *read_only, cwd=tmp_path).returncode == 2
        assert not (tmp_path / "fromenv.db").exists()
    assert provision(env, "db", "upgrade", cwd=tmp_path).returncode == 0
    assert (tmp_path / "fromenv.db").exists()


def test_doctor_reports_a_wrong_base_url_a_wrong_key_an_unreachable_broker_and_database(
    sandbox: SandboxProcess, env: dict[str, str], tmp_path: Path
) -> None:
    migrated_engine(env["PROVISIONER_DATABASE_URL"]).dispose()
    healthy = provision(env, "doctor")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "ok    account default: key accepted" in healthy.stdout

    # /api/v1 twice in every path: the router's 404, which must not pass for "key accepted".
    wrong_url = {
        **env,
        "PLAUSIBLE_API_KEY": "totally-wrong",
        "PLAUSIBLE_BASE_URL": f"{sandbox.base_url}/api/v1",
    }
    result = provision(wrong_url, "doctor")
    assert result.returncode == 2, result.stdout + result.stderr
    assert (
        f"FAIL  account default: PLAUSIBLE_BASE_URL {sandbox.base_url}/api/v1 answered 404 Not "
        f"Found, which is not Plausible's API: set PLAUSIBLE_BASE_URL={sandbox.base_url} "
        "(without /api/v1)"
    ) in result.stdout.splitlines()
    assert "key accepted" not in result.stdout
    assert "totally-wrong" not in result.stdout + result.stderr

    broken = {
        **env,
        "PLAUSIBLE_API_KEY": "wrong-key",
        "PROVISIONER_BROKER_URL": "redis://127.0.0.1:1/0",
    }
    result = provision(broken, "doctor")
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert any(line.startswith("FAIL  broker: cannot reach the broker") for line in lines)
    assert any(
        line.startswith("FAIL  account default: key refused (401)") and "PLAUSIBLE_API_KEY" in line
        for line in lines
    )
    assert "wrong-key" not in result.stdout + result.stderr

    no_db = {**env, "PROVISIONER_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/x"}
    result = provision(no_db, "doctor")
    assert result.returncode == 2
    assert "FAIL  status database: cannot use the status database" in result.stdout


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_import_wait_prints_the_batch_first_and_ctrl_c_says_how_to_follow(
    tmp_path: Path, stop: signal.Signals
) -> None:
    url = f"sqlite:///{tmp_path / 'status.db'}"
    migrated_engine(url).dispose()
    env = {
        **clean_environ(),
        "PROVISIONER_DATABASE_URL": url,
        "PROVISIONER_BROKER_URL": "redis://127.0.0.1:1/0",  # no worker: the batch never ends
        "PYTHONPATH": str(REPO),
    }
    file = signups(tmp_path / "s.jsonl", 2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "provision", "import", str(file), "--wait"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert first.startswith("batch ")
    batch = first.split()[1]
    summary = proc.stderr.readline()
    assert summary.startswith(f"batch={batch} queued=2")
    proc.send_signal(stop)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert f"follow it with: provision status {batch}" in err
    assert "Traceback" not in err

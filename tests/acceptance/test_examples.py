"""The examples run as their docstrings say, over real HTTP: a signup makes a job row that waits,
queued, for the workers' scheduler; an invalid one saves nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from testkit.databases import migrated_engine
from testkit.private_services import free_port
from testkit.sandbox_process import REPO_ROOT
from testkit.waiting import wait_for
from worker.jobs.db import make_engine
from worker.jobs.states import JobStatus
from worker.jobs.store import JobStore

EXAMPLES = REPO_ROOT / "examples"


@contextmanager
def serving(argv: list[str], cwd: Path, env: dict[str, str], port: int, log: Path) -> Iterator[str]:
    """Run a server process until the block ends; yields its base URL once it answers."""
    base = f"http://127.0.0.1:{port}"
    with log.open("w") as output:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=output, stderr=output)
    try:

        def up() -> bool:
            if process.poll() is not None:
                pytest.fail(f"the server exited: {log.read_text()}", pytrace=False)
            try:
                httpx.get(base, timeout=1)
            except httpx.TransportError:
                return False
            return True

        wait_for(up, timeout=60, describe=lambda: f"{argv} to answer: {log.read_text()}")
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


def example_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"SQLITE_PATH", "PGDATABASE", "DATABASE_URL", "PROVISIONER_ACCOUNTS_FILE"}
    }
    env.update(extra, PYTHONPATH=str(REPO_ROOT))
    return env


def signups(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT count(*) FROM signups")).scalar_one())
    finally:
        engine.dispose()


def test_the_django_example_enqueues_a_signups_site_in_its_transaction(tmp_path: Path) -> None:
    project = EXAMPLES / "django_app"
    path = tmp_path / "db.sqlite3"
    env = example_env(SQLITE_PATH=str(path))
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    port = free_port()
    argv = [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"]
    with serving(argv, project, env, port, tmp_path / "server.log") as base:
        created = httpx.post(
            f"{base}/signups", json={"email": "a@example.com", "domain": "shop.example.com"}
        )
        invalid = httpx.post(
            f"{base}/signups", json={"email": "b@example.com", "domain": "not a domain"}
        )
    assert created.status_code == 201, created.text
    assert invalid.status_code == 422
    assert invalid.json()["field"] == "domain"
    body = created.json()
    store = JobStore(make_engine(f"sqlite:///{path}"))
    try:
        job = store.find(f"signup-{body['signup']}")
        assert job is not None
        assert (job.id, job.status, job.dispatched_at, job.domain) == (
            body["job"],
            JobStatus.queued,
            None,
            "shop.example.com",
        )
        assert len(store.list_jobs()) == 1
        with store.engine.connect() as connection:
            saved = connection.execute(text("SELECT count(*) FROM signups_signup")).scalar_one()
        assert saved == 1  # the invalid signup was rolled back with its refused job
    finally:
        store.engine.dispose()


def test_the_fastapi_example_enqueues_a_signups_site_in_its_async_transaction(
    postgres_url: str, tmp_path: Path
) -> None:
    migrated_engine(postgres_url).dispose()  # `provision db upgrade` on the app's database
    app_url = make_url(postgres_url).set(drivername="postgresql+psycopg_async")
    env = example_env(DATABASE_URL=app_url.render_as_string(hide_password=False))
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port)]
    with serving(argv, EXAMPLES / "fastapi_app", env, port, tmp_path / "server.log") as base:
        created = httpx.post(
            f"{base}/signups", json={"email": "a@example.com", "domain": "shop.example.com"}
        )
        invalid = httpx.post(
            f"{base}/signups", json={"email": "b@example.com", "domain": "not a domain"}
        )
    assert created.status_code == 201, created.text
    assert invalid.status_code == 422
    assert invalid.json()["detail"]["field"] == "domain"
    body = created.json()
    store = JobStore(make_engine(postgres_url))
    try:
        job = store.find(f"signup-{body['signup']}")
        assert job is not None
        assert (job.id, job.status, job.dispatched_at) == (body["job"], JobStatus.queued, None)
        assert len(store.list_jobs()) == 1
    finally:
        store.engine.dispose()
    assert signups(postgres_url) == 1  # the invalid signup was rolled back

"""The Django integration, in a real Django project (``examples/django_app``) on SQLite and on
PostgreSQL: each scenario runs ``manage.py`` or a script in its own process, as a deployment
would, and the test reads the status table the workers poll."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from testkit.fakes import RecordingDispatcher
from testkit.sandbox_process import REPO_ROOT
from worker.jobs.db import make_engine, upgrade
from worker.jobs.states import JobStatus, Priority
from worker.jobs.store import JobStore
from worker.runtime import make_scheduler
from worker.settings import Settings

EXAMPLE = REPO_ROOT / "examples" / "django_app"
_DATABASE_ENV = ("SQLITE_PATH", "PGDATABASE", "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD")


@dataclass
class Project:
    """The example project on one database: ``manage`` and ``run`` start processes of it."""

    url: str  #: the SQLAlchemy URL of its database (where the status table lives)
    env: dict[str, str]

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self._run([sys.executable, "manage.py", *args])

    def run(self, script: str, *args: str) -> subprocess.CompletedProcess[str]:
        """``script`` in a process of the project (Django set up first)."""
        preamble = "import django\ndjango.setup()\n"
        return self._run([sys.executable, "-c", preamble + textwrap.dedent(script), *args])

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, cwd=EXAMPLE, env=self.env, capture_output=True, text=True, timeout=120
        )

    def store(self) -> JobStore:
        return JobStore(make_engine(self.url))

    def count(self, sql: str) -> int:
        engine = make_engine(self.url)
        try:
            with engine.connect() as connection:
                return int(connection.execute(text(sql)).scalar_one())
        finally:
            engine.dispose()


def project_env(**database: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DATABASE_ENV}
    env.pop("PROVISIONER_ACCOUNTS_FILE", None)
    env.update(database, DJANGO_SETTINGS_MODULE="signup_site.settings", PYTHONPATH=str(REPO_ROOT))
    return env


@pytest.fixture(params=["sqlite", "postgresql"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Project:
    if request.param == "sqlite":
        path = tmp_path / "app.sqlite3"
        return Project(f"sqlite:///{path}", project_env(SQLITE_PATH=str(path)))
    url: str = request.getfixturevalue("postgres_url")
    parsed = make_url(url)
    return Project(
        url,
        project_env(
            PGDATABASE=str(parsed.database),
            PGHOST=str(parsed.host),
            PGPORT=str(parsed.port or 5432),
            PGUSER=str(parsed.username),
        ),
    )


@pytest.fixture
def sqlite_project(tmp_path: Path) -> Project:
    path = tmp_path / "app.sqlite3"
    return Project(f"sqlite:///{path}", project_env(SQLITE_PATH=str(path)))


@pytest.fixture
def migrated(project: Project) -> Project:
    result = project.manage("migrate", "--no-input")
    assert result.returncode == 0, result.stderr
    return project


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


# -- the schema: the system check, provisioner_migrate, migrate ---------------------------------


def test_the_check_reports_a_missing_table_until_provisioner_migrate_creates_it(
    project: Project,
) -> None:
    check = project.manage("check")
    assert check.returncode != 0
    assert "(plausible_provisioner.E001)" in check.stderr
    assert "provisioning_jobs) is missing from DATABASES['default']" in check.stderr
    assert "python manage.py provisioner_migrate" in check.stderr
    out = ok(project.manage("provisioner_migrate"))
    assert "Upgraded the status table in DATABASES['default'] from revision (none) to" in out
    assert "is at revision" in ok(project.manage("provisioner_migrate"))  # idempotent
    assert "no issues" in ok(project.manage("check"))
    assert project.count("SELECT count(*) FROM provisioning_jobs") == 0


def test_migrate_upgrades_the_status_table_too(project: Project) -> None:
    out = ok(project.manage("migrate", "--no-input"))
    assert "Applying signups.0001_initial... OK" in out
    assert "Upgraded the provisioner's status table" in out
    assert "no issues" in ok(project.manage("check"))
    assert project.count("SELECT count(*) FROM signups_signup") == 0
    assert "Upgraded" not in ok(project.manage("migrate", "--no-input"))  # at head: left alone


def test_the_check_reports_a_table_behind_this_version(sqlite_project: Project) -> None:
    engine = make_engine(sqlite_project.url)
    upgrade(engine, "0002")
    engine.dispose()
    check = sqlite_project.manage("check")
    assert check.returncode != 0
    assert "(plausible_provisioner.E002)" in check.stderr
    assert "is at schema revision 0002" in check.stderr
    ok(sqlite_project.manage("provisioner_migrate"))
    assert "no issues" in ok(sqlite_project.manage("check"))


def test_the_check_reports_bad_settings(sqlite_project: Project, tmp_path: Path) -> None:
    (tmp_path / "bad_settings.py").write_text(
        "from signup_site.settings import *  # noqa: F403\n"
        "PLAUSIBLE_PROVISIONER = {'DATABSE': 'default'}\n"
    )
    env = dict(sqlite_project.env)
    env.update(
        DJANGO_SETTINGS_MODULE="bad_settings", PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO_ROOT}"
    )
    check = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode != 0
    assert "(plausible_provisioner.E003)" in check.stderr
    assert "unknown key(s) DATABSE" in check.stderr


def test_the_projects_own_tests_get_the_status_table_in_their_test_database(
    project: Project,
) -> None:
    """``manage.py test`` creates a test database (in memory, for SQLite) through ``migrate``,
    which upgrades the status table in it; the system check then passes."""
    result = project.manage("test", "--no-input", "signups")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Ran 2 tests" in result.stderr
    assert "OK" in result.stderr


# -- enqueueing in Django's transaction --------------------------------------------------------

SCENARIO = """
import json
from django.db import connection, transaction
from django.test import Client
from producers.django import provisioner
from signups.models import Signup
from worker.errors import IdempotencyConflictError

out = {}
client = Client()
created = client.post("/signups", {"email": "a@example.com", "domain": "a.example.com"},
                      "application/json")
out["created"] = [created.status_code, created.json()]
invalid = client.post("/signups", {"email": "b@example.com", "domain": "not a domain"},
                      "application/json")
out["invalid"] = [invalid.status_code, invalid.json()["field"]]

try:
    with transaction.atomic():
        provisioner.enqueue(connection, {"id": "rolled-back", "domain": "r.example.com"})
        raise RuntimeError("the view failed after enqueue")
except RuntimeError:
    pass

with transaction.atomic():
    first = provisioner.enqueue(connection, {"id": "twice", "domain": "t.example.com"})
    again = provisioner.enqueue(connection, {"id": "twice", "domain": "t.example.com"})
with transaction.atomic():
    later = provisioner.enqueue(connection, {"id": "twice", "domain": "t.example.com"})
    try:
        provisioner.enqueue(connection, {"id": "twice", "domain": "other.example.com"})
        out["conflict"] = None
    except IdempotencyConflictError as exc:
        out["conflict"] = exc.job_id
    # The transaction is still usable after the conflict (no failed statement in it).
    Signup.objects.create(email="c@example.com", domain="c.example.com")
out["twice"] = [first, again, later]
out["status"] = provisioner.status("twice").status.value
print(json.dumps(out))
"""


def test_a_job_exists_if_and_only_if_the_atomic_block_commits(migrated: Project) -> None:
    out = json.loads(ok(migrated.run(SCENARIO)).splitlines()[-1])
    status, body = out["created"]
    assert status == 201
    assert out["invalid"] == [422, "domain"]
    first, again, later = out["twice"]
    assert first == again == later == out["conflict"]
    assert out["status"] == "queued"
    store = migrated.store()
    try:
        job = store.find(f"signup-{body['signup']}")
        assert job is not None
        assert job.id == body["job"]
        assert (job.status, job.dispatched_at, job.domain) == (
            JobStatus.queued,
            None,
            "a.example.com",
        )
        assert store.find("rolled-back") is None
        assert [j.id for j in store.list_jobs()] == [body["job"], first]  # one job per key
    finally:
        store.engine.dispose()
    # The invalid signup was rolled back with its (refused) job; the one after the conflict
    # committed.
    assert migrated.count("SELECT count(*) FROM signups_signup") == 2


CRASHING_VIEW = """
import os, sys
from django.db import connection, transaction
from producers.django import provisioner
from signups.models import Signup

with transaction.atomic():
    signup = Signup.objects.create(email="k@example.com", domain="killed.example.com")
    provisioner.enqueue(connection, {"id": "evt_crash", "domain": signup.domain})
    if sys.argv[1] == "before-commit":
        os._exit(4)
os._exit(3)  # killed right after the commit, before anything else could run
"""


def test_a_django_process_killed_after_its_commit_leaves_a_job_the_scheduler_dispatches(
    migrated: Project,
) -> None:
    assert migrated.run(CRASHING_VIEW, "before-commit").returncode == 4
    store = migrated.store()
    try:
        assert store.find("evt_crash") is None
        assert migrated.count("SELECT count(*) FROM signups_signup") == 0
        assert migrated.run(CRASHING_VIEW, "after-commit").returncode == 3
        job = store.find("evt_crash")
        assert job is not None
        assert (job.status, job.dispatched_at, job.dispatch_count) == (JobStatus.queued, None, 0)
        assert migrated.count("SELECT count(*) FROM signups_signup") == 1
        waiting = store.ready_jobs(["default"], Priority.interactive, limit=10)
        assert [candidate.id for candidate in waiting] == [job.id]
        dispatcher = RecordingDispatcher()
        make_scheduler(Settings(database_url=migrated.url), store, dispatcher).tick()
        assert dispatcher.published == [job.id]
    finally:
        store.engine.dispose()


def test_everything_but_the_django_package_works_without_django() -> None:
    script = (
        "import sys; sys.modules['django'] = None  # as if not installed\n"
        "import producers.api, provision.http.app, provision.cli, worker.app, worker.runtime\n"
        "try:\n"
        "    import producers.django\n"
        "except ImportError:\n"
        "    print('needs django')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "needs django"

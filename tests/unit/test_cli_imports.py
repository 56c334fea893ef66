"""What the CLI loads: ``provision --help`` imports click and none of the heavy libraries, and
``provision status`` only what reading the status table needs, so a heavy import at the top of
a command module cannot creep back. Each command's module is imported when it runs
(``provision.cli._register``)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import click
import pytest

from provision.cli import main
from testkit.sandbox_process import REPO_ROOT

HEAVY = (
    "celery",
    "kombu",
    "redis",
    "fastapi",
    "starlette",
    "sqlalchemy",
    "sqlmodel",
    "alembic",
    "httpx",
    "pydantic",
    "pydantic_core",
)


def loaded_running(args: list[str], env: dict[str, str] | None = None) -> list[str]:
    """The modules a fresh interpreter holds after ``provision ARGS`` ran (successfully)."""
    script = (
        "import sys\n"
        "from provision.cli import main\n"
        f"sys.argv = ['provision', *{args!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "print(sorted(sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded: list[str] = ast.literal_eval(result.stdout.strip().splitlines()[-1])
    return loaded


def packages(modules: list[str], *names: str) -> list[str]:
    return sorted({m.split(".")[0] for m in modules if m.split(".")[0] in names})


@pytest.mark.parametrize("args", [["--help"], ["--version"]])
def test_help_imports_none_of_the_heavy_libraries(args: list[str]) -> None:
    loaded = loaded_running(args)
    assert packages(loaded, *HEAVY) == []
    assert [m for m in loaded if m.startswith("provision.cli.")] == ["provision.cli.interrupts"]


#: What ``provision status ID`` must not import: it reads the job with the database's own
#: driver and shows it with pydantic (``worker.jobs.rows``).
NOT_FOR_STATUS = (
    "celery",
    "kombu",
    "redis",
    "fastapi",
    "starlette",
    "httpx",
    "tenacity",
    "sqlalchemy",
    "sqlmodel",
    "alembic",
)


@pytest.mark.parametrize("form", [[], ["--json"]])
def test_status_of_a_job_imports_no_orm_worker_broker_or_web(
    database_url: str, tmp_path: Path, form: list[str]
) -> None:
    from testkit.databases import migrated_engine
    from worker.jobs.specs import JobRequest
    from worker.jobs.states import Operation
    from worker.jobs.store import JobStore

    store = JobStore(migrated_engine(database_url))
    request = JobRequest(operation=Operation.provision_site, domain="a.example.com")
    job = store.enqueue(request, key="evt-1").job
    store.engine.dispose()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PROVISIONER_DATABASE_URL": database_url}
    for ref in (job.id, "evt-1"):
        # It succeeded: the job was found, and not through the store (that imports SQLAlchemy).
        loaded = loaded_running(["status", *form, ref], env)
        assert packages(loaded, *NOT_FOR_STATUS) == []
        assert not [m for m in loaded if m in ("worker.runtime", "worker.jobs.models")]


def test_every_registered_command_loads_under_its_name() -> None:
    context = click.Context(main)
    for name in main.list_commands(context):
        command = main.get_command(context, name)
        assert isinstance(command, click.Command), name
        assert command.name == name

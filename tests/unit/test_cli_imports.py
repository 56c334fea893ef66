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


def test_status_imports_the_table_but_not_workers_brokers_or_the_web(tmp_path: Path) -> None:
    from worker.jobs.specs import JobRequest
    from worker.jobs.states import Operation
    from worker.settings import Settings
    from worker.storage import make_store

    url = f"sqlite:///{tmp_path / 'status.db'}"
    store = make_store(Settings(database_url=url), migrate=True)
    job = store.enqueue(JobRequest(operation=Operation.provision_site, domain="a.example.com"))
    store.engine.dispose()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PROVISIONER_DATABASE_URL": url}
    loaded = loaded_running(["status", "--json", job.job.id], env)
    assert "sqlalchemy" in loaded  # it did read the table
    assert packages(loaded, "celery", "kombu", "redis", "fastapi", "starlette", "alembic") == []
    assert packages(loaded, "httpx", "tenacity") == []
    assert "worker.runtime" not in loaded


def test_every_registered_command_loads_under_its_name() -> None:
    context = click.Context(main)
    for name in main.list_commands(context):
        command = main.get_command(context, name)
        assert isinstance(command, click.Command), name
        assert command.name == name

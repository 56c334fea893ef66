"""What the SDK and the public contract load: ``producers.client`` imports neither SQLAlchemy nor
the server side, so a remote web app can install and import it alone; ``provisioner_types``
imports nothing of ours."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from testkit.sandbox_process import REPO_ROOT

OURS = ("plausible_rules", "worker", "producers", "provision", "sandbox", "testkit")


def loaded_by(module: str) -> list[str]:
    """The modules a fresh interpreter holds after importing ``module``."""
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}, sys; print(sorted(sys.modules))"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded: list[str] = ast.literal_eval(result.stdout.strip())
    assert module in loaded
    return loaded


def packages(modules: list[str], *names: str) -> list[str]:
    return [m for m in modules if m.split(".")[0] in names]


def test_the_sdk_loads_no_database_broker_web_framework_or_server_module() -> None:
    loaded = loaded_by("producers.client")
    assert "provisioner_types" in loaded
    forbidden = ("sqlalchemy", "sqlmodel", "celery", "worker", "provision", "fastapi")
    assert packages(loaded, *forbidden) == []


@pytest.mark.parametrize("module", ["provisioner_types", "provisioner_types.states"])
def test_the_public_contract_imports_nothing_of_ours(module: str) -> None:
    assert packages(loaded_by(module), *OURS) == []

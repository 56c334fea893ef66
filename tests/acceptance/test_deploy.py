"""The deployment files: docker-compose.yml parses with a real Compose implementation, and every
command it runs is a command this checkout accepts, run here natively."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from testkit.cli import REPO, clean_environ

COMPOSE_ENV = {
    "PLAUSIBLE_API_KEY": "key",
    "PROVISIONER_API_TOKEN": "token",
    "FLOWER_BASIC_AUTH": "ops:secret",
}


def compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is not installed; .ci/run installs it", pytrace=False)
        pytest.skip("docker-compose is not installed (Debian's docker-compose package)")
    return subprocess.run(
        [binary, "-f", str(REPO / "docker-compose.yml"), *args],
        cwd=REPO,
        env={**clean_environ(), **(env if env is not None else COMPOSE_ENV)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def services() -> dict[str, Any]:
    result = compose("--profile", "sandbox", "config")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return dict(config["services"])


def test_the_compose_file_is_valid_and_runs_the_whole_system() -> None:
    found = services()
    assert set(found) == {
        "redis",
        "postgres",
        "migrate",
        "worker",
        "api",
        "consumer",
        "flower",
        "sandbox",
    }
    for name, service in found.items():
        if name != "migrate":
            assert service.get("restart") == "unless-stopped", name
            assert "healthcheck" in service, name
    assert found["worker"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert found["redis"]["volumes"]
    assert found["postgres"]["volumes"]
    assert "--appendonly" in found["redis"]["command"]
    assert "noeviction" in found["redis"]["command"]
    assert found["api"]["ports"]


def test_the_compose_file_says_which_setting_is_missing() -> None:
    for missing in COMPOSE_ENV:
        env = {name: value for name, value in COMPOSE_ENV.items() if name != missing}
        result = compose("config", "-q", env=env)
        assert result.returncode != 0, missing
        assert f"set {missing}" in result.stderr, missing


def test_the_only_published_door_is_the_http_service_and_every_door_signs_in() -> None:
    """Published ports reach the host: only the HTTP service, which refuses to start without
    its token. Flower (which can revoke tasks and stop workers) stays inside the network and
    asks for its own sign-in."""
    found = services()
    published = {name for name, service in found.items() if service.get("ports")}
    assert published == {"api"}
    assert "PROVISIONER_API_TOKEN" in found["api"]["environment"]
    assert "--dev" not in found["api"]["command"]
    flower = found["flower"]
    assert "--basic-auth=ops:secret" in flower["command"]
    assert flower["expose"] == ["5555"]


def test_every_command_the_compose_file_runs_is_accepted_here() -> None:
    for name, service in services().items():
        command = service.get("command")
        if name in {"redis", "postgres"} or not command:
            continue
        argv = command if isinstance(command, list) else shlex.split(command)
        program, rest = argv[0], argv[1:]
        if program == "provision":
            run = [sys.executable, "-m", "provision", *rest, "--help"]
        elif program == "celery":
            run = [sys.executable, "-m", "celery", *rest, "--help"]
        else:
            pytest.fail(f"{name}: unexpected program {program!r}")
        done = subprocess.run(
            run,
            cwd=REPO,
            env={**clean_environ(), "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"{name}: {' '.join(argv)}\n{done.stderr}"


def test_the_image_runs_as_a_user_with_a_writable_data_directory() -> None:
    text = (REPO / "Dockerfile").read_text()
    lines = [line.split()[0] for line in text.splitlines() if line and not line.startswith("#")]
    assert {"CMD", "HEALTHCHECK", "USER", "VOLUME"} <= set(lines)
    assert "USER provisioner" in text
    assert "sqlite:////data/" in text
    assert Path(REPO / "provision" / "demo_data" / "signups.jsonl").exists()

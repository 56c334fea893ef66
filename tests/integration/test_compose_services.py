"""The services docker-compose.yml runs, run here natively with their compose healthchecks:
Flower on the broker, and ``provision serve`` answering ``/readyz``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from testkit.cli import REPO, clean_environ
from testkit.databases import migrated_engine
from testkit.private_services import free_port
from testkit.waiting import wait_for


def serving(url: str, proc: subprocess.Popen[bytes], log: Path) -> bool:
    assert proc.poll() is None, log.read_text()
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_flower_and_the_http_service_pass_their_compose_healthchecks(
    redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    migrated_engine(sqlite_url).dispose()
    env = {
        **clean_environ(),
        "PYTHONPATH": str(REPO),
        "PROVISIONER_BROKER_URL": redis_url,
        "PROVISIONER_DATABASE_URL": sqlite_url,
        "PROVISIONER_API_TOKEN": "token",
    }
    flower_port, api_port = free_port(), free_port()
    commands = {
        "flower": [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.celery_app",
            "flower",
            f"--port={flower_port}",
        ],
        "api": [sys.executable, "-m", "provision", "serve", "--port", str(api_port)],
    }
    procs = {}
    try:
        for name, command in commands.items():
            log = tmp_path / f"{name}.log"
            with log.open("wb") as out:
                procs[name] = (
                    subprocess.Popen(
                        command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
                    ),
                    log,
                )
        flower, flower_log = procs["flower"]
        wait_for(
            lambda: serving(f"http://127.0.0.1:{flower_port}/healthcheck", flower, flower_log),
            timeout=60,
            describe="Flower",
        )
        assert httpx.get(f"http://127.0.0.1:{flower_port}/healthcheck").text == "OK"
        api, api_log = procs["api"]
        wait_for(
            lambda: serving(f"http://127.0.0.1:{api_port}/healthz", api, api_log),
            timeout=60,
            describe="provision serve",
        )
        ready = httpx.get(f"http://127.0.0.1:{api_port}/readyz")
        assert ready.status_code == 200, ready.text
    finally:
        for proc, _ in procs.values():
            proc.terminate()
            proc.wait(timeout=30)

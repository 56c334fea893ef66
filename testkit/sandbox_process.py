"""Run the sandbox as a real subprocess for tests.

``SandboxProcess`` starts ``python -m sandbox`` on a free loopback port (``--port 0``; the
port is read back from the ready line), waits for the ready line and offers the admin routes
as methods. Keys: ``api_key`` has the Sites API scope on the default team, ``stats_api_key``
only the Stats scope, ``other_team_api_key`` belongs to another team that has the Sites API.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

import httpx

READY_PATTERN = re.compile(r"sandbox listening on (http://\S+)")
REPO_ROOT = Path(__file__).resolve().parent.parent


class SandboxProcess:
    """A sandbox server in its own process, driven through ``/_sandbox/*``."""

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        stats_api_key: str | None = "stats-key",
        other_team_api_key: str | None = "other-team-key",
        extra_args: list[str] | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        self.api_key = api_key
        self.stats_api_key = stats_api_key
        self.other_team_api_key = other_team_api_key
        self.extra_args = list(extra_args or [])
        self.startup_timeout = startup_timeout
        self.base_url = ""
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None
        self._admin: httpx.Client | None = None

    def command(self) -> list[str]:
        args = [sys.executable, "-m", "sandbox", "--host", "127.0.0.1", "--port", "0"]
        args += ["--api-key", self.api_key]
        if self.stats_api_key:
            args += ["--stats-api-key", self.stats_api_key]
        if self.other_team_api_key:
            args += ["--other-team-api-key", self.other_team_api_key]
        return args + self.extra_args

    def start(self) -> SandboxProcess:
        # stderr goes to a file so a chatty server can never fill a pipe and stall.
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._proc = subprocess.Popen(
            self.command(),
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
        )
        lines: queue.Queue[str] = queue.Queue()
        assert self._proc.stdout is not None
        threading.Thread(target=_pump, args=(self._proc.stdout, lines), daemon=True).start()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.1)
            except queue.Empty:
                if self._proc.poll() is not None:
                    break
                continue
            match = READY_PATTERN.search(line)
            if match:
                self.base_url = match.group(1)
                self._admin = httpx.Client(base_url=self.base_url, timeout=10.0)
                return self
        output = self._read_stderr()
        self.stop()
        raise RuntimeError(f"sandbox did not become ready: {output}")

    def _read_stderr(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read()

    @property
    def admin(self) -> httpx.Client:
        if self._admin is None:
            raise RuntimeError("sandbox is not running")
        return self._admin

    def _post(self, path: str, payload: dict[str, Any] | None = None) -> Any:
        response = self.admin.post(path, json=payload or {})
        response.raise_for_status()
        return response.json()

    def state(self) -> dict[str, Any]:
        """Every site, goal, shared link, guest and the request counters."""
        response = self.admin.get("/_sandbox/state")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def reset(self) -> None:
        """Forget all state and restore the command-line configuration."""
        self._post("/_sandbox/reset")

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change fail_rate, drop_rate, latency_ms, hourly_limit, burst_limit, burst_seconds, hour_seconds."""
        result: dict[str, Any] = self._post("/_sandbox/config", settings)
        return result

    def add_team(self, **team: Any) -> dict[str, Any]:
        """Create a team: name, features, locked, site_limit, hourly_limit. Returns it with its id."""
        result: dict[str, Any] = self._post("/_sandbox/teams", team)
        return result

    def add_key(self, **key: Any) -> dict[str, Any]:
        """Create a key: key, team (id), role, scopes, user; or key, legacy=True, user, scopes."""
        result: dict[str, Any] = self._post("/_sandbox/keys", key)
        return result

    def add_legacy_key(self, key: str, user: str, **options: Any) -> dict[str, Any]:
        """A legacy key (no team) of ``user``, who is created on demand."""
        return self.add_key(key=key, legacy=True, user=user, **options)

    def add_membership(self, **membership: Any) -> dict[str, Any]:
        """Give ``user`` a team role (user, team, role) or a guest role (user, site, role)."""
        result: dict[str, Any] = self._post("/_sandbox/memberships", membership)
        return result

    def add_site(self, **site: Any) -> dict[str, Any]:
        """Place a site as if made in Plausible's UI: domain, team (id), timezone, consolidated,
        domain_changed_from. No feature or role checks."""
        result: dict[str, Any] = self._post("/_sandbox/sites", site)
        return result

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        """An httpx client on the sandbox, authenticated with ``key`` (default: the Sites API key)."""
        headers = {"Authorization": f"Bearer {key or self.api_key}"}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=10.0, **kwargs)

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> SandboxProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _pump(stream: IO[str], lines: queue.Queue[str]) -> None:
    # Keeps draining stdout after the ready line so the child never blocks on a full pipe.
    for line in stream:
        lines.put(line)

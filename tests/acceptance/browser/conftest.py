"""Browser tier: Playwright (from PyPI) drives Debian's Chromium (``/usr/bin/chromium``; no
browser is downloaded) against a real ``provision serve`` subprocess, real ``provision worker``
processes, Redis, a SQLite status table and the sandbox (the integration tier's ``Stack``).

Without Playwright or Chromium the tests skip with the reason; with ``CI`` set they fail
instead (``testkit.services.unavailable``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from testkit.private_services import free_port
from testkit.sandbox_process import REPO_ROOT
from testkit.services import unavailable
from testkit.waiting import wait_for
from testkit.workers import PROVISION, Stack

CHROMIUM = os.environ.get("PROVISIONER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "browser-test-token"
#: The quota both sides keep (the sandbox and the provisioner), so the gauge has a scale.
LIMITS = {"hourly_limit": 600, "burst_limit": 100}
SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: Chromium against a real provision serve, worker and sandbox"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


@dataclass
class Dashboard:
    """A ``provision serve`` on the stack's status table and broker."""

    stack: Stack
    base_url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def url(self, path: str) -> str:
        return self.base_url + path

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def dashboard(
    redis_url: str, sqlite_url: str, make_stack: Callable[..., Stack], tmp_path: Path
) -> Iterator[Dashboard]:
    """A Stack (workers started by the test), and ``provision serve`` on it, signed in with
    ``TOKEN``; the sandbox and the provisioner keep ``LIMITS``."""
    stack = make_stack(redis_url, sqlite_url)
    stack.sandbox.configure(**LIMITS)
    port = free_port()
    env = stack.env(**LIMITS)
    env["PROVISIONER_API_TOKEN"] = TOKEN
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*PROVISION, "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    served = Dashboard(stack, f"http://127.0.0.1:{port}", proc, log)

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"provision serve exited:\n{served.log_tail()}", pytrace=False)
        try:
            return httpx.get(served.url("/healthz"), timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, timeout=30, describe=lambda: f"provision serve\n{served.log_tail()}")
        yield served
    finally:
        served.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium, headless, launched by Playwright from Debian's package. Per module: while
    Playwright's sync API runs, its event loop is this thread's, so tests that run their own
    loop (TestClient, anyio) must not come before it stops."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as exc:
        unavailable("Playwright", f"{exc}; pip install playwright")
    if not Path(CHROMIUM).exists():
        unavailable("Chromium", f"no {CHROMIUM}; apt-get install chromium")
    playwright = sync_playwright().start()
    try:
        try:
            launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Error as exc:
            unavailable("Chromium", str(exc).splitlines()[0])
        yield launched
        launched.close()
    finally:
        playwright.stop()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A fresh browser profile (no cookies) at laptop size."""
    made = browser.new_context(viewport=LAPTOP)
    made.set_default_timeout(15_000)
    yield made
    made.close()


def screenshot(page: Any, name: str) -> Path:
    """Save the page's viewport as ``docs/screenshots/NAME.png`` (docs/dashboard.md shows them)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def sign_in(page: Any, dashboard: Dashboard, path: str = "/ui") -> None:
    """Open ``path``, meet the sign-in page, enter the token, land on ``path``."""
    page.goto(dashboard.url(path))
    page.wait_for_url("**/ui/login**")
    page.fill("input[name=token]", TOKEN)
    page.click("form button[type=submit]")
    page.wait_for_url(dashboard.url(path))

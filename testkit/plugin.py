"""The fixtures every tier shares, registered by ``tests/conftest.py`` (``pytest_plugins``): the
sandbox process and clients of it, the machine's services, worker stacks and a hand-moved
clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from testkit import services
from testkit.clock import FakeClock
from testkit.plausible_clients import Box
from testkit.sandbox_process import SandboxProcess
from testkit.workers import NO_LIMITS, Stack
from worker.plausible import PlausibleClient


@pytest.fixture(scope="session")
def sandbox_session() -> Iterator[SandboxProcess]:
    """One sandbox process for the whole run; keys test-key, stats-key, other-team-key."""
    with SandboxProcess(
        api_key="test-key", stats_api_key="stats-key", other_team_api_key="other-team-key"
    ) as process:
        yield process


@pytest.fixture
def sandbox(sandbox_session: SandboxProcess) -> SandboxProcess:
    """The session sandbox, reset to empty state and command-line config before each test."""
    sandbox_session.reset()
    return sandbox_session


@pytest.fixture
def http(sandbox: SandboxProcess) -> Iterator[httpx.Client]:
    """Raw HTTP to the sandbox with its Sites API key."""
    with sandbox.client() as client:
        yield client


@pytest.fixture
def box(sandbox: SandboxProcess) -> Iterator[Box]:
    """``PlausibleClient``s on the sandbox, closed after the test."""
    made = Box(sandbox)
    yield made
    made.close()


@pytest.fixture
def api(box: Box) -> PlausibleClient:
    """A ``PlausibleClient`` with the sandbox's Sites API key."""
    return box.client()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The tests' Redis database (broker or stream), flushed before and after the test."""
    with services.owned_redis() as url:
        yield url


@pytest.fixture
def flush_broker(redis_url: str) -> Callable[[], int]:
    """FLUSHDB on the broker db; returns how many keys were there."""
    return services.flush_redis


@pytest.fixture
def amqp_url() -> Iterator[str]:
    """RabbitMQ, with the provisioner queue purged before and deleted after the test."""
    with services.owned_rabbitmq() as url:
        yield url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test, dropped afterwards."""
    with services.fresh_postgres() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """The status table, on each supported store in turn."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def make_stack(sandbox: SandboxProcess, tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Build a Stack on a given broker and status table; torn down (workers SIGKILLed) after.

    Request the broker and database fixtures *before* this one, so the workers are killed before
    their broker is flushed or their database dropped."""
    stacks: list[Stack] = []

    def make(broker_url: str, database_url: str, *, on: SandboxProcess | None = None) -> Stack:
        box = on or sandbox
        box.configure(**NO_LIMITS)
        stack = Stack(box, broker_url, database_url, tmp_path)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()


@pytest.fixture
def stack(redis_url: str, database_url: str, make_stack: Callable[..., Stack]) -> Stack:
    """Redis broker, parametrised over the SQLite and PostgreSQL stores."""
    return make_stack(redis_url, database_url)


@pytest.fixture
def sqlite_stack(redis_url: str, sqlite_url: str, make_stack: Callable[..., Stack]) -> Stack:
    """Redis broker and a SQLite store, for tests where the store makes no difference."""
    return make_stack(redis_url, sqlite_url)


@pytest.fixture
def clock() -> FakeClock:
    """A clock the test moves by hand (``FakeClock``); a module may define its own."""
    return FakeClock()

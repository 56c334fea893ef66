"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

# ---- sandbox fixtures (owner: sandbox) -----------------------------------------------------
from tests.sandbox_process import SandboxProcess


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


# ---- end sandbox fixtures ------------------------------------------------------------------

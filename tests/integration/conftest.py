"""The integration tier: real ``provision worker`` processes, a real broker, a real status table
and the sandbox over HTTP (``testkit.workers``). Fixtures come from ``testkit.plugin``."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: real worker processes, broker, database and sandbox"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)

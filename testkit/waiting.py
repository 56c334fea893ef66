"""Waiting on a condition with a deadline, for tests that watch other threads or processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.1,
    describe: Callable[[], str] | str = "condition",
) -> T:
    """Poll ``condition`` until it returns something truthy; fail with a description at the
    deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            what = describe() if callable(describe) else describe
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}", pytrace=False)
        time.sleep(interval)

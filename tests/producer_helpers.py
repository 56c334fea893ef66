"""Helpers shared by the producer tests: event builders, services."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest


def event(n: int, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": f"evt_{n}",
        "type": "site.provision",
        "domain": f"site{n}.example.com",
        "timezone": "Europe/Berlin",
        "goals": [{"goal_type": "event", "event_name": "Signup"}],
        "shared_links": ["WordPress"],
    }
    data.update(overrides)
    return data


def jsonl(*events: dict[str, Any]) -> str:
    return "".join(json.dumps(e) + "\n" for e in events)


def service_unavailable(service: str, reason: str) -> None:
    """Skip locally when a service is down; fail under CI, which must run everything."""
    message = f"{service} is not available ({reason})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must run every test", pytrace=False)
    pytest.skip(message)

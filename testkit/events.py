"""Signup events for tests: builders and JSON Lines."""

from __future__ import annotations

import json
from typing import Any


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

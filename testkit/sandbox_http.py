"""Talking to the sandbox in raw HTTP, as the reference describes the wire: an ``httpx.Client``
with the Sites API key (fixture ``http`` in ``testkit.plugin``) and two shorthands."""

from __future__ import annotations

from typing import Any

import httpx


def create(http: httpx.Client, domain: str, **extra: Any) -> httpx.Response:
    return http.post("/api/v1/sites", json={"domain": domain, **extra})


def error_of(response: httpx.Response) -> Any:
    return response.json()["error"]

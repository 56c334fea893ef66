"""The typed results of the Sites API: frozen dataclasses, one per kind of object it returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Site:
    """A site as returned by create, get and update (§7.3).

    ``domain`` is the server's normalised domain: use it, not the caller's input, as ``site_id``.
    """

    domain: str
    timezone: str
    custom_properties: tuple[str, ...]
    tracker_script_configuration: Mapping[str, Any]


@dataclass(frozen=True)
class SiteSummary:
    """One entry of the sites list (§7.1): the list carries only these two fields."""

    domain: str
    timezone: str


@dataclass(frozen=True)
class Goal:
    """A goal (§7.9). ``domain`` is set by find-or-create and ``None`` in list entries."""

    id: int
    goal_type: str
    event_name: str | None
    page_path: str | None
    display_name: str
    custom_props: Mapping[str, str]
    domain: str | None


@dataclass(frozen=True)
class SharedLink:
    """A shared dashboard link (§7.7)."""

    name: str
    url: str


@dataclass(frozen=True)
class Team:
    """A team the key can see (§7.2). ``api_available`` reports the *Stats* API feature."""

    id: str
    name: str
    api_available: bool


@dataclass(frozen=True)
class Guest:
    """A guest membership or pending invitation (§7.14): ``status`` is accepted or invited."""

    email: str
    role: str
    status: str

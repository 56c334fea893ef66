"""Plausible's rate-limit windows (§4 of the API reference): fixed, aligned to the epoch.

Plausible counts a request in window ``floor(now / length)`` of its own clock, for the team's
hour and for its burst window. Our clock may differ from Plausible's by a little, and a request
takes a moment to arrive, so a request sent within ``guard`` seconds of a boundary may be
counted on either side of it: it is charged to both windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from worker.accounts import Quota

HOUR = "hour"
BURST = "burst"
KINDS = (HOUR, BURST)


@dataclass(frozen=True, order=True)
class Window:
    kind: str
    index: int

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.index}"

    @classmethod
    def from_key(cls, key: str) -> Window:
        kind, _, index = key.partition(":")
        if kind not in KINDS or not index.lstrip("-").isdigit():
            raise ValueError(f"not a window key: {key!r}")
        return cls(kind, int(index))


def length(quota: Quota, kind: str) -> float:
    return quota.hour_seconds if kind == HOUR else quota.burst_seconds


def start(quota: Quota, window: Window) -> float:
    return window.index * length(quota, window.kind)


def end(quota: Quota, window: Window) -> float:
    return (window.index + 1) * length(quota, window.kind)


def current(quota: Quota, kind: str, at: float) -> Window:
    return Window(kind, math.floor(at / length(quota, kind)))


def span(quota: Quota, at: float, guard: float) -> list[Window]:
    """Every window, of both kinds, that a request sent at ``at`` may be counted in."""
    windows: list[Window] = []
    for kind in KINDS:
        first, last = current(quota, kind, at - guard), current(quota, kind, at + guard)
        windows += [Window(kind, index) for index in range(first.index, last.index + 1)]
    return windows

"""Stand-ins for the parts a unit test does not run for real."""

from __future__ import annotations

from collections.abc import Sequence


class RecordingDispatcher:
    """A dispatcher that remembers what it was asked to publish, in order."""

    def __init__(self) -> None:
        self.published: list[str] = []

    def publish(self, job_ids: Sequence[str]) -> None:
        self.published.extend(job_ids)

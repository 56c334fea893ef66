"""Stand-ins for the parts a unit test does not run for real."""

from __future__ import annotations

from collections.abc import Sequence

from worker.dispatch import Lane


class RecordingDispatcher:
    """A dispatcher that remembers what it was asked to publish, in order; ``waiting`` is how
    many messages its broker says it still holds, in one FIFO queue (as RabbitMQ's)."""

    def __init__(self, waiting: int = 0) -> None:
        self.published: list[str] = []
        self.calls: list[list[str]] = []
        #: Those published ahead of the waiting messages.
        self.first: list[str] = []
        self.waiting = waiting

    def publish(self, job_ids: Sequence[str], *, first: bool = False, bulk: bool = False) -> None:
        self.published.extend(job_ids)
        self.calls.append(list(job_ids))
        if first:
            self.first.extend(job_ids)

    def queued_messages(self) -> dict[Lane, int]:
        return {None: self.waiting}

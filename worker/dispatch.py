"""What hands job ids to workers: Celery in production, an in-process queue in embedded mode.

Only the scheduler and the sweeper publish; producers write rows and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Dispatcher(Protocol):
    def publish(self, job_ids: Sequence[str], *, first: bool = False) -> None:
        """Hand the jobs to the workers; ``first``: ahead of the messages already waiting (jobs
        that ran before: handed back from a dead worker, or resuming)."""
        ...

    def queued_messages(self) -> int:
        """How many published messages still wait in the broker for a worker to take them."""
        ...

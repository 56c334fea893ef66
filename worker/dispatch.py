"""What hands job ids to workers: Celery in production, an in-process queue in embedded mode.

Only the scheduler and the sweeper publish; producers write rows and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

#: What decides a message's priority: (bulk, first), a bulk job's and one whose job ran before.
MessageClass = tuple[bool, bool]

#: Message priorities by (bulk, first). On Redis each is a list of its own, and every worker's
#: BRPOP asks the lowest number's list first (kombu's priority steps 0, 3, 6, 9): a new signup
#: goes ahead of the bulk messages already waiting, and a job that ran before (handed back from
#: a dead worker) to the front of its class. RabbitMQ ignores them (the queue has no
#: x-max-priority): there every message joins the back of the queue.
PRIORITIES: dict[MessageClass, int] = {
    (False, True): 0,
    (False, False): 3,
    (True, True): 6,
    (True, False): 9,
}

#: A FIFO lane of the broker, where messages are taken in the order they were published: a
#: priority whose messages wait in a queue of their own (Redis, the embedded queue), or None
#: where one queue holds every message whatever its priority (RabbitMQ).
Lane = int | None


def lane_of(kind: MessageClass, queued: Mapping[Lane, int]) -> Lane:
    """The lane a message of class ``kind`` waits in, given the broker's counts by lane."""
    return None if None in queued else PRIORITIES[kind]


class Dispatcher(Protocol):
    def publish(self, job_ids: Sequence[str], *, first: bool = False, bulk: bool = False) -> None:
        """Hand the jobs to the workers, interactive ones ahead of the ``bulk`` messages already
        waiting; ``first``: ahead of the messages of their class already waiting (jobs that ran
        before: handed back from a dead worker, or resuming)."""
        ...

    def queued_messages(self) -> dict[Lane, int]:
        """How many published messages still wait in the broker for a worker to take them, by
        lane (``Lane``); empty when the queue itself is gone."""
        ...

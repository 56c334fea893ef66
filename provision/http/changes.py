"""``JobChanges``: wakes the ``?wait`` pollers of a job that changed, so they answer at once
rather than at their next re-read.

One per process. It listens to the workers' wake-up channel (``worker.wakeups``: a producer
enqueued, an operator retried, a worker finished or handed back a job) on one thread, whatever
the number of waiters. A wake-up names no job, so at each one (at most one every
``CHECK_EVERY`` seconds) it reads the ``updated_at`` of every job waited on, in one statement,
and wakes the waiters of those that moved. Every change to a job sets its ``updated_at``. The
channel is only a hint: waiters still re-read on their own pauses (``provision.http.polling``),
which is also how they see changes that announce nothing, such as a cancel or a job starting to
run.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Executor
from datetime import datetime

from worker.jobs.queries import Queries
from worker.wakeups import Wakeup

log = logging.getLogger(__name__)

#: At most one check per this many seconds: a burst of wake-ups (an import enqueuing) costs
#: one read of the waited jobs, not one per wake-up.
CHECK_EVERY = 0.1
#: How long the thread that relays wake-ups to the event loop blocks at a time.
RELAY_SECONDS = 5.0


class JobChanges:
    """The waiters of each job (by id) and the ``updated_at`` each last saw; ``wakeup``
    listens to the channel, ``readers`` run the check off the event loop."""

    def __init__(self, store: Queries, wakeup: Wakeup, readers: Executor) -> None:
        self.store, self.wakeup, self.readers = store, wakeup, readers
        self._waiters: dict[str, dict[asyncio.Event, datetime]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checker: asyncio.Task[None] | None = None

    async def until_changed(self, job_id: str, seen: datetime, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a wake-up showing the job's ``updated_at`` is no
        longer ``seen``; True if one did (the caller re-reads the job either way)."""
        self._start()
        changed = asyncio.Event()
        self._waiters.setdefault(job_id, {})[changed] = seen
        try:
            async with asyncio.timeout(timeout):
                await changed.wait()
            return True
        except TimeoutError:
            return False
        finally:
            mine = self._waiters.get(job_id, {})
            mine.pop(changed, None)
            if not mine:
                self._waiters.pop(job_id, None)

    def _start(self) -> None:
        """On the first wait in an event loop: the relay thread and the checking task, for the
        loop's life (the server's: the process's)."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        self._loop = loop
        woken = asyncio.Event()

        def relay() -> None:
            while not loop.is_closed():
                if self.wakeup.wait(RELAY_SECONDS):
                    try:
                        loop.call_soon_threadsafe(woken.set)
                    except RuntimeError:  # the loop closed meanwhile
                        return

        threading.Thread(target=relay, name="job-changes", daemon=True).start()
        self._checker = loop.create_task(self._check_on_wakeups(woken))

    async def _check_on_wakeups(self, woken: asyncio.Event) -> None:
        while True:
            await woken.wait()
            woken.clear()
            if self._waiters:
                await self._check(list(self._waiters))
            await asyncio.sleep(CHECK_EVERY)

    async def _check(self, job_ids: Sequence[str]) -> None:
        loop = asyncio.get_running_loop()
        try:
            now = await loop.run_in_executor(self.readers, self.store.updated_at, job_ids)
        except Exception as exc:  # a hint: the waiters' own re-reads catch up
            log.debug("could not check the waited jobs (%s)", exc)
            return
        for job_id in job_ids:
            current = now.get(job_id)  # None: deleted meanwhile, which is a change too
            for changed, seen in self._waiters.get(job_id, {}).items():
                if current != seen:
                    changed.set()

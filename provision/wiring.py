"""The store a producer command runs with, built from settings; and, in embedded mode, the
workers that run its jobs in this process."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from worker.jobs.store import JobStore
from worker.settings import Settings
from worker.storage import make_store

__all__ = ["make_store", "runtime"]


@contextlib.contextmanager
def runtime(settings: Settings) -> Iterator[JobStore]:
    """The store. With a broker, the workers elsewhere run its jobs (``provision db upgrade`` is
    then the operator's step). Without one (embedded mode) the schema is brought up to date and
    worker threads run in this process until the block ends."""
    embedded = not settings.broker_url
    store = make_store(settings, migrate=embedded)
    if not embedded:
        yield store
        return
    from worker.embedded import EmbeddedWorkers

    with EmbeddedWorkers(settings, store):
        yield store

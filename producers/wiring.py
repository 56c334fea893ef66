"""The store and dispatcher a producer command runs with, built from settings."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from worker.runtime import make_store
from worker.settings import Settings
from worker.store import JobStore
from worker.sweeper import Dispatcher

__all__ = ["make_store", "runtime"]


@contextlib.contextmanager
def runtime(settings: Settings) -> Iterator[tuple[JobStore, Dispatcher]]:
    """The store and a dispatcher: Celery when a broker is configured, else embedded workers
    running in this process (which stop when the block ends). Embedded mode brings its database
    to the current schema; with a broker, ``provision db upgrade`` is the operator's step."""
    embedded = not settings.broker_url
    store = make_store(settings, migrate=embedded)
    if not embedded:
        from worker.app import CeleryDispatcher, create_app

        yield store, CeleryDispatcher(create_app(settings))
        return
    from worker.embedded import EmbeddedWorkers

    with EmbeddedWorkers(settings, store) as workers:
        yield store, workers

"""Status databases for tests: an engine on a URL, migrated to the current schema."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from worker.jobs.db import make_engine, upgrade


def migrated_engine(database_url: str) -> Engine:
    engine = make_engine(database_url)
    upgrade(engine)
    return engine

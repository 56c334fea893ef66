"""``GET /healthz`` (the process is up) and ``GET /readyz`` (the status database is reachable
and at this version's schema). Public: they hold no data."""

from __future__ import annotations

import functools
from pathlib import Path

from fastapi import APIRouter
from sqlalchemy.exc import SQLAlchemyError

from provision.http.deps import Store
from provision.http.errors import ApiError
from provision.http.openapi import errors
from provisioner_types import Health
from worker.jobs import db, revisions
from worker.jobs.store import JobStore

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up (no database involved)."""
    return Health()


@router.get("/readyz", response_model=Health, responses=errors(503))
def readyz(store: Store) -> Health:
    """The status database is reachable and at this version's schema."""
    _check_database(store)
    return Health()


def _check_database(store: JobStore) -> None:
    """Raise a 503 ApiError unless the status database is reachable and at the schema head."""
    engine = store.engine
    path = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
    if path and path != ":memory:" and not Path(path).exists():
        # Connecting would create an empty file; say it is missing instead.
        raise ApiError(503, "database_unreachable", f"no status database at {path}")
    try:
        with engine.connect() as connection:
            current = db.current_revision(connection)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise ApiError(
            503, "database_unreachable", f"cannot open the status database ({reason})"
        ) from None
    head = _head_revision()
    if current != head:
        raise ApiError(
            503,
            "schema_behind",
            f"the status database is at schema revision {current or '(empty)'}, this version "
            f"needs {head}: run `provision db upgrade`",
        )


#: The migrations on disk do not change while the process runs.
_head_revision = functools.cache(revisions.head_revision)

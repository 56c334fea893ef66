"""Alembic environment: migrations run on a connection handed over by ``worker.jobs.db``."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from worker.jobs import models  # noqa: F401  (registers the tables on SQLModel.metadata)

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    # SQLite cannot ALTER most things in place; batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()

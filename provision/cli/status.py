"""``provision status``: a job, a batch or the jobs of a domain, answered at once.

It imports only what showing a job needs: a job by id or key is read with the database's own
driver (``provision.status.quick_lookup``); SQLAlchemy, the tables and the quota reporter are
imported only for a batch, a domain, or a database that reader leaves to the store
(``tests/unit/test_cli_imports.py`` keeps it so).
"""

from __future__ import annotations

import json
from datetime import datetime

import click

from provision.cli import main
from provision.status import Found, Kind, quick_lookup
from worker.settings import Settings, get_settings


@main.command()
@click.argument("ref")
@click.option(
    "--by",
    "kind",
    type=click.Choice(["auto", "job", "batch", "domain"]),
    default="auto",
    show_default=True,
    help="What REF is; auto tries job id/key, then batch id, then domain.",
)
@click.option("--json", "as_json", is_flag=True, help="JSON: one object for a job or a batch.")
def status(ref: str, kind: Kind, as_json: bool) -> None:
    """Show a job (by id or idempotency key), a batch, or the jobs of a domain."""
    settings = get_settings()
    found = quick_lookup(settings.database_url, ref) if kind in ("auto", "job") else None
    if found is None:
        found = _lookup(settings, ref, kind)
    if found is None:
        raise click.ClickException(f"no job, batch or domain matches {ref!r}")
    click.echo(json.dumps(found.as_json(), indent=2) if as_json else found.as_text())


def _lookup(settings: Settings, ref: str, kind: Kind) -> Found | None:
    """``ref`` looked up through the store: a batch, a domain, or what ``quick_lookup`` could
    not read (the store then says why)."""
    from provision.status import lookup
    from provision.wiring import make_store

    store = make_store(settings)

    def batch_eta(batch_id: str) -> datetime | None:
        from worker.runtime import make_reporter

        return make_reporter(settings, store).batch_eta(batch_id)

    return lookup(store, ref, kind, batch_eta)

"""``provision sites``: the inventory, what the provisioner knows it owns in Plausible (and
``provision export`` without a batch, which writes the same)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import click

from provision import views
from provision.cli import main
from provision.wiring import make_store
from provisioner_types import Site
from worker.jobs import view
from worker.jobs.store import JobStore
from worker.settings import get_settings

#: Sites read per query.
PAGE = 500


@main.command()
@click.option("--account", help="Only this account's sites.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines, one site per line.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV, one site per row.")
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="File to write."
)
def sites(account: str | None, as_json: bool, as_csv: bool, output: Path | None) -> None:
    """List the inventory: every site a job created or adopted and no job deleted, by domain,
    with its goals (and their Plausible ids) and shared links."""
    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    store = make_store(get_settings())
    found = walk(store, account)
    if not (as_json or as_csv) and output is None:
        click.echo(views.sites_table(list(found)))
        return
    write(found, as_csv=as_csv, output=output)


def walk(store: JobStore, account: str | None = None) -> Iterator[Site]:
    """The inventory's sites by domain (then account), read a page at a time."""
    accounts = [account] if account is not None else None
    after: tuple[str, str] | None = None
    while page := store.sites(accounts, limit=PAGE, after=after):
        yield from (view.site_view(found) for found in store.details(page))
        after = (page[-1].domain, page[-1].account)


def write(found: Iterator[Site], *, as_csv: bool, output: Path | None) -> None:
    """Sites as JSON Lines or CSV to ``output`` (stdout), then a line on stderr saying what was
    written where."""
    written = 0
    with click.open_file(str(output) if output else "-", "w", encoding="utf-8") as out:
        writer = _csv(out) if as_csv else None
        for site in found:
            if writer is not None:
                writer.writerow(views.site_csv_row(site))
            else:
                out.write(json.dumps(site.model_dump(mode="json")) + "\n")
            written += 1
    where = output if output is not None else "standard output"
    click.echo(f"wrote {written} site(s) to {where}", err=True)


def _csv(out: IO[str]) -> csv.DictWriter[str]:
    writer = csv.DictWriter(out, fieldnames=views.SITE_CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    return writer

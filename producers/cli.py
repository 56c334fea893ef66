"""The ``provision`` command line."""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from pydantic import SecretStr

from producers import views
from producers.events import parse_event
from producers.submit import publish
from worker.errors import IdempotencyConflictError, InvalidRequestError
from worker.models import ProvisioningJob
from worker.settings import Settings, get_settings
from worker.store import JobStore
from worker.sweeper import Dispatcher

#: How often ``--wait`` polls the status table.
POLL_SECONDS = 0.5


@click.group()
@click.version_option(package_name="plausible-provisioner")
def main() -> None:
    """Provision websites on Plausible Analytics, exactly once."""


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Start a Celery worker; extra options (--concurrency, --pool, -Q) go to Celery."""
    from worker.app import create_app

    settings = get_settings()
    if not settings.broker_url:
        raise click.UsageError("PROVISIONER_BROKER_URL is not set; a worker needs a broker")
    app = create_app(settings)
    app.worker_main(["worker", "--loglevel=INFO", *ctx.args])


@main.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--wait", is_flag=True, help="Follow the batch until every job is done.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def import_command(file: Path, wait: bool, as_json: bool) -> None:
    """Enqueue the signup events of a JSON Lines FILE, one request per line."""
    settings = get_settings()
    with _runtime(settings) as (store, dispatcher):
        summary = import_file(store, dispatcher, file)
        if dispatcher_is_embedded(settings):
            wait = True  # embedded workers live in this process: leave only when done
        jobs = wait_for_batch(store, summary["batch_id"]) if wait else []
    if as_json:
        click.echo(json.dumps({**summary, "jobs": [views.job_view(j) for j in jobs]}, indent=2))
    else:
        for problem in summary["invalid_rows"]:
            click.echo(f"line {problem['line']}: {problem['field'] or 'event'}: {problem['reason']}", err=True)
        click.echo(f"batch={summary['batch_id']} " + _summary_line(summary))
        if jobs:
            click.echo(outcome_table(jobs))
    if summary["invalid"]:
        sys.exit(1)


@main.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print the job as one JSON object.")
def status(ref: str, as_json: bool) -> None:
    """Show a job, by job id or idempotency key."""
    store = JobStore(_engine(get_settings()))
    job = store.find(ref)
    if job is None:
        raise click.ClickException(f"no job with id or idempotency key {ref!r}")
    if as_json:
        click.echo(json.dumps(views.job_view(job), indent=2))
    else:
        click.echo(outcome_table([job]))


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@main.command()
@click.option(
    "--file",
    "files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=[EXAMPLES / "signups.jsonl", EXAMPLES / "cleanup.jsonl"],
    show_default=True,
    help="Signup files, onboarded one after the other.",
)
@click.option("--database", default=None, help="Status table URL (default: a fresh SQLite file).")
def demo(files: tuple[Path, ...], database: str | None) -> None:
    """Onboard signup files against an in-process sandbox, on embedded defaults."""
    if database is None:
        database = f"sqlite:///{tempfile.mkdtemp(prefix='provisioner-demo-')}/status.db"
    from sandbox.api import SandboxAPI
    from sandbox.server import start_in_thread

    api_key = uuid.uuid4().hex
    api = SandboxAPI()
    api.add_key(api_key, api.add_team("Demo"))
    sandbox = start_in_thread(api, configure=lambda api, url: setattr(api, "base_url", url))
    try:
        settings = Settings(
            database_url=database,
            broker_url=None,
            plausible_api_key=SecretStr(api_key),
            plausible_base_url=sandbox.url,
        )
        click.echo(f"sandbox: {sandbox.url}  database: {database}")
        with _runtime(settings) as (store, dispatcher):
            for file in files:
                summary = import_file(store, dispatcher, file)
                jobs = wait_for_batch(store, summary["batch_id"])
                click.echo(f"\n{file.name}: " + _summary_line(summary))
                for problem in summary["invalid_rows"]:
                    click.echo(f"  line {problem['line']}: {problem['field'] or 'event'}: {problem['reason']}")
                click.echo(outcome_table(jobs))
    finally:
        sandbox.stop()


def import_file(store: JobStore, dispatcher: Dispatcher, path: Path) -> dict[str, Any]:
    """Enqueue every valid line; invalid lines are reported with their number and never block
    the valid ones. Lines already enqueued (same id, same request) count as duplicates."""
    batch_id = uuid.uuid4().hex[:16]
    queued: list[str] = []
    duplicate = 0
    invalid: list[dict[str, Any]] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.decode("utf-8", errors="strict").strip() if raw.strip() else ""
            if not line:
                continue
            try:
                event = parse_event(json.loads(line))
            except (json.JSONDecodeError, InvalidRequestError, UnicodeDecodeError) as exc:
                field = getattr(exc, "field", None)
                invalid.append({"line": number, "field": field, "reason": str(exc)})
                continue
            try:
                result = store.enqueue(event.request, key=event.key, batch_id=batch_id)
            except IdempotencyConflictError as exc:
                invalid.append({"line": number, "field": "id", "reason": str(exc)})
                continue
            if result.created:
                queued.append(result.job.id)
            else:
                duplicate += 1
    publish(store, dispatcher, queued)
    return {
        "batch_id": batch_id,
        "queued": len(queued),
        "duplicate": duplicate,
        "invalid": len(invalid),
        "invalid_rows": invalid,
    }


def wait_for_batch(store: JobStore, batch_id: str) -> list[ProvisioningJob]:
    while True:
        jobs = store.batch(batch_id)
        if all(job.status.done for job in jobs):
            return jobs
        time.sleep(POLL_SECONDS)


def outcome_table(jobs: list[ProvisioningJob]) -> str:
    rows = [("STATUS", "OPERATION", "DOMAIN", "GOALS", "SHARED LINKS", "ERROR")]
    for job in jobs:
        view = views.job_view(job)
        goals = ", ".join(f"{g.get('event_name') or g.get('page_path')}#{g['id']}" for g in view["goals"])
        links = ", ".join(link["url"] for link in view["shared_links"])
        error = f"{view['error']['code']}: {view['error']['message'].strip()}" if view["error"] else ""
        rows.append((view["status"], view["operation"], view["domain"], goals, links, error))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _summary_line(summary: dict[str, Any]) -> str:
    return f"queued={summary['queued']} duplicate={summary['duplicate']} invalid={summary['invalid']}"


def dispatcher_is_embedded(settings: Settings) -> bool:
    return not settings.broker_url


def _engine(settings: Settings) -> Any:
    from worker.db import make_engine

    return make_engine(settings.database_url)


@contextlib.contextmanager
def _runtime(settings: Settings) -> Iterator[tuple[JobStore, Dispatcher]]:
    """The store and a dispatcher: Celery when a broker is configured, else embedded workers."""
    store = JobStore(_engine(settings))
    if settings.broker_url:
        from worker.app import CeleryDispatcher, create_app

        yield store, CeleryDispatcher(create_app(settings))
        return
    from worker.embedded import EmbeddedWorkers

    with EmbeddedWorkers(settings, store) as workers:
        yield store, workers


def _register() -> None:
    from sandbox.cli import sandbox_command

    main.add_command(sandbox_command)


_register()

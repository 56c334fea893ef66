"""The ``provision`` command line: thin wrappers over the producer modules."""

from __future__ import annotations

import json
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import SecretStr, ValidationError

from producers import views
from producers.importer import ImportSummary, Invalid, import_file, wait_for_batch
from producers.rows import Format
from producers.status import Kind, lookup
from producers.wiring import make_store, runtime
from worker.errors import ConfigurationError
from worker.models import Priority
from worker.runtime import check_worker_settings, make_accounts, make_reporter
from worker.settings import Settings, get_settings, settings_error
from worker.store import JobStore

F = TypeVar("F", bound=Callable[..., Any])

#: Commands that do not run on the provisioner's settings.
_OWN_SETTINGS = frozenset({"sandbox", "demo"})


class _Commands(click.Group):
    """Configuration mistakes end a command with one line saying what to fix, not a traceback:
    the settings and the accounts file are checked before any command runs."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            if ctx.invoked_subcommand not in _OWN_SETTINGS and not ctx.resilient_parsing:
                make_accounts(get_settings())
            return super().invoke(ctx)
        except ConfigurationError as exc:
            raise click.UsageError(str(exc)) from None
        except ValidationError as exc:
            raise click.UsageError(settings_error(exc)) from None


def priority_option(default: Priority, what: str) -> Callable[[F], F]:
    """``--priority``: the class of the jobs whose event names none."""
    return click.option(
        "--priority",
        type=click.Choice([p.value for p in Priority]),
        default=default.value,
        show_default=True,
        help=f"Class of {what} that name none (their own 'priority' wins).",
    )


@click.group(cls=_Commands)
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
    check_worker_settings(settings)  # fail now on a bad configuration, not in every task
    make_store(settings).engine.dispose()  # and on a database behind this version's schema
    app = create_app(settings)
    app.worker_main(["worker", "--loglevel=INFO", *ctx.args])


@main.group()
def db() -> None:
    """The status database's schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def db_upgrade(revision: str) -> None:
    """Create the status table or migrate it to this version's schema."""
    from worker.db import current_revision, make_engine, upgrade

    engine = make_engine(get_settings().database_url)
    try:
        upgrade(engine, revision)
        with engine.connect() as connection:
            click.echo(f"status database at revision {current_revision(connection)}")
    finally:
        engine.dispose()


@db.command("check")
def db_check() -> None:
    """Exit 0 if the status database is at this version's schema, else say what to run."""
    from worker.db import head_revision

    make_store(get_settings()).engine.dispose()
    click.echo(f"status database at revision {head_revision()} (current)")


@main.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--wait", is_flag=True, help="Follow the batch until every job is done.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default=None,
    help="File format (default: csv for *.csv, else JSON Lines).",
)
@priority_option(Priority.bulk, "rows")
def import_command(
    file: Path, wait: bool, as_json: bool, fmt: Format | None, priority: str
) -> None:
    """Enqueue the signup events of FILE (JSON Lines or CSV); exit 1 if any row is invalid."""
    settings = get_settings()
    accounts = make_accounts(settings).names
    with runtime(settings) as store:
        summary = _run_import(
            store, file, fmt, settings.import_batch_size, as_json, accounts, Priority(priority)
        )
        # Embedded workers live in this process: leave only when the batch is done.
        batch = wait_for_batch(store, summary.batch_id) if wait or not settings.broker_url else None
    if as_json:
        out = summary.as_dict()
        if batch is not None:
            out["batch"] = views.batch_view(batch)
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(f"batch={summary.batch_id} {summary.line()}")
        if batch is not None:
            click.echo(views.batch_table(batch))
    if summary.invalid:
        sys.exit(1)


def _run_import(
    store: JobStore,
    file: Path,
    fmt: Format | None,
    batch_size: int,
    quiet: bool,
    accounts: list[str],
    priority: Priority,
) -> ImportSummary:
    def report(problem: Invalid) -> None:
        if not quiet:
            click.echo(
                f"line {problem.line}: {problem.field or 'event'}: {problem.reason}", err=True
            )

    options: dict[str, Any] = {
        "fmt": fmt,
        "batch_size": batch_size,
        "accounts": accounts,
        "priority": priority,
        "on_invalid": report,
    }
    if not sys.stderr.isatty():
        return import_file(store, file, **options)
    with click.progressbar(length=file.stat().st_size, label="importing", file=sys.stderr) as bar:
        return import_file(store, file, on_progress=bar.update, **options)


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
    store = make_store(settings)
    found = lookup(store, ref, kind, make_reporter(settings, store))
    if found is None:
        raise click.ClickException(f"no job, batch or domain matches {ref!r}")
    click.echo(json.dumps(found.as_json(), indent=2) if as_json else found.as_text())


@main.command()
@click.option("--json", "as_json", is_flag=True, help="JSON: a list of quotas.")
def quota(as_json: bool) -> None:
    """Show each quota: calls used and remaining per window, resets, jobs waiting by class."""
    settings = get_settings()
    report = make_reporter(settings, make_store(settings)).quotas()
    click.echo(json.dumps(report, indent=2) if as_json else views.quota_table(report))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option(
    "--dev", is_flag=True, envvar="PROVISIONER_DEV_MODE", help="Allow running without a token."
)
def serve(host: str, port: int, dev: bool) -> None:
    """Serve the HTTP API (bearer token from PROVISIONER_API_TOKEN; docs at /docs)."""
    import uvicorn

    from producers.web import create_app

    settings = get_settings()
    dev = dev or settings.dev_mode
    if not settings.api_token.get_secret_value() and not dev:
        raise click.UsageError(
            "PROVISIONER_API_TOKEN is not set; refusing to serve without one (--dev to override)"
        )
    if dev and not settings.api_token.get_secret_value():
        click.echo("development mode: no API token, every request is accepted", err=True)
    accounts = make_accounts(settings).names
    with runtime(settings) as store:
        app = create_app(
            store,
            token=settings.api_token,
            dev_mode=dev,
            accounts=accounts,
            reporter=make_reporter(settings, store),
        )
        uvicorn.run(app, host=host, port=port, log_level="info")


@main.command()
@click.option(
    "--redis", "redis_url", envvar="PROVISIONER_STREAM_REDIS_URL", required=True, show_envvar=True
)
@click.option("--stream", default="signups", show_default=True)
@click.option("--group", default="provisioner", show_default=True)
@click.option(
    "--consumer",
    "name",
    default=None,
    help="Consumer name, stable across restarts (default: the host name).",
)
@click.option(
    "--claim-idle-ms",
    default=60_000,
    show_default=True,
    help="Claim entries idle this long (checked at start and every half of this while running).",
)
@click.option("--count", default=100, show_default=True, help="Entries per read (one transaction).")
@priority_option(Priority.interactive, "events")
def consume(
    redis_url: str,
    stream: str,
    group: str,
    name: str | None,
    claim_idle_ms: int,
    count: int,
    priority: str,
) -> None:
    """Enqueue signup events from a Redis Stream through a consumer group."""
    import logging
    import signal

    import redis

    from producers.consumer import StreamConsumer, default_consumer_name

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = get_settings()
    accounts = make_accounts(settings).names
    with runtime(settings) as store:
        consumer = StreamConsumer(
            redis.Redis.from_url(redis_url),
            store,
            accounts=accounts,
            priority=Priority(priority),
            stream=stream,
            group=group,
            consumer=name or default_consumer_name(),
            count=count,
            claim_idle_ms=claim_idle_ms,
        )
        signal.signal(signal.SIGTERM, lambda *_: consumer.stop())
        click.echo(f"consuming {stream} as {consumer.consumer} in group {group}", err=True)
        signal.signal(signal.SIGINT, lambda *_: consumer.stop())
        consumer.run()
    click.echo(
        f"queued={consumer.stats.queued} duplicate={consumer.stats.duplicate} dead={consumer.stats.dead}",
        err=True,
    )


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
        with runtime(settings) as store:
            for file in files:
                summary = import_file(store, file)
                wait_for_batch(store, summary.batch_id)
                click.echo(f"\n{file.name}: " + summary.line())
                for problem in summary.invalid_rows:
                    click.echo(
                        f"  line {problem.line}: {problem.field or 'event'}: {problem.reason}"
                    )
                click.echo(views.jobs_table(store.batch(summary.batch_id), with_ids=False))
    finally:
        sandbox.stop()


def _register() -> None:
    from sandbox.cli import sandbox_command

    main.add_command(sandbox_command)


_register()


if __name__ == "__main__":
    main()

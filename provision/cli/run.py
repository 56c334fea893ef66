"""``provision worker | serve | consume | quota | db | doctor | demo``: the long-running parts,
the schema, and what an operator checks."""

from __future__ import annotations

import json
import sys
import tempfile
import uuid
from importlib import resources
from pathlib import Path

import click
from pydantic import SecretStr

from producers.importer import import_file, wait_for_batch
from provision import views
from provision.cli import EXIT_CONFIGURATION, main, priority_option
from provision.cli.interrupts import raise_if_held
from provision.wiring import make_store, runtime
from worker import metrics
from worker.jobs.states import Priority
from worker.logs import configure as configure_logs
from worker.runtime import check_worker_settings, make_accounts, make_reporter
from worker.settings import Settings, get_settings


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option(
    "-P",
    "--pool",
    type=click.Choice(["threads", "prefork"]),
    default=None,
    help="threads (one process) or prefork (a process per slot) [PROVISIONER_WORKER_POOL].",
)
@click.pass_context
def worker(ctx: click.Context, pool: str | None) -> None:
    """Start a Celery worker and its scheduler; extra options (--concurrency, -Q) go to
    Celery."""
    from worker.app import create_app

    settings = get_settings()
    pool = pool or settings.worker_pool
    if not settings.broker_url:
        raise click.UsageError("PROVISIONER_BROKER_URL is not set; a worker needs a broker")
    check_worker_settings(settings)  # fail now on a bad configuration, not in every task
    make_store(settings).engine.dispose()  # and on a database behind this version's schema
    app = create_app(settings)
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1)  # an unreachable broker: one line, now
    app.conf.worker_pool = pool
    app.worker_main(["worker", "--loglevel=INFO", f"--pool={pool}", *ctx.args])


@main.group()
def db() -> None:
    """The status database's schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def db_upgrade(revision: str) -> None:
    """Create the status table or migrate it to this version's schema."""
    from worker.jobs.db import current_revision, make_engine, upgrade

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
    from worker.jobs.revisions import head_revision

    make_store(get_settings()).engine.dispose()
    click.echo(f"status database at revision {head_revision()} (current)")


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
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    envvar="PROVISIONER_ACCESS_LOG",
    help="Log a line per request (off: a proxy in front logs them).",
)
def serve(host: str, port: int, dev: bool, access_log: bool) -> None:
    """Serve the HTTP API and the dashboard (bearer tokens: the accounts file's [tokens.NAME]
    and PROVISIONER_API_TOKEN; docs at /docs)."""
    import gc
    import socket

    import uvicorn

    from producers.plans.refresh import LiveReader
    from provision.http.app import create_app
    from provision.tokens import load_tokens
    from worker.wakeups import listening, transport_of

    settings = get_settings()
    dev = dev or settings.dev_mode
    accounts = make_accounts(settings).names
    tokens = load_tokens(settings, accounts)
    if tokens.open and not dev:
        raise click.UsageError(
            "no token is configured (PROVISIONER_API_TOKEN, or [tokens.NAME] in the accounts "
            "file); refusing to serve without one (--dev to override)"
        )
    if tokens.open:
        click.echo("development mode: no token, every request is accepted", err=True)
    # Bind first, so a port in use is one line now rather than a traceback from uvicorn.
    listener = socket.create_server((host, port), reuse_port=False)
    configure_logs(settings)
    with runtime(settings) as store:
        reporter = make_reporter(settings, store)
        metrics.register_quota_collector(reporter)
        # The workers' wake-ups end a ?wait poller's pause when its job changed.
        wakeup = listening(settings) if transport_of(settings) is not None else None
        app = create_app(
            store,
            token=settings.api_token,
            dev_mode=dev,
            accounts=accounts,
            reporter=reporter,
            tokens=tokens,
            refresher=LiveReader(settings, store),
            wakeup=wakeup,
        )
        # What was built to start lives as long as the process: keep it out of the collector's
        # way, so a full collection walks only what requests make (shorter pauses, a lower p99).
        gc.freeze()
        # log_config=None: uvicorn's lines go through the provisioner's handler (JSON or text).
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="info", log_config=None, access_log=access_log)
        )
        server.run(sockets=[listener])


@main.command()
@click.option(
    "--redis", "redis_url", help="Redis holding the stream [PROVISIONER_STREAM_REDIS_URL]."
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
    redis_url: str | None,
    stream: str,
    group: str,
    name: str | None,
    claim_idle_ms: int,
    count: int,
    priority: str,
) -> None:
    """Enqueue signup events from a Redis Stream through a consumer group."""
    import signal

    import redis

    from producers.consumer import StreamConsumer, default_consumer_name

    settings = get_settings()
    configure_logs(settings)
    redis_url = redis_url or settings.stream_redis_url
    if not redis_url:
        raise click.UsageError(
            "say which Redis holds the stream: --redis URL or PROVISIONER_STREAM_REDIS_URL"
        )
    accounts = make_accounts(settings).names
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=5)
    client.ping()  # an unreachable Redis: one line, now
    with runtime(settings) as store:
        consumer = StreamConsumer(
            client,
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


@main.command()
def doctor() -> None:
    """Check the configuration, the status database and its schema, the broker, Redis, and
    each account's key against the API (one read-only call each). Exits 2 on any problem."""
    from provision.doctor import run_checks

    problems = 0
    for check in run_checks():
        click.echo(check.line())
        problems += not check.ok
    if problems:
        click.echo(f"{problems} problem(s)", err=True)
        sys.exit(EXIT_CONFIGURATION)


DEMO_FILES = ("signups.jsonl", "cleanup.jsonl")


@main.command()
@click.option(
    "--file",
    "files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Signup files, onboarded one after the other (default: the bundled sample signups).",
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
        with (
            runtime(settings) as store,
            resources.as_file(resources.files("provision") / "demo_data") as bundled,
        ):
            for file in files or tuple(bundled / name for name in DEMO_FILES):
                summary = import_file(store, file)
                # Each poll is a safe point for an interrupt that was held (cli.interrupts).
                wait_for_batch(store, summary.batch_id, on_progress=lambda _: raise_if_held())
                click.echo(f"\n{file.name}: batch={summary.batch_id} " + summary.line())
                for problem in summary.invalid_rows:
                    click.echo(
                        f"  line {problem.line}: {problem.field or 'event'}: {problem.reason}"
                    )
                click.echo(views.jobs_table(store.batch(summary.batch_id)))
    finally:
        sandbox.stop()

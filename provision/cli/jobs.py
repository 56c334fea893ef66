"""``provision import | jobs | retry | cancel | export``: putting work in and acting on it, one
job or everything a filter matches (``provision status`` is ``provision.cli.status``)."""

from __future__ import annotations

import contextlib
import csv
import json
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from provision import views
from provision.cli import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_JOBS_FAILED,
    filter_options,
    job_filter,
    main,
    priority_option,
)
from provision.cli.interrupts import raise_if_held
from provision.wiring import make_store
from worker.errors import ProvisionerError
from worker.jobs import view
from worker.jobs.filters import JobFilter
from worker.jobs.queries import rate_label
from worker.jobs.states import JobStatus, Priority
from worker.settings import get_settings

if TYPE_CHECKING:
    from producers.importer import ImportSummary, Invalid
    from producers.rows import Format
    from worker.jobs.models import ProvisioningJob
    from worker.jobs.queries import BatchSummary
    from worker.jobs.store import JobStore
    from worker.quota.report import Reporter

# Each command imports what it uses when it runs (``provision.cli``), so ``jobs`` does not load
# the importer, the workers or the quota machinery.

#: Jobs read per query when a command walks many of them.
PAGE = 500


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
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Queue again the rows whose job exists and had failed (e.g. after fixing a key).",
)
@priority_option(Priority.bulk, "rows")
def import_command(
    file: Path, wait: bool, as_json: bool, fmt: Format | None, retry_failed: bool, priority: str
) -> None:
    """Enqueue the signup events of FILE (JSON Lines or CSV).

    Exits 3 if any job failed (when waiting), whatever else happened; else 1 if any row was
    invalid."""
    from producers.importer import new_batch_id
    from provision.wiring import runtime
    from worker.accounts import load_accounts
    from worker.runtime import make_reporter

    settings = get_settings()
    accounts = load_accounts(settings).names
    batch_id = new_batch_id()
    click.echo(f"batch {batch_id}", err=True)  # first, so an interrupted import can be followed
    embedded = not settings.broker_url
    with runtime(settings) as store:
        summary = _run_import(
            store,
            file,
            fmt=fmt,
            batch_size=settings.import_batch_size,
            quiet=as_json,
            accounts=accounts,
            priority=Priority(priority),
            batch_id=batch_id,
            retry_failed=retry_failed,
        )
        batch = None
        retried: list[ProvisioningJob] = []
        paused = _Paused()
        if wait or embedded:  # embedded workers live in this process: stay until done
            with until_interrupted(summary.batch_id, embedded), unless_paused() as paused:
                click.echo(f"batch={summary.batch_id} {summary.line()}", err=True)
                batch = follow(store, make_reporter(settings, store), summary.batch_id)
                retried = wait_for(store, summary.retried_ids)
            if paused:
                batch = store.batch_summary(summary.batch_id)
    if as_json:
        out = summary.as_dict()
        if batch is not None:
            out["batch"] = view.batch_view(batch).model_dump(mode="json")
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(f"batch={summary.batch_id} {summary.line()}")
        if batch is not None:
            click.echo(views.batch_table(batch))
        if retried:
            click.echo("retried jobs:\n" + views.jobs_table(retried))
    # Failed jobs win over invalid rows: a script must learn that work it queued did not happen.
    failed = batch is not None and batch.counts.get(JobStatus.failed.value)
    if failed or paused or any(job.status is JobStatus.failed for job in retried):
        sys.exit(EXIT_JOBS_FAILED)
    if summary.invalid:
        sys.exit(EXIT_FAILED)


def _run_import(store: JobStore, file: Path, *, quiet: bool, **options: Any) -> ImportSummary:
    from producers.importer import import_file

    def report(problem: Invalid) -> None:
        if not quiet:
            click.echo(
                f"line {problem.line}: {problem.field or 'event'}: {problem.reason}", err=True
            )

    if not sys.stderr.isatty():
        return import_file(store, file, on_invalid=report, **options)
    with click.progressbar(length=file.stat().st_size, label="reading", file=sys.stderr) as bar:
        return import_file(store, file, on_invalid=report, on_progress=bar.update, **options)


def follow(store: JobStore, reporter: Reporter, batch_id: str) -> BatchSummary:
    """Wait for the batch, showing counts, rate and expected completion as it goes: at once
    when a worker says a job finished (the workers' wake-ups), else every second."""
    from producers.importer import wait_for_batch
    from worker.wakeups import listening

    progress = _Progress(reporter, batch_id, sys.stderr.isatty())
    wakeup = listening(get_settings())

    def show(summary: BatchSummary) -> None:
        raise_if_held()
        progress.show(summary)

    try:
        return wait_for_batch(store, batch_id, poll_seconds=1.0, on_progress=show, wakeup=wakeup)
    finally:
        if wakeup is not None:
            wakeup.stop()
        progress.end()


@contextlib.contextmanager
def until_interrupted(batch_id: str, embedded: bool) -> Iterator[None]:
    """Ctrl-C stops following (exit 130) and says how to go on."""
    try:
        yield
    except KeyboardInterrupt:
        if embedded:
            hint = (
                "its queued jobs run the next time a provision command runs on this database "
                "(or start `provision worker`)"
            )
        else:
            hint = "its jobs go on in the workers"
        click.echo(f"\nstopped following batch {batch_id}: {hint}.", err=True)
        click.echo(f"follow it with: provision status {batch_id}", err=True)
        sys.exit(EXIT_INTERRUPTED)


class _Progress:
    """One status line: rewritten in place on a terminal, else printed every 30 seconds."""

    EVERY = 30.0

    def __init__(self, reporter: Reporter, batch_id: str, tty: bool) -> None:
        self.reporter = reporter
        self.batch_id = batch_id
        self.tty = tty
        self.printed = float("-inf")
        self.width = 0
        self.eta_at = float("-inf")
        self.eta: datetime | None = None

    def show(self, summary: BatchSummary) -> None:
        if summary.total == 0:
            return
        now = time.monotonic()
        if not self.tty and now - self.printed < self.EVERY and not summary.done:
            return
        done = sum(n for s, n in summary.counts.items() if JobStatus(s).done)
        if now - self.eta_at > 10 and not summary.done:  # the estimate reads the whole queue
            self.eta, self.eta_at = self.reporter.batch_eta(self.batch_id), now
        counts = " ".join(f"{s}={n}" for s, n in summary.counts.items() if n)
        parts = [f"{done}/{summary.total} done", counts, rate_label(summary.finished_lately)]
        if self.eta is not None and not summary.done:
            parts.append(f"expected by {_when(self.eta)}")
        line = "  ".join(part for part in parts if part)
        self.printed = now
        if self.tty:
            click.echo("\r" + line.ljust(self.width), nl=False, err=True)
            self.width = len(line)
        else:
            click.echo(line, err=True)

    def end(self) -> None:
        if self.tty and self.width:
            click.echo(err=True)
            self.width = 0


def _when(moment: datetime) -> str:
    seconds = (moment - datetime.now(UTC)).total_seconds()
    if seconds < 90:
        left = f"{max(0, round(seconds))}s"
    elif seconds < 5400:
        left = f"{round(seconds / 60)}m"
    else:
        left = f"{seconds / 3600:.1f}h"
    return f"{moment.isoformat(timespec='seconds')} (in {left})"


@main.command()
@filter_options
@click.option("--limit", default=100, show_default=True, help="At most this many (0: all).")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of jobs.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV, one job per row.")
def jobs(limit: int, as_json: bool, as_csv: bool, **filters: str | None) -> None:
    """List jobs, oldest first, filtered by status, batch, domain, account and error code."""
    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    store = make_store(get_settings())
    found = _walk(store, job_filter(**filters), limit)
    if as_json:
        click.echo(
            json.dumps([view.job_view(job).model_dump(mode="json") for job in found], indent=2)
        )
    elif as_csv:
        _write_csv(found, sys.stdout)
    else:
        listed = list(found)
        click.echo(views.jobs_table(listed) if listed else "no job matches")


def _walk(store: JobStore, where: JobFilter, limit: int = 0) -> Iterator[ProvisioningJob]:
    """The matching jobs, oldest first, read a page at a time (``limit`` 0: all)."""
    after = None
    left = limit or None
    while left is None or left > 0:
        page = store.list_jobs(where, limit=min(PAGE, left or PAGE), after=after)
        yield from page
        if len(page) < PAGE or (left is not None and len(page) >= left):
            return
        if left is not None:
            left -= len(page)
        after = (page[-1].created_at, page[-1].id)


def _write_csv(found: Iterator[ProvisioningJob] | Sequence[ProvisioningJob], out: IO[str]) -> int:
    """The jobs as CSV rows; returns how many."""
    writer = csv.DictWriter(out, fieldnames=views.CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    written = 0
    for job in found:
        writer.writerow(views.csv_row(job))
        written += 1
    return written


@main.command()
@click.argument("batch_id", required=False)
@click.option("--csv", "as_csv", is_flag=True, help="CSV, one row per job (or site).")
@click.option("--jsonl", "as_jsonl", is_flag=True, help="JSON Lines, one per line (default).")
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="File to write."
)
def export(batch_id: str | None, as_csv: bool, as_jsonl: bool, output: Path | None) -> None:
    """Write every job of BATCH_ID with its outcome (the site, goal ids, shared-link URLs), by
    domain; without BATCH_ID, the inventory (every site we own, with its goals and links), as
    ``provision sites`` does. Says on stderr what it wrote where."""
    if as_csv and as_jsonl:
        raise click.UsageError("choose one of --csv and --jsonl")
    from provision.cli import sites

    store = make_store(get_settings())
    if batch_id is None:
        sites.write(sites.walk(store), as_csv=as_csv, output=output)
        return
    if store.batch_summary(batch_id, max_failures=0).total == 0:
        raise click.ClickException(f"no batch {batch_id!r}")
    found = _by_domain(store, JobFilter(batch_id=batch_id))
    written = 0
    with click.open_file(str(output) if output else "-", "w", encoding="utf-8") as out:
        if as_csv:
            written = _write_csv(found, out)
        else:
            for job in found:
                out.write(json.dumps(view.job_view(job).model_dump(mode="json")) + "\n")
                written += 1
    where = output if output is not None else "standard output"
    click.echo(f"wrote {written} job(s) of batch {batch_id} to {where}", err=True)


def _by_domain(store: JobStore, where: JobFilter) -> Iterator[ProvisioningJob]:
    """The matching jobs by domain (then id), read a page at a time."""
    after: tuple[str, str] | None = None
    while page := store.jobs_by_domain(where, limit=PAGE, after=after):
        yield from page
        after = (page[-1].domain, page[-1].id)


@main.command()
@click.argument("ref", required=False)
@filter_options
@click.option("--wait", is_flag=True, help="Follow the retried jobs until they are done.")
def retry(ref: str | None, wait: bool, **filters: str | None) -> None:
    """Queue failed jobs again from their checkpoints: REF (a job id or idempotency key) or
    everything the filters match, e.g. --batch B --code invalid_api_key.

    With a broker, the workers pick them up; in embedded mode they run here. Exits 3 if any
    fails again (when they run here or with --wait)."""
    from provision.wiring import runtime

    settings = get_settings()
    where = _target(ref, filters, "retry")
    here = not settings.broker_url
    make_store(settings).engine.dispose()  # a database that is not there is an error, not made
    with runtime(settings) if here else contextlib.nullcontext(make_store(settings)) as store:
        ids = _act(store, ref, where, "retry")
        click.echo(f"retried {len(ids)} job(s)")
        if ids and (wait or here):
            with unless_paused() as paused:
                click.echo(views.jobs_table(wait_for(store, ids)))
            found = [job for job in (store.get(i) for i in ids) if job is not None]
            if paused or any(job.status is JobStatus.failed for job in found):
                sys.exit(EXIT_JOBS_FAILED)


@main.command()
@click.argument("ref", required=False)
@filter_options
def cancel(ref: str | None, **filters: str | None) -> None:
    """Withdraw queued or waiting jobs: REF (a job id or idempotency key) or everything the
    filters match."""
    where = _target(ref, filters, "cancel")
    store = make_store(get_settings())
    click.echo(f"cancelled {len(_act(store, ref, where, 'cancel'))} job(s)")


def _target(ref: str | None, filters: dict[str, str | None], action: str) -> JobFilter:
    """The filter of a retry or cancel, checked before anything starts: one job or a filter."""
    where = job_filter(**filters)
    if ref is not None and not where.empty:
        raise click.UsageError("give either a job (REF) or filters, not both")
    if ref is None and where.empty:
        raise click.UsageError(
            f"say which jobs to {action}: a job id or idempotency key, or filters such as "
            "--batch B --code domain_taken"
        )
    return where


def _act(store: JobStore, ref: str | None, where: JobFilter, action: str) -> list[str]:
    from provision import actions
    from worker.jobs import audit

    try:
        if ref is not None:
            return [actions.act_on_job(store, action, ref, actor=audit.process_actor("cli")).id]
    except ProvisionerError as exc:
        raise click.ClickException(str(exc)) from None
    changed = actions.act_on_matching(store, action, where, actor=audit.process_actor("cli"))
    for account in changed.resumed:
        click.echo(f"resumed account {account}: its waiting jobs go on")
    return changed.ids


def wait_for(store: JobStore, ids: Sequence[str]) -> list[ProvisioningJob]:
    """The jobs ``ids``, once every one is done (AccountsPaused if the rest wait for a paused
    account)."""
    from producers.importer import AccountsPaused
    from worker.pauses import blocking

    while True:
        found = [job for job in (store.get(job_id) for job_id in ids) if job is not None]
        if all(job.status.done for job in found):
            return found
        held = blocking(store, JobFilter(), ids)
        if held:
            raise AccountsPaused(held)
        raise_if_held()
        time.sleep(0.5)


class _Paused:
    def __init__(self) -> None:
        self.seen = False

    def __bool__(self) -> bool:
        return self.seen


@contextlib.contextmanager
def unless_paused() -> Iterator[_Paused]:
    """Stop waiting when every job left waits for a paused account, saying what to fix."""
    from producers.importer import AccountsPaused

    paused = _Paused()
    try:
        yield paused
    except AccountsPaused as exc:
        paused.seen = True
        for pause in exc.pauses:
            click.echo(
                f"account {pause.account} is paused ({pause.code}): {pause.message.strip()}",
                err=True,
            )
            click.echo(f"its jobs wait: {pause.how_to_resume}", err=True)

"""``provision plan`` and ``provision apply``: a desired-state file compared with the inventory,
priced in API calls, and applied as one batch named after its set (``producers.plans``).

The status table, the planner and the quota are imported inside the commands, so loading the
command line stays cheap.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from provision.cli import EXIT_FAILED, EXIT_JOBS_FAILED, main

if TYPE_CHECKING:
    from producers.plans.refresh import Refreshed
    from producers.plans.saved import Applied, Cost, Saved
    from worker.jobs.store import JobStore
    from worker.settings import Settings

EXIT_CHANGES = 2


def _targets(values: Sequence[str]) -> list[str]:
    from producers.events import parse_domain
    from worker.errors import InvalidRequestError

    try:
        return [parse_domain(value) for value in values]
    except InvalidRequestError as exc:
        raise click.BadParameter(exc.message, param_hint="--target") from None


def _make_plan(
    settings: Settings,
    store: JobStore,
    file: Path,
    targets: Sequence[str],
    refresh: bool = False,
) -> tuple[Saved, Cost]:
    """FILE planned against the inventory (with ``refresh``, less what is gone live), and its
    cost; a bad file ends the command (exit 1) with one line per problem."""
    from producers.plans import saved as plans
    from producers.plans.desired import DesiredStateError, load
    from worker.runtime import make_accounts, make_reporter

    try:
        desired = load(file, accounts=make_accounts(settings).names)
    except DesiredStateError as exc:
        for problem in exc.problems:
            click.echo(f"{file}: {problem}", err=True)
        click.echo(f"{file}: refused, nothing planned ({len(exc.problems)} problem(s))", err=True)
        sys.exit(EXIT_FAILED)

    def live(views: Any, domains: list[str]) -> Refreshed:
        return _refresh(settings, store, views, domains, desired.account)

    return plans.make(
        store,
        desired,
        targets,
        reporter=make_reporter(settings, store),
        live=live if refresh else None,
    )


def _refresh(
    settings: Settings, store: JobStore, views: Any, domains: Sequence[str], account: str
) -> Refreshed:
    """The live state of ``domains``, read through the account's quota at bulk priority."""
    from producers.plans.refresh import LiveReader

    held = sum(1 for view in views if view.site.domain in set(domains))
    click.echo(f"refreshing {held} site(s): about {3 * held} calls at bulk priority", err=True)
    reader = LiveReader(
        settings, store, on_wait=lambda why: click.echo(f"refresh waits: {why}", err=True)
    )
    return reader.of(account)(views, list(domains))


def _show(saved: Saved, cost: Cost) -> None:
    plan = saved.plan
    if cost.refreshed is not None:
        found = f"{len(cost.drift)} difference(s)" if cost.drift else "no drift"
        click.echo(f"Refreshed ({cost.refreshed} calls): {found} from the inventory")
        for line in cost.drift:
            click.echo(f"  drift: {line}")
    click.echo(f"Set {plan.set}, account {plan.account}:")
    for line in plan.lines():
        click.echo(f"  {line}")
    if plan.changes:
        click.echo()
    click.echo(plan.summary())
    click.echo(cost.line())


@main.command("plan")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target", "targets", multiple=True, help="Only this domain (repeatable).")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Save the plan for apply."
)
@click.option(
    "--detailed-exitcode",
    is_flag=True,
    help="Exit 0 with no changes, 2 with changes, 1 on any error.",
)
@click.option("--json", "as_json", is_flag=True, help="The plan as JSON.")
@click.option(
    "--refresh",
    is_flag=True,
    help="First read the sites live (about 3 calls a site, at bulk priority) and report drift.",
)
def plan_command(
    file: Path,
    targets: tuple[str, ...],
    out: Path | None,
    detailed_exitcode: bool,
    as_json: bool,
    refresh: bool,
) -> None:
    """Compare the desired-state FILE (TOML, or JSON) with the inventory, without an API call
    unless --refresh: what apply would change, and what it costs in API calls at the account's
    quota."""
    from worker.settings import get_settings

    settings: Settings | None = None
    try:
        settings = get_settings()
        from worker.runtime import make_store

        store = make_store(settings, migrate=not settings.broker_url)
        saved, cost = _make_plan(settings, store, file, _targets(targets), refresh)
    except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:
        _fail(exc, settings, detailed_exitcode)
    if out is not None:
        out.write_text(json.dumps(saved.as_json(cost), indent=2) + "\n", encoding="utf-8")
    if as_json:
        click.echo(json.dumps(saved.as_json(cost), indent=2))
    else:
        _show(saved, cost)
        if out is not None and saved.plan.has_changes:
            click.echo(f"\nSaved the plan to {out}; apply it with: provision apply {out}")
    if detailed_exitcode and saved.plan.has_changes:
        sys.exit(EXIT_CHANGES)


def _fail(exc: Exception, settings: Settings | None, detailed: bool) -> NoReturn:
    from provision.cli import _settings_or_none
    from worker.errors import ProvisionerError
    from worker.problems import explain

    message = explain(exc, settings or _settings_or_none())
    if message is None and isinstance(exc, ProvisionerError):
        message = str(exc)
    if message is None:
        raise exc
    if detailed:
        click.echo(f"Error: {message}", err=True)
        sys.exit(EXIT_FAILED)
    raise click.UsageError(message)


@main.command("apply")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--target", "targets", multiple=True, help="Only this domain (with a FILE).")
@click.option("--auto-approve", is_flag=True, help="Apply a FILE's plan without asking.")
@click.option(
    "--allow-destroy",
    is_flag=True,
    help="Let the plan delete sites (their data is lost; the domain is blocked up to 48 h).",
)
@click.option("--wait", is_flag=True, help="Follow the batch until every job is done.")
@click.option("--refresh", is_flag=True, help="With a FILE: read the sites live first.")
def apply_command(
    source: Path,
    targets: tuple[str, ...],
    auto_approve: bool,
    allow_destroy: bool,
    wait: bool,
    refresh: bool,
) -> None:
    """Apply a plan saved by ``provision plan --out`` (refused if the inventory changed since),
    or plan a desired-state FILE and apply that once approved. The jobs are one batch named
    after the set; applying the same plan again makes no second job.

    Exits 3 if any job failed (when waiting), 1 if the plan is refused."""
    from producers.plans import saved as plans
    from provision.wiring import runtime
    from worker.settings import get_settings

    settings = get_settings()
    with runtime(settings) as store:
        if _is_saved_plan(source):
            if targets or refresh:
                raise click.UsageError(
                    "--target and --refresh apply to a FILE; a saved plan was made with its own"
                )
            saved = plans.read(source)
            from worker.runtime import make_reporter

            reporter = make_reporter(settings, store)
            cost = plans.cost(reporter, saved.plan.account, saved.plan.calls, saved.batch.id)
            click.echo(saved.plan.summary())
            click.echo(cost.line())
        else:
            saved, cost = _make_plan(settings, store, source, _targets(targets), refresh)
            _show(saved, cost)
            if saved.plan.has_changes and not auto_approve:
                click.echo()
                answer = click.prompt(
                    "Apply these changes? Only 'yes' will be accepted", default=""
                )
                if answer.strip() != "yes":
                    raise click.ClickException("apply cancelled; nothing was queued")
        if not saved.plan.has_changes:
            click.echo("Nothing to apply.")
            return
        try:
            applied = plans.apply(store, saved, allow_destroy=allow_destroy)
        except plans.PlanRefused as exc:
            where = f"{source}: " if exc.code == "stale_plan" else ""
            raise click.ClickException(f"{where}{exc}") from None
        _follow(settings, store, saved, applied, wait, allow_destroy)


def _is_saved_plan(path: Path) -> bool:
    """A plan written by ``--out`` (a JSON object holding its identity), not a desired state."""
    if path.suffix != ".json":
        return False
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "identity" in data


def _follow(
    settings: Settings,
    store: JobStore,
    saved: Saved,
    applied: Applied,
    wait: bool,
    allow_destroy: bool,
) -> None:
    from producers.plans import saved as plans
    from provision import views
    from provision.cli.jobs import follow, unless_paused, until_interrupted, wait_for
    from worker.jobs.states import JobStatus
    from worker.runtime import make_reporter

    batch_id = applied.batch_id
    _report(saved.plan.set, applied)
    embedded = not settings.broker_url
    summary = None
    with until_interrupted(batch_id, embedded), unless_paused() as paused:
        if applied.pending:
            # A replaced goal or guest is made again only once its delete is done.
            click.echo("waiting for the deletes of what is replaced", err=True)
            wait_for(store, applied.pending)
            applied = plans.apply(store, saved, allow_destroy=allow_destroy)
            _report(saved.plan.set, applied)
        if applied.failed:
            raise click.ClickException(
                "a delete of what is replaced did not succeed; not making it again "
                f"(see provision status {batch_id})"
            )
        if wait or embedded:
            summary = follow(store, make_reporter(settings, store), batch_id)
    if paused:
        summary = store.batch_summary(batch_id)
    if summary is not None:
        click.echo(views.batch_table(summary))
        if summary.counts.get(JobStatus.failed.value) or paused:
            sys.exit(EXIT_JOBS_FAILED)
    else:
        click.echo(f"follow it with: provision status {batch_id}")


def _report(set_name: str, applied: Applied) -> None:
    line = f"batch {applied.batch_id} (set {set_name}): {applied.created} job(s) queued"
    if applied.duplicate:
        line += f", {applied.duplicate} already in the batch (no job is made twice)"
    click.echo(line, err=True)

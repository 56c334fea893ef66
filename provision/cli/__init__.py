"""The ``provision`` command line: settings checked once, then each command builds what it
needs (the status table, workers, services). Commands live in ``jobs`` (import, status, jobs, retry, cancel, export),
``plan`` (plan, apply) and ``run`` (worker, serve, consume, quota, db, doctor, demo); the sandbox brings its own.

Exit codes: 0 done; 1 the command could not do what was asked (invalid rows, no such job, a
job in the wrong status); 2 usage or configuration (one line saying what to fix: a bad setting,
an unreachable database, broker or Redis, a port in use, a schema not upgraded); 3 jobs failed
(when the command waited for them); 130 interrupted. ``--debug`` or ``PROVISIONER_DEBUG=1``
shows the traceback instead of the one line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from provision.cli.interrupts import Interruptible
from worker.errors import InvalidRequestError
from worker.jobs.filters import JobFilter
from worker.jobs.states import JobStatus, Priority
from worker.logs import configure as configure_logs
from worker.problems import explain
from worker.runtime import make_accounts
from worker.settings import Settings, get_settings

F = TypeVar("F", bound=Callable[..., Any])

EXIT_FAILED = 1
EXIT_CONFIGURATION = 2
EXIT_JOBS_FAILED = 3
EXIT_INTERRUPTED = 130

#: Commands that do not run on the provisioner's settings.
_OWN_SETTINGS = frozenset({"sandbox", "demo", "doctor", "token"})


class _Commands(click.Group):
    """Configuration mistakes end a command with one line saying what to fix, not a traceback:
    the settings and the accounts file are checked before any command runs. SIGINT and SIGTERM
    end it with exit 130 (``provision.cli.interrupts``)."""

    def invoke(self, ctx: click.Context) -> Any:
        debug = bool(ctx.params.get("debug")) or _env_flag("PROVISIONER_DEBUG")
        settings: Settings | None = None
        try:
            with Interruptible():
                if ctx.invoked_subcommand not in _OWN_SETTINGS and not ctx.resilient_parsing:
                    settings = get_settings()
                    make_accounts(settings)
                    # Warnings and errors only; the long-running commands log more.
                    configure_logs(settings, level=logging.WARNING)
                return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo(err=True)  # ends the line the terminal's ^C is on
            click.echo("Aborted!", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            message = explain(exc, settings or _settings_or_none())
            if message is None or debug:
                raise
            raise click.UsageError(message) from None


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _settings_or_none() -> Settings | None:
    try:
        return get_settings()
    except Exception:
        return None


def priority_option(default: Priority, what: str) -> Callable[[F], F]:
    """``--priority``: the class of the jobs whose event names none."""
    return click.option(
        "--priority",
        type=click.Choice([p.value for p in Priority]),
        default=default.value,
        show_default=True,
        help=f"Class of {what} that name none (their own 'priority' wins).",
    )


def filter_options(f: F) -> F:
    """``--status``, ``--batch``, ``--domain``, ``--account``, ``--code``: which jobs."""
    options = [
        click.option(
            "--status", type=click.Choice([s.value for s in JobStatus]), help="Job status."
        ),
        click.option("--batch", "batch_id", help="Batch id (from provision import)."),
        click.option("--domain", help="Domain, in any spelling Plausible accepts."),
        click.option("--account", help="Account name."),
        click.option("--code", "error_code", help="Last error code, e.g. domain_taken."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def job_filter(
    status: str | None,
    batch_id: str | None,
    domain: str | None,
    account: str | None,
    error_code: str | None,
) -> JobFilter:
    """The filter the options name (``provision.filters``); a bad value is a usage error naming
    its option."""
    from provision.filters import parse_filter

    values = {
        "status": status,
        "batch_id": batch_id,
        "domain": domain,
        "account": account,
        "code": error_code,
    }
    try:
        return parse_filter(values)
    except InvalidRequestError as exc:
        option = {"batch_id": "--batch"}.get(exc.field or "", f"--{exc.field}")
        raise click.BadParameter(exc.message, param_hint=option) from None


@click.group(cls=_Commands)
@click.version_option(package_name="plausible-provisioner")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
def main(debug: bool) -> None:
    """Provision websites on Plausible Analytics, exactly once."""


def _register() -> None:
    from provision.cli import jobs, plan, run, sites, trust
    from sandbox.cli import sandbox_command

    del jobs, plan, run, sites, trust  # importing them adds their commands to ``main``
    main.add_command(sandbox_command)


_register()

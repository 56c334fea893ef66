"""The ``provision`` command line: settings checked once, then each command builds what it
needs (the status table, workers, services). Commands live in ``jobs`` (import, jobs, retry,
cancel, export), ``status``, ``plan`` (plan, apply) and ``run`` (worker, serve, consume, quota,
db, doctor, demo), with a few of their own; the sandbox brings its own.

A command's module is imported only when that command runs (``_register`` names each one with
its one-line help), so ``provision --help`` imports click and nothing heavy, and a command pays
only for what it uses (``tests/unit/test_cli_imports.py`` keeps it so).

Exit codes: 0 done; 1 the command could not do what was asked (invalid rows, no such job, a
job in the wrong status); 2 usage or configuration (one line saying what to fix: a bad setting,
an unreachable database, broker or Redis, a port in use, a schema not upgraded); 3 jobs failed
(when the command waited for them); 130 interrupted. ``--debug`` or ``PROVISIONER_DEBUG=1``
shows the traceback instead of the one line.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from provision.cli.interrupts import Interruptible

if TYPE_CHECKING:
    from worker.jobs.filters import JobFilter
    from worker.jobs.states import Priority
    from worker.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

EXIT_FAILED = 1
EXIT_CONFIGURATION = 2
EXIT_JOBS_FAILED = 3
EXIT_INTERRUPTED = 130

_SETTINGS = "provision.settings"
#: Commands that do not run on the provisioner's settings.
_OWN_SETTINGS = frozenset({"sandbox", "demo", "doctor", "token"})


class _Commands(click.Group):
    """Configuration mistakes end a command with one line saying what to fix, not a traceback:
    the settings and the accounts file are checked before any command runs. SIGINT and SIGTERM
    end it with exit 130 (``provision.cli.interrupts``).

    Commands are named with ``lazy`` and imported when they run; ``--help`` lists them with
    their registered line instead of importing them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: name -> ("module:attribute", one-line help)
        self.lazy_commands: dict[str, tuple[str, str]] = {}

    def lazy(self, name: str, where: str, short_help: str) -> None:
        """Name the command ``name``, the click command at ``where`` ("module:attribute")."""
        self.lazy_commands[name] = (where, short_help)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy_commands:
            module, _, attribute = self.lazy_commands[cmd_name][0].partition(":")
            command = getattr(importlib.import_module(module), attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{module}:{attribute} is not a click command")
            self.commands[cmd_name] = command
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self.lazy_commands:
                rows.append((name, self.lazy_commands[name][1]))
            elif not self.commands[name].hidden:
                rows.append((name, self.commands[name].get_short_help_str()))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        # The settings are checked once the command is known (before, click has not named it).
        name, command, rest = super().resolve_command(ctx, args)
        if name not in _OWN_SETTINGS and not ctx.resilient_parsing:
            ctx.meta[_SETTINGS] = _check_settings()
        return name, command, rest

    def invoke(self, ctx: click.Context) -> Any:
        debug = bool(ctx.params.get("debug")) or _env_flag("PROVISIONER_DEBUG")
        try:
            with Interruptible():
                return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo(err=True)  # ends the line the terminal's ^C is on
            click.echo("Aborted!", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            from worker.problems import explain

            message = explain(exc, ctx.meta.get(_SETTINGS) or _settings_or_none())
            if message is None or debug:
                raise
            raise click.UsageError(message) from None


def _check_settings() -> Settings:
    """The settings and the accounts file, read once; warnings and errors are logged (the
    long-running commands log more)."""
    import logging

    from worker.accounts import load_accounts
    from worker.logs import configure as configure_logs
    from worker.settings import get_settings

    settings = get_settings()
    load_accounts(settings)
    configure_logs(settings, level=logging.WARNING)
    return settings


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _settings_or_none() -> Settings | None:
    from worker.settings import get_settings

    try:
        return get_settings()
    except Exception:
        return None


def priority_option(default: Priority, what: str) -> Callable[[F], F]:
    """``--priority``: the class of the jobs whose event names none."""
    from worker.jobs.states import Priority

    return click.option(
        "--priority",
        type=click.Choice([p.value for p in Priority]),
        default=default.value,
        show_default=True,
        help=f"Class of {what} that name none (their own 'priority' wins).",
    )


def filter_options(f: F) -> F:
    """``--status``, ``--batch``, ``--domain``, ``--account``, ``--code``: which jobs."""
    from worker.jobs.states import JobStatus

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
    from worker.errors import InvalidRequestError

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
    """Every command: its name, the click command ("module:attribute") and the line that lists
    it in ``provision --help``. The module is imported only when the command runs."""
    # fmt: off
    for name, where, short_help in [
        ("apply", "provision.cli.plan:apply_command", "Make Plausible match a plan or a desired-state file."),
        ("audit", "provision.cli.trust:audit", "Show who retried, cancelled or resumed what, and sign-ins."),
        ("cancel", "provision.cli.jobs:cancel", "Withdraw queued or waiting jobs."),
        ("consume", "provision.cli.run:consume", "Enqueue signup events from a Redis Stream."),
        ("db", "provision.cli.run:db", "The status database's schema (Alembic migrations)."),
        ("demo", "provision.cli.run:demo", "Onboard signup files against an in-process sandbox."),
        ("doctor", "provision.cli.run:doctor", "Check the settings, the database, the broker and the keys."),
        ("export", "provision.cli.jobs:export", "Write a batch's jobs with their outcome, or the inventory."),
        ("import", "provision.cli.jobs:import_command", "Enqueue the signup events of FILE (JSON Lines or CSV)."),
        ("jobs", "provision.cli.jobs:jobs", "List jobs by status, batch, domain, account, error code."),
        ("plan", "provision.cli.plan:plan_command", "Compare a desired-state file with what we own, priced in quota."),
        ("quota", "provision.cli.run:quota", "Show each quota: calls used and left, jobs waiting."),
        ("retry", "provision.cli.jobs:retry", "Queue failed jobs again from their checkpoints."),
        ("sandbox", "sandbox.cli:sandbox_command", "Run a local, in-memory Plausible Sites API."),
        ("serve", "provision.cli.run:serve", "Serve the HTTP API and the dashboard."),
        ("sites", "provision.cli.sites:sites", "List the inventory: every site we own, goals and links."),
        ("status", "provision.cli.status:status", "Show a job, a batch, or the jobs of a domain."),
        ("token", "provision.cli.trust:token", "Tokens of the HTTP service and the dashboard."),
        ("worker", "provision.cli.run:worker", "Start a Celery worker and its scheduler."),
        ("workers", "provision.cli.workers:workers", "List the live worker processes and their jobs."),
    ]:
        main.lazy(name, where, short_help)
    # fmt: on


_register()

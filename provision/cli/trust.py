"""``provision token hash`` (an entry of the accounts file's ``[tokens.NAME]``) and ``provision
audit`` (who did what)."""

from __future__ import annotations

import json
import secrets
import sys

import click

from provision.cli import main
from provision.wiring import make_store
from worker.settings import get_settings


@main.group()
def token() -> None:
    """Tokens of the HTTP service and the dashboard (see [tokens.NAME] in the accounts file)."""


@token.command("hash")
@click.option("--new", "make_new", is_flag=True, help="Make a new random token and print it too.")
def token_hash_command(make_new: bool) -> None:
    """Print the hash to put in a token's hash_env variable. Reads the token from standard
    input (never from an argument, which would sit in the shell's history), or makes a new one
    with --new."""
    from provision.tokens import token_hash

    if make_new:
        value = secrets.token_urlsafe(32)
        click.echo(f"token: {value}   (give it to its user; it is shown once)")
    else:
        value = sys.stdin.readline().strip() if not sys.stdin.isatty() else ""
        if not value:
            value = click.prompt("token", hide_input=True).strip()
        if len(value) < 16:
            raise click.UsageError("a token must be at least 16 characters; --new makes one")
    click.echo(token_hash(value))


@main.command()
@click.option("--limit", default=50, show_default=True, help="How many events, newest first.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines, one event per line.")
def audit(limit: int, as_json: bool) -> None:
    """Show the audit trail: who retried, cancelled or resumed what (a job, or a filter and how
    many jobs it changed), and the dashboard's sign-ins, newest first."""
    from provision.views import audit_table
    from worker.jobs import audit as trail

    events = trail.events(make_store(get_settings()).engine, limit=limit)
    if as_json:
        for event in events:
            click.echo(json.dumps(event.model_dump(mode="json")))
    else:
        click.echo(audit_table(events))

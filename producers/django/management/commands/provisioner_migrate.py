"""``python manage.py provisioner_migrate``: create or upgrade the status table."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from producers.django import schema
from producers.django.conf import options
from worker.errors import ConfigurationError


class Command(BaseCommand):
    help = (
        "Create or upgrade the provisioner's status table (provisioning_jobs) in Django's "
        "database, to this version's schema (the Alembic migrations of `provision db upgrade`)."
    )
    requires_system_checks = ()  # its own check would stop it otherwise

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--database",
            default=None,
            help="The alias of DATABASES to migrate (default: PLAUSIBLE_PROVISIONER['DATABASE'], "
            "else 'default').",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        alias = opts["database"] or options().database
        try:
            before = schema.revision(alias)
            after = schema.migrate(alias)
        except ConfigurationError as exc:
            raise CommandError(str(exc)) from exc
        if before == after:
            self.stdout.write(f"The status table in DATABASES[{alias!r}] is at revision {after}.")
        else:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Upgraded the status table in DATABASES[{alias!r}] from revision "
                    f"{before or '(none)'} to {after}."
                )
            )

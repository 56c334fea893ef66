"""System checks: the status table exists in Django's database, at this version's schema."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from sqlalchemy.exc import SQLAlchemyError

from producers.django import schema
from producers.django.conf import SETTING, options
from worker.jobs.revisions import head_revision

MIGRATE_HINT = "Run `python manage.py provisioner_migrate` (or `python manage.py migrate`)."


def register() -> None:
    checks.register(check_status_table, checks.Tags.database)


def check_status_table(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **_: Any,
) -> list[checks.CheckMessage]:
    """E001: no status table; E002: behind this version; E003: unusable settings; W001: the
    database could not be reached to check.

    Runs with every command that runs system checks (``runserver``, ``check``, ``shell``...),
    on the status table's database. Commands that name the databases they check (``migrate``,
    the test runner, ``check --database``) skip it while ``MIGRATE`` is on: ``migrate`` upgrades
    the table itself, and must not be stopped by its being behind.
    """
    try:
        settings = options()
        alias = settings.database
        if databases is not None and (settings.migrate or alias not in databases):
            return []
        current = schema.revision(alias)
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), hint=f"Fix {SETTING} or DATABASES.", id=_id("E003"))]
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        return [
            checks.Warning(
                f"Could not check the provisioner's status table in DATABASES[{alias!r}]: {reason}",
                id=_id("W001"),
            )
        ]
    head = head_revision()
    if current is None:
        return [
            checks.Error(
                f"The provisioner's status table (provisioning_jobs) is missing from "
                f"DATABASES[{alias!r}]: provisioner.enqueue() cannot write jobs there.",
                hint=MIGRATE_HINT,
                id=_id("E001"),
            )
        ]
    if current != head:
        return [
            checks.Error(
                f"The provisioner's status table in DATABASES[{alias!r}] is at schema revision "
                f"{current}; this version of plausible-provisioner needs {head}.",
                hint=MIGRATE_HINT,
                id=_id("E002"),
            )
        ]
    return []


def _id(code: str) -> str:
    return f"plausible_provisioner.{code}"

"""The provisioner's Django settings, and the SQLAlchemy URL of a Django database."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import StaticPool

from worker.jobs.db import make_engine

SETTING = "PLAUSIBLE_PROVISIONER"
_KNOWN = {"DATABASE", "ACCOUNTS_FILE", "MIGRATE"}
#: libpq parameters of a PostgreSQL database's OPTIONS that the status table's engine keeps.
_LIBPQ_OPTIONS = {
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslpassword",
    "options",
    "application_name",
    "connect_timeout",
    "target_session_attrs",
    "passfile",
    "service",
}


@dataclass(frozen=True)
class Options:
    #: The alias of ``DATABASES`` whose database holds the status table.
    database: str = "default"
    accounts_file: Path | None = None
    #: ``manage.py migrate`` upgrades the status table too.
    migrate: bool = True


def options() -> Options:
    """``settings.PLAUSIBLE_PROVISIONER``, checked; ImproperlyConfigured names what is wrong."""
    raw: Any = getattr(settings, SETTING, {})
    if not isinstance(raw, dict):
        raise ImproperlyConfigured(f"{SETTING} must be a dict, not {type(raw).__name__}")
    unknown = sorted(set(raw) - _KNOWN)
    if unknown:
        raise ImproperlyConfigured(
            f"{SETTING}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_KNOWN))}"
        )
    database = raw.get("DATABASE", "default")
    if database not in settings.DATABASES:
        raise ImproperlyConfigured(f"{SETTING}['DATABASE'] = {database!r} is not in DATABASES")
    accounts = raw.get("ACCOUNTS_FILE")
    return Options(
        database=database,
        accounts_file=Path(accounts) if accounts is not None else None,
        migrate=bool(raw.get("MIGRATE", True)),
    )


def database_url(alias: str) -> str:
    """The SQLAlchemy URL of ``DATABASES[alias]`` as Django uses it now (the test database,
    during tests). SQLite and PostgreSQL only; a private in-memory SQLite database cannot be
    shared with another connection, so it is refused."""
    connection = connections[alias]
    config = connection.settings_dict
    name = str(config.get("NAME") or "")
    if connection.vendor == "sqlite":
        if name in ("", ":memory:") or ("mode=memory" in name and "cache=shared" not in name):
            raise ImproperlyConfigured(
                f"DATABASES[{alias!r}] is a private in-memory SQLite database, which the "
                "provisioner's workers cannot share: use a file"
            )
        if name.startswith("file:"):  # a URI: Django's in-memory test database is one
            return f"sqlite:///{name}{'&' if '?' in name else '?'}uri=true"
        return f"sqlite:///{name}"
    if connection.vendor == "postgresql":
        driver = getattr(connection, "Database", None)
        module = getattr(driver, "__name__", "psycopg")
        query = {
            key: str(value)
            for key, value in (config.get("OPTIONS") or {}).items()
            if key in _LIBPQ_OPTIONS
        }
        return URL.create(
            "postgresql+psycopg2" if module.startswith("psycopg2") else "postgresql+psycopg",
            username=config.get("USER") or None,
            password=config.get("PASSWORD") or None,
            host=config.get("HOST") or None,
            port=int(config["PORT"]) if config.get("PORT") else None,
            database=name or None,
            query=query,
        ).render_as_string(hide_password=False)
    raise ImproperlyConfigured(
        f"DATABASES[{alias!r}] is {connection.vendor}: the status table needs SQLite or PostgreSQL"
    )


def engine_for(alias: str) -> Engine:
    """An engine on the status table in ``DATABASES[alias]``. Django's in-memory SQLite test
    database (shared cache) gets one connection, kept until the engine is disposed."""
    url = database_url(alias)
    if "mode=memory" in url:
        return create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    return make_engine(url)

"""Failures a person can act on, as one line naming what to fix: bad settings, unreachable
services, a port in use, a schema not upgraded. Anything else is a bug and keeps its traceback."""

from __future__ import annotations

import errno

from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from worker.errors import ConfigurationError
from worker.settings import Settings, settings_error


def explain(exc: BaseException, settings: Settings | None) -> str | None:
    """One line for ``exc`` if a person can fix it by changing the setup, else None."""
    if isinstance(exc, ConfigurationError):
        return str(exc)
    if isinstance(exc, ValidationError):
        return settings_error(exc)
    if isinstance(exc, OperationalError | ArgumentError) or _is_connection_dbapi(exc):
        return (
            f"cannot use the status database {_database(settings)}: {_first_line(exc)}; "
            "check PROVISIONER_DATABASE_URL (and that the database server is up)"
        )
    redis_problem = _redis(exc)
    if redis_problem is not None:
        return redis_problem
    if _is_broker_error(exc):
        where = _redacted(settings.broker_url) if settings and settings.broker_url else "?"
        return (
            f"cannot reach the broker {where}: {_first_line(exc)}; check "
            "PROVISIONER_BROKER_URL (and that Redis or RabbitMQ is up)"
        )
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return f"the port is in use ({exc.strerror}): choose another with --port"
    return None


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()
    return text[0] if text else type(cause).__name__


def _is_connection_dbapi(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def _database(settings: Settings | None) -> str:
    return _redacted(settings.database_url) if settings is not None else "?"


def _redacted(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return repr(url)


def _redis(exc: BaseException) -> str | None:
    try:
        import redis
    except ImportError:  # pragma: no cover - redis is a dependency
        return None
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return (
            f"cannot reach Redis: {_first_line(exc)}; check PROVISIONER_STREAM_REDIS_URL "
            "(or --redis) and that Redis is up"
        )
    return None


def _is_broker_error(exc: BaseException) -> bool:
    from kombu.exceptions import OperationalError as KombuOperationalError

    return isinstance(exc, KombuOperationalError)

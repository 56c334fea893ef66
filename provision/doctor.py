"""``provision doctor``: every check an operator would run by hand, each with its fix."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pydantic import ValidationError

from worker.accounts import Account, Accounts, load_accounts
from worker.errors import (
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    NotTheApiError,
    PaymentRequiredError,
    PlausibleConnectionError,
    PlausibleError,
)
from worker.jobs.db import make_engine, require_current
from worker.jobs.states import Priority
from worker.pauses import PROBE_SITE
from worker.plausible import PlausibleClient
from worker.problems import explain
from worker.quota.limiter import Limiter
from worker.settings import Settings, settings_error


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


def run_checks(settings: Settings | None = None) -> Iterator[Check]:
    try:
        settings = settings or Settings()
    except ValidationError as exc:
        yield Check("settings", False, settings_error(exc))
        return
    yield Check("settings", True, "read")
    try:
        accounts = load_accounts(settings)
    except ConfigurationError as exc:
        yield Check("accounts", False, str(exc))
        return
    yield Check("accounts", True, ", ".join(accounts.names))
    database = _database(settings)
    yield database
    yield _broker(settings)
    if settings.stream_redis_url:
        yield _redis(settings)
    yield from _api(settings, accounts, database.ok)


def _database(settings: Settings) -> Check:
    try:
        engine = make_engine(settings.database_url)
        try:
            require_current(engine)
        finally:
            engine.dispose()
    except Exception as exc:
        return Check("status database", False, explain(exc, settings) or repr(exc))
    return Check("status database", True, "reachable, schema current")


def _broker(settings: Settings) -> Check:
    if not settings.broker_url:
        return Check("broker", True, "none: embedded mode (jobs run inside provision commands)")
    from kombu import Connection

    try:
        with Connection(settings.broker_url, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:
        return Check("broker", False, explain(exc, settings) or repr(exc))
    return Check("broker", True, "reachable")


def _redis(settings: Settings) -> Check:
    import redis

    try:
        client = redis.Redis.from_url(settings.stream_redis_url or "", socket_connect_timeout=3)
        client.ping()
        client.close()
    except Exception as exc:
        return Check("stream Redis", False, explain(exc, settings) or repr(exc))
    return Check("stream Redis", True, "reachable")


def _api(settings: Settings, accounts: Accounts, permits: bool) -> Iterator[Check]:
    limiter = None
    if permits:
        limiter = Limiter(make_engine(settings.database_url), guard=settings.quota_guard_seconds)
    try:
        for account in accounts:
            yield _probe(settings, account, limiter)
    finally:
        if limiter is not None:
            limiter.engine.dispose()


def _probe(settings: Settings, account: Account, limiter: Limiter | None) -> Check:
    name = f"account {account.name}"
    try:
        key = account.api_key()
    except ConfigurationError as exc:
        return Check(name, False, str(exc))
    if limiter is None:
        return Check(name, False, "key set; API not checked: it needs the status database")
    quota = account.quota
    refused = limiter.take(quota, limiter.span(quota), 1, Priority.interactive)
    if refused is not None:
        return Check(name, True, "key set; API not checked: the quota has no room right now")
    client = PlausibleClient(
        base_url=settings.plausible_base_url,
        api_key=key.get_secret_value(),
        connect_timeout=settings.http_connect_timeout,
        read_timeout=settings.http_read_timeout,
    )
    try:
        client.ensure_goal(PROBE_SITE, goal_type="event", event_name="provisioner-doctor")
    except NotFoundError as exc:
        if exc.code != "site_not_found":
            return Check(name, False, f"unexpected answer: {exc}")
        return Check(name, True, f"key accepted by {settings.plausible_base_url} with Sites API")
    except NotTheApiError as exc:
        return Check(name, False, exc.message)
    except AuthenticationError as exc:
        return Check(
            name,
            False,
            f"key refused ({exc.status}): not a valid key with the sites:provision scope; "
            f"set {account.api_key_env} to a Sites API key",
        )
    except PaymentRequiredError as exc:
        return Check(name, False, f"{exc.message} ({exc.code})")
    except PlausibleConnectionError as exc:
        return Check(
            name,
            False,
            f"cannot reach {settings.plausible_base_url}: {exc.message}; check PLAUSIBLE_BASE_URL",
        )
    except PlausibleError as exc:
        return Check(name, False, f"unexpected answer: {exc}")
    finally:
        client.close()
    return Check(name, False, f"unexpected: {PROBE_SITE} exists")

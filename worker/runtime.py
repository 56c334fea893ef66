"""Factories that build a worker process's parts from settings (store, clients, limiter, scheduler,
pipeline). The entry points call them; ``provision`` is where the parts are wired into processes."""

from __future__ import annotations

from worker.accounts import Accounts, load_accounts
from worker.dispatch import Dispatcher
from worker.jobs.store import JobStore
from worker.leases import LeaseKeeper
from worker.pauses import Pauses
from worker.plausible import PlausibleClient
from worker.quota.limiter import Limiter
from worker.quota.report import Reporter
from worker.quota.scheduler import Scheduler
from worker.retrying import RetryPolicy
from worker.service import Pipeline
from worker.settings import Settings
from worker.storage import make_store as make_store  # where the workers look for it
from worker.webhooks import check_settings as check_webhook_settings


def make_accounts(settings: Settings) -> Accounts:
    return load_accounts(settings)


def make_clients(settings: Settings, accounts: Accounts) -> dict[str, PlausibleClient]:
    """One client per account; ConfigurationError (naming the account and its variable) if a
    key is missing, so a worker stops at start instead of failing every job."""
    keys = {account.name: account.api_key() for account in accounts}
    return {
        name: PlausibleClient(
            base_url=settings.plausible_base_url,
            api_key=key.get_secret_value(),
            connect_timeout=settings.http_connect_timeout,
            read_timeout=settings.http_read_timeout,
            total_timeout=settings.http_total_timeout,
            hour_seconds=settings.hour_seconds,
        )
        for name, key in keys.items()
    }


def check_worker_settings(settings: Settings) -> None:
    """Fail now, in one line, on what would otherwise fail every job: accounts and keys, and a
    webhook_url without PROVISIONER_WEBHOOK_SECRET to sign its deliveries."""
    accounts = make_accounts(settings)
    for client in make_clients(settings, accounts).values():
        client.close()
    check_webhook_settings(settings, accounts)


def make_limiter(settings: Settings, store: JobStore) -> Limiter:
    return Limiter(
        store.engine,
        interactive_reserve=settings.interactive_reserve,
        release_seconds=settings.reserve_release_seconds,
        guard=settings.quota_guard_seconds,
    )


def make_keeper(settings: Settings, store: JobStore) -> LeaseKeeper:
    """One per process, shared by its threads: renews their leases."""
    return LeaseKeeper(
        store, settings.lease_seconds, confirm_after=settings.heartbeat_timeout_seconds / 2
    )


def make_pipeline(
    settings: Settings,
    store: JobStore,
    *,
    interruptions: tuple[type[BaseException], ...] = (),
    keeper: LeaseKeeper | None = None,
) -> Pipeline:
    """A pipeline; ``keeper`` renews the leases of this process's runs (pass one per process,
    shared by its threads), ``interruptions`` are the runner's time-limit exceptions."""
    accounts = make_accounts(settings)
    return Pipeline(
        store=store,
        clients=make_clients(settings, accounts),
        accounts=accounts,
        limiter=make_limiter(settings, store),
        policy=RetryPolicy.from_settings(settings),
        lease_seconds=settings.lease_seconds,
        max_attempts=settings.job_max_attempts,
        time_budget=settings.job_time_budget_seconds or None,
        interruptions=interruptions,
        keeper=keeper or make_keeper(settings, store),
        pauses=Pauses(store.engine),
    )


def make_scheduler(settings: Settings, store: JobStore, dispatcher: Dispatcher) -> Scheduler:
    return Scheduler(
        store,
        make_limiter(settings, store),
        make_accounts(settings),
        dispatcher,
        # Fresh at every tick: a job dispatched for an account just paused only comes back.
        Pauses(store.engine, cache_seconds=0),
        ahead=settings.dispatch_ahead,
    )


def make_reporter(settings: Settings, store: JobStore) -> Reporter:
    return Reporter(store, make_limiter(settings, store), make_accounts(settings))

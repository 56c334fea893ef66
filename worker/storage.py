"""``make_store``: the status table a process opens from its settings. Apart from
``worker.runtime`` (which builds workers, their clients and the quota machinery), so a command
that only reads the table does not import all of that."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from worker.accounts import load_accounts
from worker.jobs.db import make_engine, require_current, upgrade
from worker.jobs.store import JobStore
from worker.settings import Settings
from worker.wakeups import announcer, transport_of


def make_store(
    settings: Settings, engine: Engine | None = None, *, migrate: bool = False
) -> JobStore:
    """The status table. ``migrate`` upgrades its schema first (embedded mode); otherwise a
    database behind this version's schema stops the process with a ConfigurationError. The
    store knows the accounts' webhook URLs, for the jobs that finish through it."""
    webhook_urls = load_accounts(settings).webhook_urls
    engine = engine or make_engine(settings.database_url)
    if migrate:
        upgrade(engine)
    else:
        require_current(engine)
    store = JobStore(engine, webhook_urls=webhook_urls)
    # Producers wake the workers' schedulers when they enqueue (worker.wakeups).
    store.announce = announcer(transport_of(settings)) or store.announce
    return store

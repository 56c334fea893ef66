"""``producers.django.provisioner``: the Provisioner of Django's database, built on first use."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from django.db import DEFAULT_DB_ALIAS

from producers.api import DBAPIConnection, Provisioner
from producers.events import Event
from provisioner_types import Batch, Job
from worker.jobs.specs import JobRequest
from worker.jobs.states import Priority


class DjangoProvisioner:
    """``Provisioner`` on the status table in Django's database, from ``PLAUSIBLE_PROVISIONER``.

    Built on first use (nothing connects at import, or when enqueueing: the job goes through
    the connection you pass); rebuilt when a test overrides the settings.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._built: Provisioner | None = None

    @property
    def api(self) -> Provisioner:
        """The underlying ``producers.api.Provisioner``."""
        with self._lock:
            if self._built is None:
                from producers.django.conf import engine_for, options

                settings = options()
                self._built = Provisioner.from_engine(
                    engine_for(settings.database),
                    accounts_file=settings.accounts_file,
                    check_schema=False,  # the system check does it, before any request
                )
            return self._built

    def enqueue(
        self,
        connection: DBAPIConnection,
        item: Mapping[str, Any] | Event | JobRequest,
        *,
        key: str | None = None,
        batch_id: str | None = None,
        priority: Priority = Priority.interactive,
    ) -> str:
        """Write the job in ``connection``'s transaction (``django.db.connection``, or
        ``connections[alias]`` of the status table's alias) and return its id.

        Inside ``transaction.atomic()`` the job commits or rolls back with your rows; outside
        one, Django's autocommit commits it at once. Raises as ``Provisioner.enqueue`` does.
        """
        from producers.django.conf import options

        expected = options().database
        alias = getattr(connection, "alias", DEFAULT_DB_ALIAS)
        if alias != expected:
            raise ValueError(
                f"the status table is in DATABASES[{expected!r}] "
                f"(PLAUSIBLE_PROVISIONER['DATABASE']): enqueue on connections[{expected!r}], "
                f"not on connections[{alias!r}]"
            )
        return self.api.enqueue(connection, item, key=key, batch_id=batch_id, priority=priority)

    def status(self, ref: str) -> Job | None:
        """A job by id or idempotency key, as ``Provisioner.status`` (read on the provisioner's
        own connection: a job enqueued in a transaction still open is not there yet)."""
        return self.api.status(ref)

    def batch(self, batch_id: str) -> Batch | None:
        """A batch, as ``Provisioner.batch``."""
        return self.api.batch(batch_id)

    def reset(self) -> None:
        """Forget the built Provisioner (its connections closed); the next use builds anew."""
        with self._lock:
            built, self._built = self._built, None
        if built is not None:
            built.store.engine.dispose()

    def setting_changed(self, *, setting: str, **_: Any) -> None:
        if setting in ("PLAUSIBLE_PROVISIONER", "DATABASES"):
            self.reset()


#: The provisioner of this Django project.
provisioner = DjangoProvisioner()

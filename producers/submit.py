"""Write job rows, then publish their ids.

Every single-job enqueue outside a caller's transaction goes through ``submit`` (the HTTP
service): ``JobStore.enqueue``, then ``publish``. The bulk producers (``provision import``,
``provision consume``) write many rows per transaction with ``JobStore.enqueue_many`` and then call
``publish``; the Python API writes the row in the caller's session and calls ``publish`` after the
commit. All of them insert with the same INSERT ... ON CONFLICT DO NOTHING
(``worker.store.insert_ignoring_duplicates``; ``JobStore.enqueue`` is a one-row
``enqueue_many``) and apply the same duplicate-or-conflict rule
(``worker.store.check_same_request``).

The row is committed before the message is published, so a worker never receives an id it
cannot find. If the process dies between the two, the row stays unpublished and the sweeper
publishes it after a short grace: no job is lost, and a duplicate message is harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from worker.models import JobRequest
from worker.store import Enqueued, JobStore
from worker.sweeper import Dispatcher

log = logging.getLogger(__name__)


def submit(
    store: JobStore,
    dispatcher: Dispatcher,
    request: JobRequest,
    *,
    key: str | None = None,
    batch_id: str | None = None,
) -> Enqueued:
    """Enqueue ``request`` under ``key``; an existing key returns its job and does nothing else.

    Raises IdempotencyConflictError when the key names a different request.
    """
    result = store.enqueue(request, key=key, batch_id=batch_id)
    if result.created:
        publish(store, dispatcher, [result.job.id])
    return result


def publish(store: JobStore, dispatcher: Dispatcher, job_ids: Sequence[str]) -> None:
    """Hand committed jobs to the workers; on a broker outage the sweeper publishes them later."""
    try:
        dispatcher.publish(job_ids)
    except Exception:
        log.warning("could not publish %d job(s); the sweeper will", len(job_ids), exc_info=True)
        return
    store.mark_dispatched(job_ids)

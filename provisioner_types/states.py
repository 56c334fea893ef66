"""The words of a job's life: its operation, status and priority class, a webhook delivery's
status, and the sets of statuses each action applies to. Plain enums."""

from __future__ import annotations

from enum import StrEnum


class Operation(StrEnum):
    #: create the site, then ensure its goals, shared links, custom properties and guests
    provision_site = "provision_site"
    delete_site = "delete_site"  #: delete the site
    delete_goal = "delete_goal"  #: delete one goal, by id or by its event name / page path
    delete_prop = "delete_prop"  #: disallow one custom property of a site
    delete_guest = "delete_guest"  #: remove one guest (or invitation) of a site, by email
    set_tracker = "set_tracker"  #: change settings of a site's tracker script configuration


class JobStatus(StrEnum):
    queued = "queued"  #: written, waiting for a worker
    running = "running"  #: claimed by a worker whose lease has not expired
    waiting = "waiting"  #: parked until ``next_attempt_at`` (quota spent, outage)
    succeeded = "succeeded"  #: done; the result is in ``progress``
    failed = "failed"  #: will not be retried; the reason is in ``error_*``
    cancelled = "cancelled"  #: withdrawn before it ran

    @property
    def done(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})


class Priority(StrEnum):
    """Which jobs the quota serves first."""

    interactive = "interactive"  #: a signup someone waits for: HTTP, Python API, stream
    bulk = "bulk"  #: file imports: batches share what interactive jobs leave, round-robin


class DeliveryStatus(StrEnum):
    pending = "pending"  #: to be sent (again) at ``next_attempt_at``
    delivered = "delivered"  #: the receiver answered 2xx
    failed = "failed"  #: every attempt failed; not sent again


#: Statuses a job can be cancelled from: it has not started (or is parked between attempts).
CANCELLABLE = (JobStatus.queued, JobStatus.waiting)


#: Statuses of a job that is not done yet.
UNFINISHED = (JobStatus.queued, JobStatus.waiting, JobStatus.running)

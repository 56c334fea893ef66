"""The public contract of plausible-provisioner: what a job, a batch, a quota, an error and a
completion webhook look like to everyone outside the workers (the HTTP service and its OpenAPI
document, its SDK ``producers.client``, the Python API, the CLI's ``--json``, the webhooks).

- ``states``: the enums of a job's life (``Operation``, ``JobStatus``, ``Priority``,
  ``DeliveryStatus``) and the status sets (``FINAL_STATUSES``, ``CANCELLABLE``, ``UNFINISHED``);
- ``jobs``: ``Job`` and its parts, ``JobPage``, ``WebhookEvent`` (a completion webhook's body);
- ``batches``: ``Batch``; ``sites``: ``Site`` (the inventory), ``SitePage``; ``quota``:
  ``Quota``; ``errors``: ``ErrorBody``;
- ``operations``: ``JobFilterBody``, ``Changed``, ``Health``; ``events``: ``SignupEvent``.

pydantic models; timestamps are ISO 8601 strings in UTC. Imports pydantic and nothing of ours,
so the SDK, the service and the workers can all depend on it.
"""

from provisioner_types.batches import Batch, Failure, FailureError
from provisioner_types.errors import ErrorBody, ErrorDetail
from provisioner_types.events import SIGNUP_EVENT_EXAMPLE, SignupEvent, SignupGoal
from provisioner_types.jobs import (
    EventType,
    Goal,
    Job,
    JobError,
    JobPage,
    SharedLink,
    Timestamp,
    WebhookDelivery,
    WebhookEvent,
)
from provisioner_types.operations import MAX_CHANGED_IDS, Changed, Health, JobFilterBody
from provisioner_types.quota import AccountPause, Quota, QuotaAccount, QuotaWindow
from provisioner_types.sites import Site, SiteGoal, SiteGuest, SiteLink, SitePage
from provisioner_types.states import (
    CANCELLABLE,
    FINAL_STATUSES,
    UNFINISHED,
    DeliveryStatus,
    JobStatus,
    Operation,
    Priority,
)

__all__ = [
    "CANCELLABLE",
    "FINAL_STATUSES",
    "MAX_CHANGED_IDS",
    "SIGNUP_EVENT_EXAMPLE",
    "UNFINISHED",
    "AccountPause",
    "Batch",
    "Changed",
    "DeliveryStatus",
    "ErrorBody",
    "ErrorDetail",
    "EventType",
    "Failure",
    "FailureError",
    "Goal",
    "Health",
    "Job",
    "JobError",
    "JobFilterBody",
    "JobPage",
    "JobStatus",
    "Operation",
    "Priority",
    "Quota",
    "QuotaAccount",
    "QuotaWindow",
    "SharedLink",
    "SignupEvent",
    "SignupGoal",
    "Site",
    "SiteGoal",
    "SiteGuest",
    "SiteLink",
    "SitePage",
    "Timestamp",
    "WebhookDelivery",
    "WebhookEvent",
]

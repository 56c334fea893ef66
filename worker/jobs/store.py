"""``JobStore``: every interface to the status table in one object, for the entry points that
wire parts together. Parts take the narrow interface they need (``Claims``, ``Dispatching``,
``Recovery``, ``Counts``, ``Queries``, ``Actions``, ``Outbox``, ``Intake``, ``Inventory``, ``Registry``), so
the type checker says who may touch what."""

from __future__ import annotations

from worker.jobs.actions import Actions
from worker.jobs.claims import Claims
from worker.jobs.counts import Counts
from worker.jobs.dispatch import Dispatching
from worker.jobs.intake import Intake
from worker.jobs.inventory import Inventory
from worker.jobs.outbox import Outbox
from worker.jobs.queries import Queries
from worker.jobs.recovery import Recovery
from worker.jobs.registry import Registry


class JobStore(
    Intake, Claims, Dispatching, Recovery, Registry, Queries, Counts, Actions, Outbox, Inventory
):
    """The status table, whole."""

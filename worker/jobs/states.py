"""The words of a job's life, as ``provisioner_types.states`` defines them (the enums and the
status sets, re-exported here so the status table's code names them from one place), and the
account of a job whose event names none."""

from __future__ import annotations

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
    "DEFAULT_ACCOUNT",
    "FINAL_STATUSES",
    "UNFINISHED",
    "DeliveryStatus",
    "JobStatus",
    "Operation",
    "Priority",
]

#: The account jobs run under when their event names none (``worker.accounts``).
DEFAULT_ACCOUNT = "default"

"""Acting on jobs in bulk (which jobs a filter means, how many changed) and the health checks."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from provisioner_types.model import Model
from provisioner_types.states import JobStatus


class JobFilterBody(Model):
    """Which jobs a bulk retry or cancel means: every given field must match. At least one is
    required; an unknown field is refused rather than ignored (it would widen the match)."""

    # Built at once: FastAPI reads a request body's model as a named parameter, which a
    # deferred model answers with a warning that the name has no effect.
    model_config = ConfigDict(extra="forbid", defer_build=False)

    status: JobStatus | None = None
    batch_id: str | None = None
    domain: str | None = Field(default=None, description="Normalised like an event's domain.")
    account: str | None = None
    code: str | None = Field(default=None, description="The last error's code: `domain_taken`.")


#: ``Changed.ids`` lists at most this many.
MAX_CHANGED_IDS = 1000


class Changed(Model):
    changed: int = Field(description="How many jobs changed.")
    ids: list[str] = Field(description=f"The first {MAX_CHANGED_IDS} of their ids.")

    @classmethod
    def of(cls, ids: list[str]) -> Changed:
        """How many of ``ids`` changed, and the first ``MAX_CHANGED_IDS`` of them."""
        return cls(changed=len(ids), ids=ids[:MAX_CHANGED_IDS])


class Health(Model):
    status: Literal["ok"] = "ok"

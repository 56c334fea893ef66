"""The one error body of the HTTP service, whatever the status."""

from __future__ import annotations

from pydantic import Field

from provisioner_types.model import Model


class ErrorDetail(Model):
    code: str = Field(description="Stable, machine-readable: `not_found`, `wrong_status`, …")
    message: str = Field(description="For people; may change between versions.")
    field: str | None = Field(
        description="The field, parameter or header at fault (`goals[1].display_name`), if any."
    )


class ErrorBody(Model):
    """Every error the service answers, whatever its status."""

    error: ErrorDetail

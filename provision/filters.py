"""Which jobs an operator means, from the words they give it: the CLI's options, the HTTP
service's query and body, the dashboard's forms. One parser, one set of messages."""

from __future__ import annotations

from collections.abc import Mapping

from producers.events import parse_domain
from worker.errors import InvalidRequestError
from worker.jobs.filters import JobFilter
from worker.jobs.states import JobStatus

#: The fields of a filter as every interface names them.
FIELDS = ("status", "batch_id", "domain", "account", "code")
EMPTY_MESSAGE = (
    "give at least one of status, batch_id, domain, account, code "
    "(an empty filter would match every job)"
)


class EmptyFilterError(InvalidRequestError):
    """A filter with no field, given to an action: it would match every job."""

    def __init__(self) -> None:
        super().__init__(EMPTY_MESSAGE)


def parse_filter(values: Mapping[str, object], *, required: bool = False) -> JobFilter:
    """A JobFilter from ``FIELDS`` (blank or missing ones are left out; other keys are ignored).
    InvalidRequestError names the field at fault; with ``required``, a filter without any field
    is EmptyFilterError."""
    given = {name: _text(values.get(name), name) for name in FIELDS}
    status = None
    if given["status"] is not None:
        try:
            status = JobStatus(given["status"])
        except ValueError:
            choices = ", ".join(s.value for s in JobStatus)
            raise InvalidRequestError(
                f"status {given['status']!r} is not one of {choices}", field="status"
            ) from None
    where = JobFilter(
        status=status,
        batch_id=given["batch_id"],
        domain=parse_domain(given["domain"]) if given["domain"] is not None else None,
        account=given["account"],
        error_code=given["code"],
    )
    if required and where.empty:
        raise EmptyFilterError()
    return where


def filter_fields(where: JobFilter) -> dict[str, str]:
    """The fields of a filter, as ``parse_filter`` reads them (for links and forms)."""
    values = {
        "status": where.status.value if where.status else None,
        "batch_id": where.batch_id,
        "domain": where.domain,
        "account": where.account,
        "code": where.error_code,
    }
    return {name: value for name, value in values.items() if value is not None}


def _text(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequestError(f"{name} must be a string", field=name)
    return value.strip() or None

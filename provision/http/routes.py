"""The data routes of ``provision serve``: jobs (submit, look up, list, retry, cancel, one or
every job a filter matches), batches, the sites of the inventory, plans of a desired state (made
and applied), the quota and the metrics. Each answers a model of
``provisioner_types``; every route needs the bearer token (``provision.http.gate``)."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from producers.events import check_strings, parse_domain, parse_event, parse_key
from provision import actions, cursors
from provision.filters import EmptyFilterError, parse_filter
from provision.http import polling
from provision.http.deps import (
    Accounts,
    Caller,
    OptionalRefresher,
    OptionalReporter,
    Store,
    data_router,
    require,
    scoped,
)
from provision.http.errors import ApiError
from provision.http.openapi import errors
from provision.http.polling import MAX_WAIT_SECONDS, RETRY_AFTER_SECONDS
from provision.tokens import Principal
from provisioner_types import (
    SIGNUP_EVENT_EXAMPLE,
    Batch,
    Changed,
    Job,
    JobFilterBody,
    JobPage,
    Priority,
    Quota,
    Site,
    SitePage,
)
from worker import metrics
from worker.errors import IdempotencyConflictError, InvalidRequestError, ProvisionerError
from worker.jobs import view
from worker.jobs.filters import JobFilter
from worker.jobs.models import ProvisioningJob
from worker.jobs.store import JobStore

T = TypeVar("T")

MAX_PAGE = 500

router = data_router()


async def json_body(request: Request) -> object:
    """The body as JSON (any value; ``parse_event`` says what is wrong with it)."""
    try:
        return json.loads(await request.body())
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad UTF-8 and integers too long to convert as well as bad JSON.
        raise ApiError(422, "validation_error", f"the body is not JSON: {exc}") from None


@router.post(
    "/jobs",
    status_code=202,
    response_model=Job,
    responses=errors(403, 408, 409, 413, 422),
    **scoped(
        "jobs:write",
        {
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/SignupEvent"},
                        "example": SIGNUP_EVENT_EXAMPLE,
                    }
                },
            }
        },
    ),
)
def create_job(
    body: Annotated[object, Depends(json_body)],
    response: Response,
    store: Store,
    accounts: Accounts,
    caller: Caller,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Job:
    """Enqueue a signup event (see the README's "Signup events"), for an account the token may
    see."""
    try:
        if idempotency_key is not None:
            # Both normalised alike (trimmed; 42 and "42" are one key) before comparing.
            check_strings(idempotency_key, "Idempotency-Key")
            header_key = parse_key(idempotency_key)
            if isinstance(body, dict):
                body_key = parse_key(body.get("id"))
                if body_key is not None and body_key != header_key:
                    raise ApiError(422, "key_mismatch", "Idempotency-Key and body id differ", "id")
                body = {**body, "id": header_key}
        allowed = caller.visible(accounts) if accounts is not None else caller.accounts
        parsed = parse_event(body, accounts=allowed)
    except InvalidRequestError as exc:
        raise ApiError(422, "validation_error", exc.message, exc.field) from None
    try:
        result = store.enqueue(
            parsed.request,
            key=parsed.key,
            source="http",
            priority=parsed.priority or Priority.interactive,
        )
    except IdempotencyConflictError as exc:
        raise ApiError(409, "idempotency_key_reused", str(exc), "id") from None
    _accepted(response, result.job.id)
    return view.job_view(result.job)


# The literal /jobs/retry and /jobs/cancel are declared before /jobs/{ref}/… routes.
@router.post(
    "/jobs/retry",
    status_code=202,
    response_model=Changed,
    responses=errors(403, 408, 413, 422),
    **scoped("jobs:operate"),
)
def retry_matching(where: JobFilterBody, store: Store, caller: Caller) -> Changed:
    """Queue again every failed job the filter matches (each resumes from its checkpoint)."""
    changed = actions.act_on_matching(
        store, "retry", _filter(where, caller), actor=caller.name, door="http"
    )
    return Changed.of(changed.ids)


@router.post(
    "/jobs/cancel",
    response_model=Changed,
    responses=errors(403, 408, 413, 422),
    **scoped("jobs:operate"),
)
def cancel_matching(where: JobFilterBody, store: Store, caller: Caller) -> Changed:
    """Withdraw every queued or waiting job the filter matches."""
    changed = actions.act_on_matching(
        store, "cancel", _filter(where, caller), actor=caller.name, door="http"
    )
    return Changed.of(changed.ids)


@router.get(
    "/jobs/{ref}",
    response_model=Job,
    responses={
        304: {"description": "The job is still as the `If-None-Match` ETag says."},
        **errors(403, 404, 422),
    },
    **scoped("jobs:read"),
)
async def get_job(
    ref: str,
    request: Request,
    wait: Annotated[
        float | None,
        Query(
            ge=0,
            le=MAX_WAIT_SECONDS,
            description="Answer as soon as the job changes (from the `If-None-Match` ETag, "
            "else from now) or is done, or with its current state after this many seconds.",
        ),
    ] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """One job, by id or idempotency key, with a strong ETag (``If-None-Match``: 304 while
    the job is as the client has it). ``provision.http.polling.JobPolls`` answers these
    requests before they get here; this route documents them."""
    del wait, if_none_match  # read by ``answer`` from the request
    return await polling.answer(request, ref)


@router.get(
    "/jobs",
    response_model=JobPage,
    responses=errors(403, 422),
    **scoped("jobs:read"),
)
def list_jobs(
    store: Store,
    caller: Caller,
    batch_id: str | None = None,
    status: str | None = None,
    domain: str | None = None,
    account: str | None = None,
    code: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: str | None = None,
) -> JobPage:
    """Jobs by batch, status, domain, account and/or error code, oldest first; pass
    ``next_cursor`` back as ``cursor``."""
    values = {"batch_id": batch_id, "status": status, "domain": domain}
    where = _parsed(lambda: parse_filter({**values, "account": account, "code": code}))
    where = dataclasses.replace(where, within=caller.restriction)
    jobs = store.list_jobs(where, limit=limit, after=_parsed(lambda: cursors.decode(cursor)))
    last = jobs[-1] if len(jobs) == limit else None
    return JobPage(
        jobs=[view.job_view(job) for job in jobs],
        next_cursor=cursors.encode((last.created_at, last.id)) if last else None,
    )


@router.get(
    "/batches/{batch_id}",
    response_model=Batch,
    responses=errors(403, 404),
    **scoped("jobs:read"),
)
def get_batch(batch_id: str, store: Store, reporter: OptionalReporter, caller: Caller) -> Batch:
    """How many jobs of the batch are in each status, and the failures with their reasons (of
    the accounts the token may see: a batch of the day holds every tenant's jobs)."""
    summary = store.batch_summary(batch_id, within=caller.restriction)
    if summary.total == 0:
        raise ApiError(404, "not_found", f"no batch {batch_id!r}")
    eta = reporter.batch_eta(batch_id, within=caller.restriction) if reporter is not None else None
    return view.batch_view(summary, eta)


@router.get(
    "/sites",
    response_model=SitePage,
    responses=errors(403, 422),
    **scoped("jobs:read"),
)
def list_sites(
    store: Store,
    caller: Caller,
    account: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: str | None = None,
) -> SitePage:
    """The inventory: the sites the provisioner knows it owns in Plausible (of one account,
    if given), by domain, with their goals and shared links; pass ``next_cursor`` back as
    ``cursor``."""
    after = _parsed(lambda: cursors.decode_pair(cursor))
    accounts = [account] if account is not None else caller.restriction
    if accounts is not None:
        accounts = caller.visible(accounts)
    sites = store.sites(accounts, limit=limit, after=after)
    last = sites[-1] if len(sites) == limit else None
    return SitePage(
        sites=[view.site_view(found) for found in store.details(sites)],
        next_cursor=cursors.encode((last.domain, last.account)) if last else None,
    )


@router.get(
    "/sites/{domain}",
    response_model=list[Site],
    responses=errors(403, 404, 422),
    **scoped("jobs:read"),
)
def get_site(domain: str, store: Store, caller: Caller) -> list[Site]:
    """One site of the inventory, in any spelling Plausible accepts (one entry per account that
    has it), with its goals and shared links."""
    normalised = _parsed(lambda: parse_domain(domain))
    found = store.site(normalised, caller.restriction)
    if not found:
        raise ApiError(404, "not_found", f"the inventory holds no site {normalised!r}")
    return [view.site_view(site) for site in found]


@router.get(
    "/quota",
    response_model=list[Quota],
    responses=errors(403, 404),
    **scoped("jobs:read"),
)
def get_quota(reporter: OptionalReporter, caller: Caller) -> list[Quota]:
    """Each quota: calls used and remaining per window, when each resets, jobs waiting (the
    quotas whose every account the token may see)."""
    if reporter is None:
        raise ApiError(404, "not_found", "this service was started without quota reporting")
    return [
        Quota.model_validate(quota)
        for quota in reporter.quotas()
        if all(caller.sees(account["name"]) for account in quota["accounts"])
    ]


@router.post(
    "/jobs/{ref}/retry",
    status_code=202,
    response_model=Job,
    responses=errors(403, 404, 409),
    **scoped("jobs:operate"),
)
def retry_job(ref: str, response: Response, store: Store, caller: Caller) -> Job:
    """Queue a failed job again (it resumes from its last checkpoint); by id or key."""
    job = _act(store, "retry", ref, caller)
    _accepted(response, job.id)
    return view.job_view(job)


@router.post(
    "/jobs/{ref}/cancel",
    response_model=Job,
    responses=errors(403, 404, 409),
    **scoped("jobs:operate"),
)
def cancel_job(ref: str, store: Store, caller: Caller) -> Job:
    """Withdraw a queued or waiting job; by id or key."""
    return view.job_view(_act(store, "cancel", ref, caller))


@router.get(
    "/metrics",
    response_class=Response,
    **scoped("admin"),
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
)
def get_metrics() -> Response:
    """Prometheus metrics of this host's provisioner processes."""
    content, content_type = metrics.exposition()
    return Response(content, media_type=content_type)


# -- helpers -----------------------------------------------------------------------------------


@router.post(
    "/plans",
    responses=errors(403, 408, 413, 422),
    **scoped("jobs:read"),
)
async def create_plan(
    request: Request,
    response: Response,
    store: Store,
    accounts: Accounts,
    reporter: OptionalReporter,
    refresher: OptionalRefresher,
    caller: Caller,
    target: Annotated[list[str] | None, Query()] = None,
    refresh: bool = False,
) -> dict[str, Any]:
    """A desired state (its file as a JSON body, or TOML with ``Content-Type:
    application/toml``) compared with the inventory, without an API call unless
    ``refresh=true``: the plan, its cost and its jobs, as ``provision plan --json`` prints it.
    It is kept: ``GET /plans/{batch}`` (the ``Location``) reads it before it is applied. With
    ``refresh=true`` the plan's sites are first read live through the account's quota at bulk
    priority (the request waits for the quota when it is spent; it needs ``jobs:write``), and
    the drift is in ``cost.drift``, as ``provision plan --refresh`` does. Pass it to
    ``POST /plans/apply``."""
    from producers.plans import saved as plans
    from producers.plans.desired import DesiredStateError, parse

    raw = await request.body()
    try:
        if "toml" in request.headers.get("content-type", ""):
            data: object = tomllib.loads(raw.decode("utf-8"))
        else:
            data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ApiError(422, "validation_error", f"the body is not a desired state: {exc}") from None
    allowed = caller.visible(accounts) if accounts is not None else caller.accounts
    try:
        desired = parse(data, accounts=allowed)
        targets = [parse_domain(domain) for domain in target or ()]
    except DesiredStateError as exc:
        raise ApiError(422, "validation_error", "; ".join(exc.problems)) from None
    except InvalidRequestError as exc:
        raise ApiError(422, "validation_error", exc.message, "target") from None
    live = None
    if refresh:
        require(caller, "jobs:write")  # it spends the account's quota
        if refresher is None:
            raise ApiError(
                422,
                "refresh_unavailable",
                "this service was started without the settings to "
                "read Plausible live; plan without refresh=true",
            )
        live = refresher.of(desired.account)

    def make() -> dict[str, Any]:
        saved, cost = plans.make(store, desired, targets, reporter=reporter, live=live)
        plans.keep(store, saved, cost)
        return saved.as_json(cost)

    # The store, and a refresh's calls and quota waits, block: off the event loop.
    plan = await run_in_threadpool(make)
    response.headers["Location"] = f"/plans/{plan['batch']}"
    return plan


@router.post(
    "/plans/apply",
    status_code=202,
    responses=errors(403, 404, 408, 409, 413, 422),
    **scoped("jobs:write"),
)
def apply_plan(
    body: Annotated[object, Depends(json_body)],
    response: Response,
    store: Store,
    caller: Caller,
    allow_destroy: bool = False,
) -> dict[str, Any]:
    """Apply a plan from ``POST /plans``, as one batch named after its set: ``202`` with the
    batch and what was queued. ``409`` ``stale_plan`` if the inventory changed since it was
    made, ``destroy_not_allowed`` if it deletes a site without ``allow_destroy=true``. A plan
    that replaces a goal or guest queues the re-creation once the delete is done: call again
    while ``pending`` lists deletes. Applying it again makes no second job."""
    from producers.plans import saved as plans

    try:
        saved = plans.from_json(body)
    except ProvisionerError as exc:
        raise ApiError(422, "invalid_plan", str(exc)) from None
    if not caller.sees(saved.plan.account):
        raise ApiError(404, "not_found", f"no account {saved.plan.account!r}")
    try:
        applied = plans.apply(store, saved, allow_destroy=allow_destroy)
    except plans.PlanRefused as exc:
        raise ApiError(409, exc.code, str(exc)) from None
    response.headers["Location"] = f"/batches/{applied.batch_id}"
    return applied.as_json()


@router.get(
    "/plans/{batch_id}",
    responses=errors(403, 404),
    **scoped("jobs:read"),
)
def get_plan(batch_id: str, store: Store, caller: Caller) -> dict[str, Any]:
    """A plan made by ``POST /plans`` or applied (its batch's id): its set, account, summary,
    calls, changes, cost as priced when made, and ``status``, ``planned`` or ``applied``; once
    applied, its progress is its batch's (``GET /batches/{batch_id}``)."""
    from producers.plans.saved import recorded_plan

    plan = recorded_plan(store, batch_id, caller.restriction)
    if plan is None:
        raise ApiError(404, "not_found", f"no plan {batch_id!r}")
    return {**plan.model_dump(mode="json"), "status": plan.status}


def _accepted(response: Response, job_id: str) -> None:
    response.headers["Location"] = f"/jobs/{job_id}"
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)


def _act(store: JobStore, action: str, ref: str, caller: Principal) -> ProvisioningJob:
    try:
        return actions.act_on_job(
            store, action, ref, actor=caller.name, within=caller.restriction, door="http"
        )
    except actions.JobNotFoundError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except actions.WrongStatusError as exc:
        raise ApiError(409, "wrong_status", str(exc)) from None


def _parsed(parse: Callable[[], T]) -> T:
    """``parse()``, its InvalidRequestError answered 422 naming the field (``bad_cursor`` for a
    cursor, ``empty_filter`` for a filter without a field)."""
    try:
        return parse()
    except EmptyFilterError as exc:
        raise ApiError(422, "empty_filter", exc.message) from None
    except InvalidRequestError as exc:
        code = "bad_cursor" if exc.field == "cursor" else "validation_error"
        raise ApiError(422, code, exc.message, exc.field) from None


def _filter(body: JobFilterBody, caller: Principal) -> JobFilter:
    where = _parsed(lambda: parse_filter(body.model_dump(), required=True))
    return dataclasses.replace(where, within=caller.restriction)

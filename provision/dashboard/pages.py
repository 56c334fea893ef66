"""The dashboard's pages and the fragments of them that refresh (``/ui/fragments/…``, swapped in
by ``static/dashboard.js``): batches, a batch, search, a job, the sites of the inventory, the
plans applied, the quota; and the static files.

Handlers that touch the database are plain ``def``: they run in FastAPI's threadpool.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlencode

from fastapi.responses import RedirectResponse, Response
from starlette.requests import Request

from producers.events import parse_domain
from provision import cursors
from provision.actions import APPLIES_TO
from provision.dashboard.auth import Session
from provision.dashboard.context import Admin, Board, Dashboard, Position, SignedIn
from provision.dashboard.paths import PREFIX, with_query
from provision.dashboard.queries import BatchStats
from provision.dashboard.render import said, snippet
from provision.dashboard.steps import shown_request, steps_of
from provision.filters import filter_fields, parse_filter
from worker.errors import InvalidRequestError
from worker.jobs import audit
from worker.jobs.filters import JobFilter
from worker.jobs.models import ProvisioningJob
from worker.jobs.states import JobStatus

BATCHES_PER_PAGE = 20
SITES_PER_PAGE = 50
JOBS_PER_PAGE = 50
#: A batch's expected completion is worked out again at most this often (its estimate reads
#: the unfinished jobs of every batch sharing the quota).
ETA_SECONDS = 10.0
#: Batches whose expected completion is remembered, at most.
ETAS_KEPT = 1000


def _eta_key(batch_id: str, within: Sequence[str] | None) -> str:
    return f"{batch_id}|{','.join(within) if within is not None else '*'}"


def with_eta(board: Dashboard, stats: BatchStats, within: Sequence[str] | None) -> BatchStats:
    """The batch with its expected completion, from the quota scheduler's estimate; worked out
    at most every ``ETA_SECONDS`` per batch and view, however many pages poll."""
    reporter = board.reporter
    if stats.done or reporter is None:
        return stats
    eta = board.etas.get_or_make(
        _eta_key(stats.batch_id, within),
        lambda: reporter.batch_eta(stats.batch_id, within=within),
    )
    return dataclasses.replace(stats, eta=eta)


# -- batches ----------------------------------------------------------------------------------


def _batches(board: Dashboard, after: cursors.Cursor | None, session: Session) -> dict[str, Any]:
    within = session.principal.restriction
    ids, following = board.queries.batch_page(limit=BATCHES_PER_PAGE, after=after, within=within)
    stats = board.queries.batch_stats(ids, within)
    if board.reporter is not None:  # the page's expected completions, worked out together
        stale = [
            b
            for b in ids
            if b in stats and not stats[b].done and _eta_key(b, within) not in board.etas
        ]
        for batch_id, eta in board.reporter.batch_etas(stale, within=within).items():
            board.etas.put(_eta_key(batch_id, within), eta)
    return {
        "batches": [with_eta(board, stats[b], within) for b in ids if b in stats],
        "cursor": cursors.encode(after) or "",
        "next_cursor": cursors.encode(following),
    }


def batches_page(request: Request, board: Board, session: SignedIn, after: Position) -> Response:
    context = _batches(board, after, session)
    return board.templates.render(
        request, "batches.html", session=session, title="Batches", **context
    )


def slash() -> Response:
    return RedirectResponse(PREFIX, 308)


def batches_fragment(
    request: Request, board: Board, session: SignedIn, after: Position
) -> Response:
    context = _batches(board, after, session)
    return board.templates.render(
        request, "_batches.html", session=session, fragment=True, **context
    )


def _batch(board: Dashboard, batch_id: str, session: Session) -> dict[str, Any] | None:
    within = session.principal.restriction
    stats = board.queries.batch_stats([batch_id], within).get(batch_id)
    if stats is None:
        return None
    groups = board.queries.groups(batch_id, within=within)
    return {"batch": with_eta(board, stats, within), "groups": groups}


def batch_page(request: Request, batch_id: str, board: Board, session: SignedIn) -> Response:
    context = _batch(board, batch_id, session)
    if context is None:
        return board.templates.problem(request, session, 404, f"There is no batch {batch_id!r}.")
    return board.templates.render(
        request, "batch.html", session=session, title=f"Batch {batch_id}", **context
    )


def batch_fragment(request: Request, batch_id: str, board: Board, session: SignedIn) -> Response:
    context = _batch(board, batch_id, session)
    if context is None:
        return snippet("No such batch.", 404)
    return board.templates.render(request, "_batch.html", session=session, fragment=True, **context)


# -- search -----------------------------------------------------------------------------------


def search(
    request: Request, board: Board, session: SignedIn, after: Position, q: str = ""
) -> Response:
    params = dict(request.query_params)
    error = None
    try:
        where = parse_filter(params)
    except InvalidRequestError as exc:
        where, error = JobFilter(), said(exc)
    where = dataclasses.replace(where, within=session.principal.restriction)
    query = q.strip()
    domain = _as_domain(query) if query else None
    jobs: list[ProvisioningJob] = []
    following = None
    if error is None and query:
        # q is a job id, an idempotency key or a domain: one index lookup each.
        exact = board.store.find(query)
        if domain is not None and where.domain in (None, domain):
            jobs, following = board.queries.recent_jobs(
                dataclasses.replace(where, domain=domain), limit=JOBS_PER_PAGE, before=after
            )
        if exact is not None and _matches(exact, where, session) and after is None:
            jobs = [exact, *[j for j in jobs if j.id != exact.id]]
    elif error is None:
        jobs, following = board.queries.recent_jobs(where, limit=JOBS_PER_PAGE, before=after)
    fields = filter_fields(where)
    if domain is not None and error is None:
        fields.setdefault("domain", domain)
    next_url = None
    if following is not None:
        next_url = with_query(
            f"{PREFIX}/search",
            **{k: v for k, v in params.items() if k != "cursor"},
            cursor=cursors.encode(following),
        )
    return board.templates.render(
        request,
        "search.html",
        session=session,
        title="Search",
        q=query,
        where=filter_fields(where),
        action_fields=fields,
        statuses=[s.value for s in JobStatus],
        accounts=sorted(board.accounts),
        jobs=jobs,
        error=error,
        next_url=next_url,
        bulk_query=urlencode(fields),
    )


def _as_domain(value: str) -> str | None:
    try:
        return parse_domain(value)
    except InvalidRequestError:
        return None


def _matches(job: ProvisioningJob, where: JobFilter, session: Session) -> bool:
    """The job passes every field the filter gives, and the signed-in token may see it."""
    if not session.principal.sees(job.account):
        return False
    fields = {
        "status": job.status,
        "batch_id": job.batch_id,
        "account": job.account,
        "error_code": job.error_code,
        "domain": job.domain,
    }
    return all(getattr(where, name) in (None, value) for name, value in fields.items())


# -- a job ------------------------------------------------------------------------------------


def _job(job: ProvisioningJob) -> dict[str, Any]:
    return {
        "job": job,
        "steps": steps_of(job),
        "request_json": json.dumps(shown_request(job.request), indent=2, sort_keys=True),
        "retryable": job.status in APPLIES_TO["retry"],
        "cancellable": job.status in APPLIES_TO["cancel"],
    }


def job_page(request: Request, ref: str, board: Board, session: SignedIn) -> Response:
    job = board.store.find(ref)
    if job is None or not session.principal.sees(job.account):
        return board.templates.problem(request, session, 404, f"There is no job {ref!r}.")
    return board.templates.render(
        request, "job.html", session=session, title=f"Job {job.id}", **_job(job)
    )


def job_fragment(request: Request, ref: str, board: Board, session: SignedIn) -> Response:
    job = board.store.find(ref)
    if job is None or not session.principal.sees(job.account):
        return snippet("No such job.", 404)
    return board.templates.render(request, "_job.html", session=session, fragment=True, **_job(job))


# -- sites ------------------------------------------------------------------------------------


def sites_page(
    request: Request, board: Board, session: SignedIn, domain: str = "", cursor: str = ""
) -> Response:
    """The inventory, a page at a time by domain; ``domain`` goes straight to that site."""
    error = None
    wanted = domain.strip()
    try:
        start = cursors.decode_pair(cursor)
    except InvalidRequestError as exc:
        return board.templates.problem(request, session, 422, said(exc))
    try:
        if wanted:
            return RedirectResponse(f"{PREFIX}/sites/{quote(parse_domain(wanted))}", 303)
    except InvalidRequestError as exc:
        error = said(exc)
    sites = board.store.sites(session.principal.restriction, limit=SITES_PER_PAGE + 1, after=start)
    next_url = None
    if len(sites) > SITES_PER_PAGE:
        sites = sites[:SITES_PER_PAGE]
        following = cursors.encode((sites[-1].domain, sites[-1].account))
        next_url = with_query(f"{PREFIX}/sites", cursor=following)
    return board.templates.render(
        request,
        "sites.html",
        session=session,
        title="Sites",
        sites=sites,
        domain=wanted,
        error=error,
        next_url=next_url,
    )


def site_page(request: Request, domain: str, board: Board, session: SignedIn) -> Response:
    views = board.store.site(domain, session.principal.restriction)
    if not views:
        return board.templates.problem(
            request, session, 404, f"The inventory holds no site {domain!r}."
        )
    return board.templates.render(
        request, "site.html", session=session, title=domain, domain=domain, views=views
    )


# -- plans ------------------------------------------------------------------------------------


def plans_page(request: Request, board: Board, session: SignedIn) -> Response:
    """The desired-state plans kept, applied or not, newest first, each with its batch's progress."""
    from producers.plans.saved import recorded

    within = session.principal.restriction
    plans = recorded(board.store, within)
    counts = board.store.batch_counts([plan.batch_id for plan in plans], within)
    rows = [{"plan": plan, "progress": _progress(counts.get(plan.batch_id, {}))} for plan in plans]
    return board.templates.render(request, "plans.html", session=session, title="Plans", rows=rows)


def plan_page(request: Request, batch_id: str, board: Board, session: SignedIn) -> Response:
    """A plan's changes, its calls, and its batch's progress."""
    from producers.plans.planner import SYMBOLS
    from producers.plans.saved import recorded_plan

    within = session.principal.restriction
    plan = recorded_plan(board.store, batch_id, within)
    if plan is None:
        return board.templates.problem(request, session, 404, f"There is no plan {batch_id!r}.")
    progress = _progress(board.store.batch_counts([batch_id], within)[batch_id])
    return board.templates.render(
        request,
        "plan.html",
        session=session,
        title=f"Plan of set {plan.set}",
        plan=plan,
        progress=progress,
        symbols=SYMBOLS,
    )


def _progress(counts: dict[str, int]) -> dict[str, int]:
    done = sum(n for status, n in counts.items() if JobStatus(status).done)
    failed = counts.get(JobStatus.failed.value, 0)
    return {"done": done, "total": sum(counts.values()), "failed": failed}


# -- quota ------------------------------------------------------------------------------------


def _quota(board: Dashboard, session: Session) -> dict[str, Any]:
    """The quotas whose every account the signed-in token may see."""
    if board.reporter is None:
        return {"quotas": None}
    sees = session.principal.sees
    return {
        "quotas": [
            quota
            for quota in board.reporter.quotas()
            if all(sees(account["name"]) for account in quota["accounts"])
        ]
    }


def quota_page(request: Request, board: Board, session: SignedIn) -> Response:
    return board.templates.render(
        request, "quota.html", session=session, title="Quota", **_quota(board, session)
    )


def quota_fragment(request: Request, board: Board, session: SignedIn) -> Response:
    return board.templates.render(
        request, "_quota.html", session=session, fragment=True, **_quota(board, session)
    )


# -- the audit trail --------------------------------------------------------------------------

AUDIT_PER_PAGE = 100


def audit_page(request: Request, board: Board, session: Admin, after: Position) -> Response:
    """Who did what, newest first (admin only)."""
    events = audit.events(board.store.engine, limit=AUDIT_PER_PAGE + 1, before=after)
    next_url = None
    if len(events) > AUDIT_PER_PAGE:
        events = events[:AUDIT_PER_PAGE]
        following = cursors.encode((events[-1].at, events[-1].id))
        next_url = with_query(f"{PREFIX}/audit", cursor=following)
    return board.templates.render(
        request, "audit.html", session=session, title="Audit", events=events, next_url=next_url
    )


# -- the worker processes ---------------------------------------------------------------------


def workers_page(request: Request, board: Board, session: Admin) -> Response:
    """The live worker processes, from the registry their heartbeats keep (admin only)."""
    now = board.store.clock()
    processes = [
        {**dataclasses.asdict(p), "silent": max(0.0, (now - p.last_heartbeat).total_seconds())}
        for p in board.store.processes()
    ]
    return board.templates.render(
        request, "workers.html", session=session, title="Workers", processes=processes
    )


# -- static files -----------------------------------------------------------------------------


def asset(name: str, board: Board) -> Response:
    if name not in board.assets:
        return Response("not found", 404, media_type="text/plain")
    content, media_type = board.assets[name]
    headers = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}
    return Response(content, media_type=media_type, headers=headers)

"""The dashboard's routes (an APIRouter that ``provision.http.app.create_app`` mounts at ``/ui``).

Pages are full HTML documents; ``/ui/fragments/…`` are the parts of them that refresh every
``POLL_MS`` (``static/dashboard.js`` swaps them in). Every route but the sign-in page and the
static files needs a session (pages redirect to the sign-in page, fragments answer 401); every
POST needs the session's CSRF token and a same-origin ``Origin`` / ``Referer`` (else 403).
Handlers that touch the database are plain ``def``: they run in FastAPI's threadpool.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jinja2
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import SecretStr

from producers.events import parse_domain
from provision.dashboard.auth import (
    COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_SECONDS,
    Session,
    Signer,
    same_origin,
    secure,
)
from provision.dashboard.queries import (
    BAR_ORDER,
    BatchStats,
    Queries,
    decode_cursor,
    encode_cursor,
)
from worker import pauses
from worker.errors import InvalidRequestError
from worker.jobs.filters import JobFilter
from worker.jobs.models import ProvisioningJob
from worker.jobs.states import CANCELLABLE, JobStatus, Operation
from worker.jobs.store import JobStore
from worker.quota.report import Reporter
from worker.times import as_utc

PREFIX = "/ui"
#: How often the live parts of a page refresh.
POLL_MS = 2500
BATCHES_PER_PAGE = 20
#: A batch's expected completion is worked out again at most this often (its estimate reads
#: the unfinished jobs of every batch sharing the quota).
ETA_SECONDS = 10.0
JOBS_PER_PAGE = 50
HERE = Path(__file__).parent
STATIC = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}
#: No inline script or style, nothing from elsewhere, never framed.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
ACTIONS = {"retry": "queued again", "cancel": "cancelled"}
FILTER_FIELDS = ("status", "batch_id", "account", "code", "domain")


class _Invalid(Exception):
    """A filter field that does not parse; the page says which."""


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["ago"] = _ago
    env.filters["num"] = lambda n: f"{int(n):,}"
    return env


def _stamp(value: datetime | str | None) -> datetime | None:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return as_utc(value)


def _when(value: datetime | str | None) -> str:
    stamp = _stamp(value)
    return stamp.strftime("%Y-%m-%d %H:%M:%S UTC") if stamp is not None else "—"


def _ago(value: datetime | str | None) -> str:
    """``in 3 min`` / ``12 s ago``, relative to now."""
    stamp = _stamp(value)
    if stamp is None:
        return ""
    seconds = (stamp - datetime.now(UTC)).total_seconds()
    size = abs(seconds)
    if size < 90:
        text = f"{size:.0f} s"
    elif size < 5400:
        text = f"{size / 60:.0f} min"
    elif size < 2 * 86400:
        text = f"{size / 3600:.1f} h"
    else:
        text = f"{size / 86400:.0f} days"
    return f"in {text}" if seconds >= 0 else f"{text} ago"


def _safe_next(value: str | None) -> str:
    """Where to go after signing in or an action: a dashboard path only (no open redirect)."""
    if (
        value
        and value.startswith(PREFIX)
        and not value.startswith("//")
        and "\\" not in value
        and (len(value) == len(PREFIX) or value[len(PREFIX)] in "/?")
    ):
        return value
    return PREFIX


def _with_query(path: str, **params: Any) -> str:
    joiner = "&" if "?" in path else "?"
    return f"{path}{joiner}{urlencode(params)}"


async def _form(request: Request) -> dict[str, str]:
    """A URL-encoded form's fields (the last value of each); empty for any other body."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return {}
    body = (await request.body()).decode("utf-8", errors="replace")
    return {name: values[-1] for name, values in parse_qs(body, keep_blank_values=True).items()}


Form = Annotated[dict[str, str], Depends(_form)]


def _filter(values: Mapping[str, str]) -> JobFilter:
    """A JobFilter from form or query fields; blank fields are left out. Raises _Invalid."""
    given = {name: (values.get(name) or "").strip() or None for name in FILTER_FIELDS}
    status = None
    if given["status"] is not None:
        try:
            status = JobStatus(given["status"])
        except ValueError:
            raise _Invalid(f"status: no status {given['status']!r}") from None
    domain = None
    if given["domain"] is not None:
        try:
            domain = parse_domain(given["domain"])
        except InvalidRequestError as exc:
            raise _Invalid(f"domain: {exc.message}") from None
    return JobFilter(
        status=status,
        batch_id=given["batch_id"],
        domain=domain,
        account=given["account"],
        error_code=given["code"],
    )


def _filter_fields(where: JobFilter) -> dict[str, str]:
    """The form / query fields of a filter (the inverse of ``_filter``)."""
    values = {
        "status": where.status.value if where.status else None,
        "batch_id": where.batch_id,
        "account": where.account,
        "code": where.error_code,
        "domain": where.domain,
    }
    return {k: v for k, v in values.items() if v is not None}


def _steps(job: ProvisioningJob) -> list[dict[str, Any]]:
    """Each step of the job with its checkpoint: done (and what it recorded) or still to do."""
    spec, progress = job.spec, job.progress
    steps: list[dict[str, Any]] = []
    if spec.operation is Operation.provision_site:
        site = progress.site
        if site is None:
            state = "create sent, outcome not yet known" if progress.create_sent else "to do"
            steps.append({"name": "Site", "done": False, "detail": state})
        else:
            how = (
                "adopted: it was in the account already"
                if site.existed
                else "adopted: the domain was taken, by a site of ours"
                if site.adopted
                else "created"
            )
            steps.append(
                {"name": "Site", "done": True, "detail": f"{how} — {site.domain} ({site.timezone})"}
            )
        for goal in spec.goals:
            record = progress.goals.get(goal.natural_key)
            label = goal.event_name or goal.page_path or goal.natural_key
            steps.append(
                {
                    "name": f"Goal {goal.goal_type}: {label}",
                    "done": record is not None,
                    "detail": f"goal id {record.id}" if record is not None else "to do",
                }
            )
        for name in spec.shared_links:
            url = progress.shared_links.get(name)
            steps.append(
                {
                    "name": f"Shared link: {name}",
                    "done": url is not None,
                    "detail": "" if url is not None else "to do",
                    "url": url,
                    # Linked only if it is a web address (it is what Plausible answered).
                    "href": url if url and url.startswith(("https://", "http://")) else None,
                }
            )
    elif spec.operation is Operation.delete_site:
        done = bool(progress.deleted)
        detail = "deleted" if done else "to do"
        if progress.already_gone:
            detail = "already gone (our earlier delete went through)"
        steps.append({"name": "Delete site", "done": done, "detail": detail})
    else:
        found = progress.goal_id
        steps.append(
            {
                "name": "Find goal",
                "done": found is not None,
                "detail": f"goal id {found} (from {progress.goal_id_source})"
                if found is not None
                else "to do",
            }
        )
        steps.append(
            {
                "name": "Delete goal",
                "done": bool(progress.deleted),
                "detail": "deleted" if progress.deleted else "to do",
            }
        )
    return steps


def router(
    store: JobStore,
    *,
    token: SecretStr,
    reporter: Reporter | None = None,
    accounts: Collection[str] | None = None,
) -> APIRouter:
    """The dashboard on ``store``; sessions signed with ``token`` (none: development mode, no
    sign-in)."""
    signer = Signer(token.get_secret_value())
    queries = Queries(store)
    env = _environment()
    static = {name: (HERE / "static" / name).read_bytes() for name in STATIC}
    ui = APIRouter(prefix=PREFIX, include_in_schema=False)

    def session_of(request: Request) -> Session | None:
        return signer.session(request.cookies.get(COOKIE))

    def render(
        request: Request,
        template: str,
        *,
        session: Session | None,
        status: int = 200,
        fragment: bool = False,
        **context: Any,
    ) -> HTMLResponse:
        values = {
            "prefix": PREFIX,
            "poll_ms": POLL_MS,
            "csrf_field": CSRF_FIELD,
            "csrf": signer.csrf_token(session) if session is not None else "",
            "signed_in": session is not None and not signer.open,
            "nav": session is not None,
            "path": request.url.path,
            "here": str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""),
            "notice": _notice(request) if not fragment else None,
            "bar_order": [s.value for s in BAR_ORDER],
            "now": datetime.now(UTC),
            **context,
        }
        html = env.get_template(template).render(**values)
        return HTMLResponse(html, status, headers=SECURITY_HEADERS)

    def to_sign_in(request: Request) -> Response:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        target = _with_query(f"{PREFIX}/login", next=here)
        return RedirectResponse(target, 303, headers=SECURITY_HEADERS)

    def signed_out_fragment() -> Response:
        headers = {**SECURITY_HEADERS, "X-Signin": f"{PREFIX}/login"}
        return HTMLResponse("<p>Signed out.</p>", 401, headers=headers)

    def refused(request: Request, reason: str) -> HTMLResponse:
        return render(
            request,
            "message.html",
            session=None,
            status=403,
            title="Refused",
            message=f"This request was refused: {reason}.",
        )

    def checked_post(request: Request, form: dict[str, str]) -> Session | HTMLResponse:
        """The session of a POST from the dashboard itself, or the 403 page."""
        if not same_origin(request):
            return refused(request, "it did not come from this dashboard (Origin / Referer)")
        session = session_of(request)
        if session is None:
            return refused(request, "you are not signed in")
        given = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
        if not signer.csrf_matches(session, given):
            return refused(request, "its CSRF token is missing or wrong")
        return session

    def problem(request: Request, session: Session, status: int, message: str) -> HTMLResponse:
        return render(
            request,
            "message.html",
            session=session,
            status=status,
            title="Not found" if status == 404 else "Cannot do that",
            message=message,
        )

    etas: dict[str, tuple[float, datetime | None]] = {}

    def with_eta(stats: BatchStats) -> BatchStats:
        """The batch with its expected completion, from the quota scheduler's estimate; worked
        out at most every ``ETA_SECONDS`` per batch, however many pages poll."""
        if stats.done or reporter is None:
            return stats
        now = time.monotonic()
        cached = etas.get(stats.batch_id)
        if cached is None or now - cached[0] >= ETA_SECONDS:
            if len(etas) > 1000:
                etas.clear()
            cached = etas[stats.batch_id] = (now, reporter.batch_eta(stats.batch_id))
        return dataclasses.replace(stats, eta=cached[1])

    # -- sign-in ------------------------------------------------------------------------------

    @ui.get("/login")
    def login_page(request: Request, next: str | None = None) -> Response:
        if signer.open or session_of(request) is not None:
            return RedirectResponse(_safe_next(next), 303, headers=SECURITY_HEADERS)
        return render(
            request, "login.html", session=None, title="Sign in", next=_safe_next(next), error=None
        )

    @ui.post("/login")
    def login(request: Request, form: Form) -> Response:
        if not same_origin(request):
            return refused(request, "it did not come from this dashboard (Origin / Referer)")
        target = _safe_next(form.get("next"))
        if signer.open:
            return RedirectResponse(target, 303, headers=SECURITY_HEADERS)
        if not signer.token_matches(form.get("token", "")):
            return render(
                request,
                "login.html",
                session=None,
                title="Sign in",
                status=401,
                next=target,
                error="That is not the service's token.",
            )
        response = RedirectResponse(target, 303, headers=SECURITY_HEADERS)
        response.set_cookie(
            COOKIE,
            signer.new_session(),
            max_age=SESSION_SECONDS,
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=secure(request),
        )
        return response

    @ui.post("/logout")
    def logout(request: Request, form: Form) -> Response:
        checked = checked_post(request, form)
        if isinstance(checked, HTMLResponse):
            return checked
        response = RedirectResponse(f"{PREFIX}/login", 303, headers=SECURITY_HEADERS)
        response.delete_cookie(
            COOKIE, path=PREFIX, httponly=True, samesite="strict", secure=secure(request)
        )
        return response

    # -- batches ------------------------------------------------------------------------------

    def batches_context(cursor: str | None) -> dict[str, Any]:
        ids, following = queries.batch_page(limit=BATCHES_PER_PAGE, after=decode_cursor(cursor))
        stats = queries.batch_stats(ids)
        return {
            "batches": [with_eta(stats[b]) for b in ids if b in stats],
            "cursor": cursor or "",
            "next_cursor": encode_cursor(following),
        }

    @ui.get("")
    def batches_page(request: Request, cursor: str | None = None) -> Response:
        session = session_of(request)
        if session is None:
            return to_sign_in(request)
        return render(
            request, "batches.html", session=session, title="Batches", **batches_context(cursor)
        )

    @ui.get("/")
    def slash() -> Response:
        return RedirectResponse(PREFIX, 308)

    @ui.get("/fragments/batches")
    def batches_fragment(request: Request, cursor: str | None = None) -> Response:
        session = session_of(request)
        if session is None:
            return signed_out_fragment()
        return render(
            request, "_batches.html", session=session, fragment=True, **batches_context(cursor)
        )

    def batch_context(batch_id: str) -> dict[str, Any] | None:
        stats = queries.batch_stats([batch_id]).get(batch_id)
        if stats is None:
            return None
        return {"batch": with_eta(stats), "groups": queries.groups(batch_id)}

    @ui.get("/batches/{batch_id}")
    def batch_page(request: Request, batch_id: str) -> Response:
        session = session_of(request)
        if session is None:
            return to_sign_in(request)
        context = batch_context(batch_id)
        if context is None:
            return problem(request, session, 404, f"There is no batch {batch_id!r}.")
        return render(request, "batch.html", session=session, title=f"Batch {batch_id}", **context)

    @ui.get("/fragments/batches/{batch_id}")
    def batch_fragment(request: Request, batch_id: str) -> Response:
        session = session_of(request)
        if session is None:
            return signed_out_fragment()
        context = batch_context(batch_id)
        if context is None:
            return HTMLResponse("<p>No such batch.</p>", 404, headers=SECURITY_HEADERS)
        return render(request, "_batch.html", session=session, fragment=True, **context)

    # -- search -------------------------------------------------------------------------------

    @ui.get("/search")
    def search(request: Request, q: str = "", cursor: str | None = None) -> Response:
        session = session_of(request)
        if session is None:
            return to_sign_in(request)
        params = dict(request.query_params)
        error = None
        try:
            where = _filter(params)
        except _Invalid as exc:
            where, error = JobFilter(), str(exc)
        query = q.strip()
        domain = _as_domain(query) if query else None
        jobs: list[ProvisioningJob] = []
        following = None
        if error is None and query:
            # q is a job id, an idempotency key or a domain: one index lookup each.
            exact = store.find(query)
            if domain is not None and where.domain in (None, domain):
                jobs, following = queries.recent_jobs(
                    dataclasses.replace(where, domain=domain),
                    limit=JOBS_PER_PAGE,
                    before=decode_cursor(cursor),
                )
            if exact is not None and _matches(exact, where) and cursor is None:
                jobs = [exact, *[j for j in jobs if j.id != exact.id]]
        elif error is None:
            jobs, following = queries.recent_jobs(
                where, limit=JOBS_PER_PAGE, before=decode_cursor(cursor)
            )
        fields = _filter_fields(where)
        if domain is not None and error is None:
            fields.setdefault("domain", domain)
        next_url = None
        if following is not None:
            next_url = _with_query(
                f"{PREFIX}/search",
                **{k: v for k, v in params.items() if k != "cursor"},
                cursor=encode_cursor(following),
            )
        return render(
            request,
            "search.html",
            session=session,
            title="Search",
            q=query,
            where=_filter_fields(where),
            action_fields=fields,
            statuses=[s.value for s in JobStatus],
            accounts=sorted(accounts or []),
            jobs=jobs,
            error=error,
            next_url=next_url,
            bulk_query=urlencode(fields),
        )

    # -- a job --------------------------------------------------------------------------------

    def job_context(job: ProvisioningJob) -> dict[str, Any]:
        return {
            "job": job,
            "steps": _steps(job),
            "request_json": json.dumps(_shown_request(job.request), indent=2, sort_keys=True),
            "retryable": job.status == JobStatus.failed,
            "cancellable": job.status in CANCELLABLE,
        }

    @ui.get("/jobs/{ref}")
    def job_page(request: Request, ref: str) -> Response:
        session = session_of(request)
        if session is None:
            return to_sign_in(request)
        job = store.find(ref)
        if job is None:
            return problem(request, session, 404, f"There is no job {ref!r}.")
        return render(
            request, "job.html", session=session, title=f"Job {job.id}", **job_context(job)
        )

    @ui.get("/fragments/jobs/{ref}")
    def job_fragment(request: Request, ref: str) -> Response:
        session = session_of(request)
        if session is None:
            return signed_out_fragment()
        job = store.find(ref)
        if job is None:
            return HTMLResponse("<p>No such job.</p>", 404, headers=SECURITY_HEADERS)
        return render(request, "_job.html", session=session, fragment=True, **job_context(job))

    # -- quota --------------------------------------------------------------------------------

    def quota_context() -> dict[str, Any]:
        return {"quotas": reporter.quotas() if reporter is not None else None}

    @ui.get("/quota")
    def quota_page(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return to_sign_in(request)
        return render(request, "quota.html", session=session, title="Quota", **quota_context())

    @ui.get("/fragments/quota")
    def quota_fragment(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return signed_out_fragment()
        return render(request, "_quota.html", session=session, fragment=True, **quota_context())

    # -- actions ------------------------------------------------------------------------------

    @ui.get("/confirm")
    def confirm(request: Request, action: str = "", job: str = "", next: str = "") -> Response:
        """What an action would change, counted now, and the form that does it."""
        session = session_of(request)
        if session is None:
            return to_sign_in(request)
        if action not in ACTIONS:
            return problem(request, session, 422, "Choose retry or cancel.")
        statuses = [JobStatus.failed] if action == "retry" else list(CANCELLABLE)
        target = _safe_next(next)
        if job:
            found = store.find(job)
            if found is None:
                return problem(request, session, 404, f"There is no job {job!r}.")
            count = int(found.status in statuses)
            fields = {"job": found.id}
            described = [("job", found.id), ("domain", found.domain)]
        else:
            try:
                where = _filter(request.query_params)
            except _Invalid as exc:
                return problem(request, session, 422, str(exc))
            if where.empty:
                return problem(
                    request,
                    session,
                    422,
                    "Give at least one of status, batch, domain, account, error code: an empty "
                    "filter would match every job.",
                )
            count = queries.count(where, statuses)
            fields = _filter_fields(where)
            described = list(fields.items())
        return render(
            request,
            "confirm.html",
            session=session,
            title=f"Confirm {action}",
            action=action,
            verb=ACTIONS[action],
            count=count,
            statuses=[s.value for s in statuses],
            fields=fields,
            described=described,
            next=target,
        )

    @ui.post("/actions/{action}")
    def act(request: Request, action: str, form: Form) -> Response:
        checked = checked_post(request, form)
        if isinstance(checked, HTMLResponse):
            return checked
        session = checked
        if action not in ACTIONS:
            return problem(request, session, 404, "No such action.")
        job = (form.get("job") or "").strip()
        if job:
            ok = store.retry(job) if action == "retry" else store.cancel(job)
            changed = int(ok)
        else:
            try:
                where = _filter(form)
            except _Invalid as exc:
                return problem(request, session, 422, str(exc))
            if where.empty:
                return problem(request, session, 422, "An empty filter would match every job.")
            if action == "retry":
                changed = len(pauses.retry_matching(store, where).ids)
            else:
                changed = len(store.cancel_matching(where))
        target = _with_query(_safe_next(form.get("next")), done=action, n=changed)
        return RedirectResponse(target, 303, headers=SECURITY_HEADERS)

    # -- assets -------------------------------------------------------------------------------

    @ui.get("/static/{name}")
    def asset(name: str) -> Response:
        if name not in static:
            return Response("not found", 404, media_type="text/plain")
        headers = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}
        return Response(static[name], media_type=STATIC[name], headers=headers)

    return ui


def _as_domain(value: str) -> str | None:
    try:
        return parse_domain(value)
    except InvalidRequestError:
        return None


def _shown_request(request: dict[str, Any]) -> dict[str, Any]:
    """The request as the job page shows it: a ``callback_url`` without its user, query and
    fragment, where a receiver's secret may sit."""
    shown = dict(request)
    url = shown.get("callback_url")
    if isinstance(url, str):
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        hidden = "?…" if parts.query or parts.fragment else ""
        shown["callback_url"] = f"{parts.scheme}://{host}{port}{parts.path}{hidden}"
    return shown


def _matches(job: ProvisioningJob, where: JobFilter) -> bool:
    """The job passes every field the filter gives."""
    fields = {
        "status": job.status,
        "batch_id": job.batch_id,
        "account": job.account,
        "error_code": job.error_code,
        "domain": job.domain,
    }
    return all(getattr(where, name) in (None, value) for name, value in fields.items())


def _notice(request: Request) -> str | None:
    """The line an action's redirect asks the page to show: fixed words and a number only."""
    action = request.query_params.get("done")
    count = request.query_params.get("n", "")
    if action not in ACTIONS or not count.isdigit():
        return None
    n = int(count)
    return f"{n} job{'s' if n != 1 else ''} {ACTIONS[action]}."

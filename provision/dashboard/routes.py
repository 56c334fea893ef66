"""The dashboard's routes: an APIRouter that ``provision.http.app.create_app`` mounts at ``/ui``.

Pages are full HTML documents; ``/ui/fragments/…`` are the parts of them that refresh every
``render.POLL_MS`` (``static/dashboard.js`` swaps them in). Every route but the sign-in page and
the static files needs a session (``context.SignedIn``: pages redirect to the sign-in page,
fragments answer 401); every POST needs a same-origin ``Origin`` / ``Referer`` and, but the
sign-in form, the session's CSRF token (``context.Posted``: else 403). The handlers are
functions of ``pages``, ``signin`` and ``actions``; their dependencies (``context``) come from the
one ``Dashboard`` made here.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from pydantic import SecretStr

from provision.dashboard import actions, pages, signin
from provision.dashboard.auth import Sessions
from provision.dashboard.cache import Recent
from provision.dashboard.context import Dashboard, route_class
from provision.dashboard.paths import PREFIX
from provision.dashboard.queries import Queries
from provision.dashboard.render import Templates
from provision.tokens import LEGACY, Tokens, token_hash
from worker.jobs.store import JobStore
from worker.quota.report import Reporter

STATIC = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}
#: (method, path under PREFIX, handler).
ROUTES: tuple[tuple[str, str, Callable[..., Any]], ...] = (
    ("GET", "/login", signin.login_page),
    ("POST", "/login", signin.login),
    ("POST", "/logout", signin.logout),
    ("GET", "/sessions", signin.sessions_page),
    ("POST", "/sessions/{short}/revoke", signin.revoke),
    ("GET", "/audit", pages.audit_page),
    ("GET", "/workers", pages.workers_page),
    ("GET", "", pages.batches_page),
    ("GET", "/", pages.slash),
    ("GET", "/fragments/batches", pages.batches_fragment),
    ("GET", "/batches/{batch_id}", pages.batch_page),
    ("GET", "/fragments/batches/{batch_id}", pages.batch_fragment),
    ("GET", "/search", pages.search),
    ("GET", "/jobs/{ref}", pages.job_page),
    ("GET", "/fragments/jobs/{ref}", pages.job_fragment),
    ("GET", "/sites", pages.sites_page),
    ("GET", "/sites/{domain}", pages.site_page),
    ("GET", "/plans", pages.plans_page),
    ("GET", "/plans/{batch_id}", pages.plan_page),
    ("GET", "/quota", pages.quota_page),
    ("GET", "/fragments/quota", pages.quota_fragment),
    ("GET", "/confirm", actions.confirm),
    ("POST", "/actions/{action}", actions.act),
    ("GET", "/static/{name}", pages.asset),
)


def router(
    store: JobStore,
    *,
    token: SecretStr,
    reporter: Reporter | None = None,
    accounts: Collection[str] | None = None,
    tokens: Tokens | None = None,
) -> APIRouter:
    """The dashboard on ``store``: signed in with one of ``tokens`` (by default ``token``, an
    admin; none: development mode, open)."""
    if tokens is None:
        legacy = token.get_secret_value()
        tokens = Tokens({token_hash(legacy): LEGACY} if legacy else {})
    sessions = Sessions(store.engine, tokens)
    static = Path(__file__).parent / "static"
    board = Dashboard(
        store=store,
        sessions=sessions,
        queries=Queries(store),
        templates=Templates(sessions),
        reporter=reporter,
        accounts=tuple(accounts or ()),
        etas=Recent(pages.ETAS_KEPT, seconds=pages.ETA_SECONDS),
        assets={name: ((static / name).read_bytes(), kind) for name, kind in STATIC.items()},
    )
    ui = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=route_class(board))
    for method, path, handler in ROUTES:
        ui.add_api_route(path, handler, methods=[method])
    return ui

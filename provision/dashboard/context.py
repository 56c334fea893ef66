"""What the dashboard's handlers are given, as FastAPI dependencies: the ``Dashboard`` they serve
(``Board``), the session of a signed-in request (``SignedIn``), a POST that passed its checks
(``Posted``, ``SameOrigin``), its form (``Form``) and a page's position (``Position``).

A dependency that cannot give what it is asked for answers the request itself: it raises
``Answer`` with the response (the sign-in page, a 401 fragment, a 403 or 422 page), which the
dashboard's route class (``route_class``) returns instead of the handler's.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, cast
from urllib.parse import parse_qs

from fastapi import Depends
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute
from starlette.requests import Request

from provision import cursors
from provision.dashboard.auth import COOKIE, CSRF_FIELD, CSRF_HEADER, Session, Sessions, same_origin
from provision.dashboard.cache import Recent
from provision.dashboard.paths import SIGN_IN, here, is_fragment, with_query
from provision.dashboard.queries import Queries
from provision.dashboard.render import SECURITY_HEADERS, Templates, said, snippet
from worker.errors import InvalidRequestError
from worker.jobs.store import JobStore
from worker.quota.report import Reporter


@dataclass(frozen=True)
class Dashboard:
    """Everything the dashboard's handlers use, made once by ``router()``."""

    store: JobStore
    sessions: Sessions
    queries: Queries
    templates: Templates
    reporter: Reporter | None
    #: The accounts the search form offers.
    accounts: tuple[str, ...]
    #: Batch id -> its expected completion, worked out again once it is older than
    #: ``pages.ETA_SECONDS`` (the estimate reads every batch sharing the quota).
    etas: Recent[str, datetime | None]
    #: The static files, by name: (content, media type).
    assets: Mapping[str, tuple[bytes, str]]

    def session(self, request: Request) -> Session | None:
        return self.sessions.session(request.cookies.get(COOKIE))


class Answer(Exception):
    """Answer the request with ``response`` instead of the handler's."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def route_class(dashboard: Dashboard) -> type[APIRoute]:
    """The route class of one dashboard's routes: each request carries ``dashboard`` into the
    dependencies (``request.state``), and an ``Answer`` raised on the way is the response (the
    app's own handlers would turn an HTTPException into the API's JSON error)."""

    class DashboardRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handle = super().get_route_handler()

            async def answer(request: Request) -> Response:
                request.state.dashboard = dashboard
                try:
                    return await handle(request)
                except Answer as given:
                    return given.response

            return answer

    return DashboardRoute


async def _dashboard(request: Request) -> Dashboard:
    return cast(Dashboard, request.state.dashboard)


Board = Annotated[Dashboard, Depends(_dashboard)]


async def _signed_in(request: Request, board: Board) -> Session:
    """The request's session. Without one, a page answers with a redirect to the sign-in page
    (``next``: this page), a fragment with 401 and the sign-in page in ``X-Signin`` (which
    ``static/dashboard.js`` follows)."""
    session = board.session(request)
    if session is not None:
        return session
    if is_fragment(request):
        raise Answer(snippet("Signed out.", 401, **{"X-Signin": SIGN_IN}))
    target = with_query(SIGN_IN, next=here(request))
    raise Answer(RedirectResponse(target, 303, headers=SECURITY_HEADERS))


SignedIn = Annotated[Session, Depends(_signed_in)]


def _lacks(request: Request, board: Dashboard, session: Session, scope: str) -> None:
    if not session.principal.can(scope):
        reason = f"the token {session.principal.name!r} you signed in with lacks {scope}"
        raise Answer(board.templates.refused(request, reason))


async def _admin(request: Request, board: Board, session: SignedIn) -> Session:
    """The session of an admin token's sign-in, else the 403 page."""
    _lacks(request, board, session, "admin")
    return session


Admin = Annotated[Session, Depends(_admin)]


async def _operator(request: Request, board: Board, session: SignedIn) -> Session:
    """The session of a sign-in whose token may retry and cancel, else the 403 page."""
    _lacks(request, board, session, "jobs:operate")
    return session


Operator = Annotated[Session, Depends(_operator)]


async def _form(request: Request) -> dict[str, str]:
    """A URL-encoded form's fields (the last value of each); empty for any other body."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return {}
    body = (await request.body()).decode("utf-8", errors="replace")
    return {name: values[-1] for name, values in parse_qs(body, keep_blank_values=True).items()}


Form = Annotated[dict[str, str], Depends(_form)]


def _check_origin(request: Request, board: Dashboard) -> None:
    if not same_origin(request):
        reason = "it did not come from this dashboard (Origin / Referer)"
        raise Answer(board.templates.refused(request, reason))


async def _same_origin(request: Request, board: Board) -> None:
    """A POST from a page of the dashboard's own origin, else the 403 page."""
    _check_origin(request, board)


SameOrigin = Annotated[None, Depends(_same_origin)]


async def _posted(request: Request, board: Board, form: Form) -> Session:
    """The session of a POST from the dashboard itself (its origin, its session's CSRF token in
    the form or the header), else the 403 page."""
    _check_origin(request, board)
    session = board.session(request)
    if session is None:
        raise Answer(board.templates.refused(request, "you are not signed in"))
    given = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    if not board.sessions.csrf_matches(session, given):
        raise Answer(board.templates.refused(request, "its CSRF token is missing or wrong"))
    return session


Posted = Annotated[Session, Depends(_posted)]


async def _position(
    request: Request, board: Board, session: SignedIn, cursor: str | None = None
) -> cursors.Cursor | None:
    """Where a page of a list starts (``?cursor=``; None: the first page). A cursor this service
    did not make is the 422 page (a fragment: a 422 line), never the first page."""
    try:
        return cursors.decode(cursor)
    except InvalidRequestError as exc:
        if is_fragment(request):
            raise Answer(snippet(said(exc), 422)) from None
        raise Answer(board.templates.problem(request, session, 422, said(exc))) from None


Position = Annotated[cursors.Cursor | None, Depends(_position)]

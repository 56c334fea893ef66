"""Signing in to the dashboard with a token of the service, and out; the sessions list, where a
session can be revoked (see ``auth``). Every sign-in, refusal, sign-out and revocation goes to
the audit trail."""

from __future__ import annotations

import math

from fastapi.responses import RedirectResponse, Response
from starlette.requests import Request

from provision.dashboard.auth import COOKIE, SESSION_SECONDS, client_of, secure
from provision.dashboard.context import Board, Form, Posted, SameOrigin, SignedIn
from provision.dashboard.paths import PREFIX, SIGN_IN, safe_next
from provision.dashboard.render import SECURITY_HEADERS
from worker.jobs import audit


def login_page(request: Request, board: Board, next: str | None = None) -> Response:
    if board.sessions.open or board.session(request) is not None:
        return RedirectResponse(safe_next(next), 303, headers=SECURITY_HEADERS)
    return board.templates.render(
        request, "login.html", session=None, title="Sign in", next=safe_next(next), error=None
    )


def login(_: SameOrigin, request: Request, board: Board, form: Form) -> Response:
    target = safe_next(form.get("next"))
    if board.sessions.open:
        return RedirectResponse(target, 303, headers=SECURITY_HEADERS)
    client = client_of(request)
    presented = form.get("token", "").strip()
    wait = board.sessions.throttled(client, presented)
    if wait is not None:
        audit.record(board.store.engine, "unknown", "sign-in-throttled", detail=client)
        response = board.templates.render(
            request,
            "login.html",
            session=None,
            title="Sign in",
            status=429,
            next=target,
            error=f"Too many refused sign-ins: try again in {math.ceil(wait)} s.",
        )
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    principal = board.sessions.tokens.resolve(presented)
    if principal is None:
        board.sessions.refused(client, presented)
        audit.record(board.store.engine, "unknown", "sign-in-refused", detail=client)
        return board.templates.render(
            request,
            "login.html",
            session=None,
            title="Sign in",
            status=401,
            next=target,
            error="That is not a token of this service.",
        )
    agent = request.headers.get("user-agent", "")
    value = board.sessions.start(principal, client, agent)
    audit.record(board.store.engine, principal.name, "sign-in", detail=client)
    redirect = RedirectResponse(target, 303, headers=SECURITY_HEADERS)
    redirect.set_cookie(
        COOKIE,
        value,
        max_age=SESSION_SECONDS,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=secure(request),
    )
    return redirect


def logout(session: Posted, request: Request, board: Board) -> Response:
    board.sessions.revoke(session.principal, session.id)
    audit.record(board.store.engine, session.principal.name, "sign-out", target=session.id[:8])
    response = RedirectResponse(SIGN_IN, 303, headers=SECURITY_HEADERS)
    response.delete_cookie(
        COOKIE, path=PREFIX, httponly=True, samesite="strict", secure=secure(request)
    )
    return response


def sessions_page(request: Request, board: Board, session: SignedIn) -> Response:
    """The live sessions the signed-in token may see (an admin: every one), each revocable."""
    return board.templates.render(
        request,
        "sessions.html",
        session=session,
        title="Sessions",
        sessions=board.sessions.listed(session.principal),
        current=session.id,
    )


def revoke(short: str, request: Request, board: Board, session: Posted) -> Response:
    ended = board.sessions.revoke(session.principal, short)
    if ended is None:
        return board.templates.problem(request, session, 404, f"There is no session {short!r}.")
    audit.record(board.store.engine, session.principal.name, "session-revoked", target=short[:8])
    if ended.id == session.id:
        return RedirectResponse(SIGN_IN, 303, headers=SECURITY_HEADERS)
    return RedirectResponse(f"{PREFIX}/sessions", 303, headers=SECURITY_HEADERS)

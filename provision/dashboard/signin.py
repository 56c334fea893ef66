"""Signing in to the dashboard with the API token, and out: the session cookie (see ``auth``)."""

from __future__ import annotations

from fastapi.responses import RedirectResponse, Response
from starlette.requests import Request

from provision.dashboard.auth import COOKIE, SESSION_SECONDS, secure
from provision.dashboard.context import Board, Form, Posted, SameOrigin
from provision.dashboard.paths import PREFIX, SIGN_IN, safe_next
from provision.dashboard.render import SECURITY_HEADERS


def login_page(request: Request, board: Board, next: str | None = None) -> Response:
    if board.signer.open or board.session(request) is not None:
        return RedirectResponse(safe_next(next), 303, headers=SECURITY_HEADERS)
    return board.templates.render(
        request, "login.html", session=None, title="Sign in", next=safe_next(next), error=None
    )


def login(_: SameOrigin, request: Request, board: Board, form: Form) -> Response:
    target = safe_next(form.get("next"))
    if board.signer.open:
        return RedirectResponse(target, 303, headers=SECURITY_HEADERS)
    if not board.signer.token_matches(form.get("token", "")):
        return board.templates.render(
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
        board.signer.new_session(),
        max_age=SESSION_SECONDS,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=secure(request),
    )
    return response


def logout(_: Posted, request: Request) -> Response:
    response = RedirectResponse(SIGN_IN, 303, headers=SECURITY_HEADERS)
    response.delete_cookie(
        COOKIE, path=PREFIX, httponly=True, samesite="strict", secure=secure(request)
    )
    return response

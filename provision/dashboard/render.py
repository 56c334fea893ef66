"""How the dashboard answers with HTML: its Jinja environment and filters, ``Templates.render``
(a page or a fragment with the values every template reads), the message pages, and the
security headers every answer carries."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi.responses import HTMLResponse
from starlette.requests import Request

from provision.actions import DONE
from provision.dashboard.auth import CSRF_FIELD, Session, Sessions
from provision.dashboard.paths import PREFIX, here
from provision.dashboard.queries import BAR_ORDER
from worker.errors import InvalidRequestError
from worker.times import as_utc

#: How often the live parts of a page refresh.
POLL_MS = 2500
TEMPLATES = Path(__file__).parent / "templates"
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


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["ago"] = ago
    env.filters["num"] = lambda n: f"{int(n):,}"
    return env


def _stamp(value: datetime | str | None) -> datetime | None:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return as_utc(value)


def when(value: datetime | str | None) -> str:
    stamp = _stamp(value)
    return stamp.strftime("%Y-%m-%d %H:%M:%S UTC") if stamp is not None else "—"


def ago(value: datetime | str | None) -> str:
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


def sentence(text: str) -> str:
    """``text`` as a sentence of a page: capitalised, with a full stop."""
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "?", "!")) else f"{text}."


def said(exc: InvalidRequestError) -> str:
    """What a page says of a value it could not read: the message, after the field it names
    unless the message begins with it."""
    field = exc.field
    if field and not exc.message.startswith(field):
        return sentence(f"{field}: {exc.message}")
    return sentence(exc.message)


def notice(request: Request) -> str | None:
    """The line an action's redirect asks the page to show: fixed words and a number only."""
    action = request.query_params.get("done")
    count = request.query_params.get("n", "")
    if action not in DONE or not count.isdigit():
        return None
    n = int(count)
    return f"{n} job{'s' if n != 1 else ''} {DONE[action]}."


def snippet(text: str, status: int, **headers: str) -> HTMLResponse:
    """A fragment of one line, in place of a part of a page that cannot be shown."""
    return HTMLResponse(
        f"<p>{html.escape(text)}</p>", status, headers={**SECURITY_HEADERS, **headers}
    )


class Templates:
    """The dashboard's templates, rendered with the values every one of them reads."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions
        self.env = environment()

    def render(
        self,
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
            "csrf": self.sessions.csrf_token(session) if session is not None else "",
            "signed_in": session is not None and not self.sessions.open,
            "nav": session is not None,
            # Who is signed in, and what the page may offer them.
            "who": session.principal.name if session is not None else None,
            "can": session.principal.can if session is not None else (lambda scope: False),
            "path": request.url.path,
            "here": here(request),
            "notice": notice(request) if not fragment else None,
            "bar_order": [s.value for s in BAR_ORDER],
            "now": datetime.now(UTC),
            **context,
        }
        page = self.env.get_template(template).render(**values)
        return HTMLResponse(page, status, headers=SECURITY_HEADERS)

    def problem(
        self, request: Request, session: Session | None, status: int, message: str
    ) -> HTMLResponse:
        """The page that says why a request cannot be done (404: what it names is not there)."""
        return self.render(
            request,
            "message.html",
            session=session,
            status=status,
            title="Not found" if status == 404 else "Cannot do that",
            message=message,
        )

    def refused(self, request: Request, reason: str) -> HTMLResponse:
        """The 403 page of a POST that failed its checks."""
        return self.render(
            request,
            "message.html",
            session=None,
            status=403,
            title="Refused",
            message=f"This request was refused: {reason}.",
        )

"""The dashboard's sign-in, sessions and CSRF protection.

- **Sign-in** with a token of the service (``provision.tokens``): the dashboard then acts as that
  token, seeing only its accounts and doing only what its scopes allow. Refused attempts are
  counted per client and per token tried, in the status database (so every ``provision serve``
  process shares the count): past ``CLIENT_FAILURES`` or ``TOKEN_FAILURES`` in a
  ``THROTTLE_SECONDS`` window, sign-in answers 429 until the window ends.
- **Sessions** are rows (``dashboard_sessions``): listed, and revocable one by one. The cookie
  holds a random session id; the database holds only its SHA-256, so reading the table gives no
  session away. A session ends after ``SESSION_SECONDS``, when revoked, or when its token is
  removed from the configuration. ``HttpOnly``, ``SameSite=Strict``, ``Path=/ui``, and
  ``Secure`` when the dashboard is served over https.
- **CSRF**: every POST carries the session's CSRF token (an HMAC derived from the session)
  in a hidden form field or the ``X-CSRF-Token`` header, and comes from the dashboard's own
  origin (``Origin``, else ``Referer``; a request with neither, or ``Sec-Fetch-Site:
  cross-site``, is refused).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session as DbSession
from sqlmodel import col, select
from starlette.requests import Request

from provision.tokens import OPEN, Principal, Tokens, token_hash
from worker.jobs.db import insert_ignoring, table_of
from worker.jobs.models import DashboardSession, SigninFailures
from worker.times import as_utc

#: The session cookie's name.
COOKIE = "provisioner_ui"
#: How long a sign-in lasts.
SESSION_SECONDS = 12 * 3600
#: The form field and header that carry the CSRF token.
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
#: Refused sign-ins allowed per window: from one client, and with one token tried.
CLIENT_FAILURES = 5
TOKEN_FAILURES = 10
THROTTLE_SECONDS = 300
#: A session's last use is written at most this often.
TOUCH_SECONDS = 60


@dataclass(frozen=True)
class Session:
    """A signed-in browser: which session, as whom, and its CSRF token."""

    id: str
    principal: Principal
    csrf: str


#: Development mode (no token configured): one session, open to everything.
DEVELOPMENT = Session("development", OPEN, "development")


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class Sessions:
    """The dashboard's sessions and sign-in throttle, on the status database."""

    def __init__(
        self, engine: Engine, tokens: Tokens, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.engine = engine
        self.tokens = tokens
        self.clock = clock

    @property
    def open(self) -> bool:
        return self.tokens.open

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # -- signing in ---------------------------------------------------------------------------

    def throttled(self, client: str, presented: str) -> float | None:
        """Seconds until sign-in may be tried again from ``client`` or with ``presented``;
        None when it may be tried now."""
        window, left = self._window()
        keys = {_client_key(client): CLIENT_FAILURES, _token_key(presented): TOKEN_FAILURES}
        f = SigninFailures
        with DbSession(self.engine) as session:
            rows = session.exec(
                select(f).where(col(f.key).in_(list(keys)), col(f.window) == window)
            ).all()
        if any(row.failures >= keys[row.key] for row in rows):
            return left
        return None

    def refused(self, client: str, presented: str) -> None:
        """Count a refused sign-in against the client and the token tried."""
        window, _ = self._window()
        table = table_of(SigninFailures)
        with DbSession(self.engine) as session:
            for key in (_client_key(client), _token_key(presented)):
                session.execute(
                    insert_ignoring(table, self.engine.dialect.name, ["key", "window"]),
                    {"key": key, "window": window, "failures": 0},
                )
                session.execute(
                    update(table)
                    .where(table.c.key == key, table.c.window == window)
                    .values(failures=table.c.failures + 1)
                )
            # Windows over an hour old say nothing any more.
            session.execute(
                table.delete().where(table.c.window < window - 3600 // THROTTLE_SECONDS)
            )
            session.commit()

    def _window(self) -> tuple[int, float]:
        now = self.clock()
        window = math.floor(now / THROTTLE_SECONDS)
        return window, (window + 1) * THROTTLE_SECONDS - now

    def start(self, principal: Principal, client: str, user_agent: str) -> str:
        """A new session for ``principal``; returns the cookie's value (shown once)."""
        value = secrets.token_urlsafe(32)
        now = self._now()
        row = DashboardSession(
            id=_digest(value),
            token_name=principal.name,
            client=client[:64],
            user_agent=user_agent[:200],
            created_at=now,
            last_seen_at=now,
            expires_at=now + timedelta(seconds=SESSION_SECONDS),
        )
        with DbSession(self.engine) as session:
            session.add(row)
            session.commit()
        return value

    # -- signed in ----------------------------------------------------------------------------

    def session(self, value: str | None) -> Session | None:
        """The live session a cookie value names: not expired, not revoked, its token still
        configured."""
        if self.open:
            return DEVELOPMENT
        if not value:
            return None
        now = self._now()
        with DbSession(self.engine) as session:
            row = session.get(DashboardSession, _digest(value))
            if row is None or row.revoked_at is not None:
                return None
            expires = as_utc(row.expires_at)
            if expires is None or expires <= now:
                return None
            principal = self.tokens.named(row.token_name)
            if principal is None:
                return None
            seen = as_utc(row.last_seen_at)
            if seen is None or (now - seen).total_seconds() >= TOUCH_SECONDS:
                row.last_seen_at = now
                session.add(row)
                session.commit()
        return Session(row.id, principal, self._csrf(row.id))

    def _csrf(self, session_id: str) -> str:
        # Derived, not stored: the session's id is a secret only this database holds.
        return hmac.new(session_id.encode(), b"plausible-provisioner:csrf", "sha256").hexdigest()

    def csrf_token(self, session: Session) -> str:
        return session.csrf

    def csrf_matches(self, session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given).encode(), session.csrf.encode())

    # -- the sessions list ----------------------------------------------------------------------

    def listed(self, principal: Principal) -> list[DashboardSession]:
        """The live sessions ``principal`` may see: an admin's, every one; another token's,
        its own."""
        s = DashboardSession
        query = select(s).where(col(s.revoked_at).is_(None), col(s.expires_at) > self._now())
        if not principal.can("admin"):
            query = query.where(col(s.token_name) == principal.name)
        with DbSession(self.engine, expire_on_commit=False) as session:
            return list(session.exec(query.order_by(col(s.last_seen_at).desc())).all())

    def revoke(self, principal: Principal, short: str) -> DashboardSession | None:
        """End the live session whose id starts with ``short`` (at least 8 characters), if
        ``principal`` may see it; returns it."""
        s = DashboardSession
        if len(short) < 8:
            return None
        query = select(s).where(col(s.id).startswith(short), col(s.revoked_at).is_(None))
        if not principal.can("admin"):
            query = query.where(col(s.token_name) == principal.name)
        with DbSession(self.engine, expire_on_commit=False) as session:
            row = session.exec(query).first()
            if row is None:
                return None
            row.revoked_at = self._now()
            session.add(row)
            session.commit()
        return row


def _client_key(client: str) -> str:
    return f"client:{client}"[:128]


def _token_key(presented: str) -> str:
    # The token tried, by a short hash: never the token itself.
    return "token:" + token_hash(presented)[7:39]


def client_of(request: Request) -> str:
    """Who is signing in: the address the connection came from (the proxy's, behind one that
    uvicorn does not trust with X-Forwarded-For)."""
    return request.client.host if request.client else "unknown"


def own_origin(request: Request) -> str:
    """The dashboard's origin as this request reached it: scheme (https behind a proxy that
    uvicorn trusts with X-Forwarded-Proto) and Host."""
    host = request.headers.get("host") or request.url.netloc
    return f"{request.url.scheme}://{host}".lower()


def same_origin(request: Request) -> bool:
    """The request comes from a page of the dashboard's own origin."""
    if request.headers.get("sec-fetch-site", "").lower() == "cross-site":
        return False
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer")
        if not referer:
            return False
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    return origin.lower() == own_origin(request)


def secure(request: Request) -> bool:
    """Served over https: the cookie is then ``Secure``."""
    return request.url.scheme == "https"

"""The dashboard's sign-in, session cookie and CSRF protection.

- **Session cookie**: not the API token, a session signed with it: ``v1.<issued>.<nonce>.<mac>``
  where ``mac`` is HMAC-SHA256 keyed with ``PROVISIONER_API_TOKEN`` over the purpose, the time it
  was issued and a random nonce. The token itself never leaves the sign-in POST; a changed token
  ends every session; a session ends after ``SESSION_SECONDS``. ``HttpOnly``,
  ``SameSite=Strict``, ``Path=/ui``, and ``Secure`` when the dashboard is served over https.
- **CSRF**: every POST carries the session's CSRF token (HMAC of the session's nonce, keyed with
  the API token: per session, nothing stored server-side) in a hidden form field or the
  ``X-CSRF-Token`` header, and comes from the dashboard's own origin (``Origin``, else
  ``Referer``; a request with neither, or ``Sec-Fetch-Site: cross-site``, is refused).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request

#: The session cookie's name.
COOKIE = "provisioner_ui"
#: How long a sign-in lasts.
SESSION_SECONDS = 12 * 3600
#: The form field and header that carry the CSRF token.
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class Session:
    nonce: str
    issued: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Signer:
    """Signs sessions and derives their CSRF tokens with the API token as the HMAC key.

    Without a token (development mode) every request counts as signed in, and a random key made
    at start signs the CSRF tokens of the one development session."""

    def __init__(self, token: str, *, clock: Callable[[], float] = time.time) -> None:
        self.open = not token
        self._token = token.encode()
        self._key = self._token or secrets.token_bytes(32)
        self.clock = clock

    def _mac(self, purpose: str, payload: str) -> str:
        message = f"plausible-provisioner:dashboard:{purpose}:{payload}".encode()
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest())

    def token_matches(self, given: str) -> bool:
        """The sign-in form's token is the API token (compared in constant time)."""
        return bool(self._token) and hmac.compare_digest(given.strip().encode(), self._token)

    def new_session(self) -> str:
        payload = f"v1.{int(self.clock())}.{secrets.token_urlsafe(18)}"
        return f"{payload}.{self._mac('session', payload)}"

    def session(self, value: str | None) -> Session | None:
        """The session a cookie value holds, if it is ours, intact and not expired."""
        if self.open:
            return Session(nonce="development", issued=0)
        if not value or value.count(".") != 3:
            return None
        payload, _, mac = value.rpartition(".")
        if not hmac.compare_digest(mac.encode(), self._mac("session", payload).encode()):
            return None
        _version, issued, nonce = payload.split(".")
        if not issued.isdigit():
            return None
        age = self.clock() - int(issued)
        if not -60 <= age <= SESSION_SECONDS:
            return None
        return Session(nonce=nonce, issued=int(issued))

    def csrf_token(self, session: Session) -> str:
        return self._mac("csrf", session.nonce)

    def csrf_matches(self, session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(
            str(given).encode(), self.csrf_token(session).encode()
        )


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

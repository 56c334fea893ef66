"""The onboarding dashboard: server-rendered pages under ``/ui`` of ``provision serve``.

Batches (progress by status, rate, expected completion, started and finished), a batch's
failures grouped by error code (retry or cancel a group after a confirmation), search by
domain, idempotency key or job id with status and account filters, a job (its request, each
step's checkpoint, attempts and errors), and the quota. Pages refresh their live parts by short
polling of small HTML fragments. Sign-in with the API token, kept as a signed session in an
HttpOnly, SameSite=Strict cookie; every POST is CSRF-checked (see ``auth``). No build step, no
CDN: Jinja2 templates, one stylesheet and one small vanilla script shipped in the package.

Modules: ``routes`` (``router()``: the one ``Dashboard`` and the route table), ``pages``,
``signin`` and ``actions`` (the handlers), ``context`` (their dependencies: the ``Dashboard``,
the session, a POST's checks, a page's cursor), ``render`` (templates, security headers),
``queries`` (the reads), ``steps`` (what a job page shows), ``auth``, ``paths``, ``cache``.
It uses ``provision.cursors``, ``.filters`` and ``.actions`` like the CLI and the HTTP service,
and imports ``worker`` and ``producers``; ``provision.http`` imports it, never the reverse."""

from __future__ import annotations

from provision.dashboard.paths import PREFIX
from provision.dashboard.routes import router

__all__ = ["PREFIX", "owns", "router"]


def owns(path: str) -> bool:
    """The dashboard's paths: it checks its own session cookie instead of the bearer token."""
    return path == PREFIX or path.startswith(PREFIX + "/")

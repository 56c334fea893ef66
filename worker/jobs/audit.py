"""The audit trail: who did what, and when (``audit_events``).

Every operator action through any door (the CLI, the HTTP service, the dashboard) is recorded
by ``provision.actions`` as it happens: a retry or cancel of one job or of every job a filter
matches (with the filter and how many jobs it changed), the accounts a retry resumed, an apply;
the dashboard records its sign-ins, refusals, sign-outs and revoked sessions; and workers record
the pauses they start and the ones a changed key ends (``worker.pauses``). Never a token or a
key: a token appears by its name. The trail outlives job retention (nothing prunes it).
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from worker.jobs.models import AuditEvent
from worker.times import as_utc, utcnow


def process_actor(kind: str) -> str:
    """Who acts from this process, as the trail names it: ``cli:user@host``, ``worker:...``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{kind}:{user}@{socket.gethostname()}"


def record(
    engine: Engine,
    actor: str,
    action: str,
    *,
    target: str | None = None,
    filter: Mapping[str, Any] | None = None,
    count: int = 0,
    detail: str | None = None,
) -> None:
    event = AuditEvent(
        at=utcnow(),
        actor=actor[:128],
        action=action,
        target=target[:255] if target else None,
        filter=dict(filter) if filter else None,
        count=count,
        detail=detail[:500] if detail else None,
    )
    with Session(engine) as session:
        session.add(event)
        session.commit()


def events(
    engine: Engine, *, limit: int = 100, before: tuple[datetime, str] | None = None
) -> list[AuditEvent]:
    """The trail, newest first, ``limit`` at a time before the ``(at, id)`` of the last event
    of a page."""
    a = AuditEvent
    query = select(a)
    if before is not None:
        at, last = before
        query = query.where(or_(col(a.at) < at, and_(col(a.at) == at, col(a.id) < last)))
    query = query.order_by(col(a.at).desc(), col(a.id).desc()).limit(limit)
    with Session(engine, expire_on_commit=False) as session:
        found = list(session.exec(query).all())
    for event in found:
        event.at = as_utc(event.at) or event.at
    return found

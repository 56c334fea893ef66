"""Structured logs: one JSON object per line (or plain text), tagged with the job being run.

``configure(settings)`` sets up the root logger of a process (the CLI commands, a Celery worker
and its sweeper call it). ``settings.log_format`` picks the format: ``json``, ``text``, or
``auto``: JSON unless the stream is a terminal.

While ``Pipeline.run`` runs a job it binds the job's fields (``job_context``); a filter on the
handler copies them onto every record, so lines logged by the API client, the permits or the
store during the run carry ``job_id``, ``idempotency_key``, ``domain``, ``operation`` and
``account`` too. The context is a contextvar: each thread (and each Celery task) has its own.

Secrets never reach a log line: the API keys and the HTTP token known at ``configure`` time,
and anything shaped like ``Bearer <token>``, are replaced by ``[redacted]`` in every message
and traceback, as a last line of defence behind the code that never logs them.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import IO, Any

from worker.accounts import load_accounts
from worker.errors import ConfigurationError
from worker.settings import Settings

#: The fields a job's log lines carry, in this order.
JOB_FIELDS = ("job_id", "idempotency_key", "domain", "operation", "account")

REDACTED = "[redacted]"

#: Shorter "secrets" are left alone: scrubbing them would mangle ordinary words.
_MIN_SECRET_LENGTH = 6
#: A bearer credential in a header or message (short words after "bearer" are prose).
_BEARER = re.compile(r"(?i)\b(bearer)\s+[^\s\"',;]{8,}")

_job: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "provisioner_job", default=None
)


@contextlib.contextmanager
def job_context(**fields: str | None) -> Iterator[None]:
    """Tag the log lines of this block (in this thread or task) with ``fields``; nested blocks
    add to the enclosing one."""
    current = _job.get() or {}
    token = _job.set({**current, **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _job.reset(token)


class JobContextFilter(logging.Filter):
    """Copies the job being run onto each record (a handler filter: it sees every record the
    handler emits, whichever logger made it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in (_job.get() or {}).items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class Scrubber:
    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self.secrets = sorted(
            {s for s in secrets if len(s) >= _MIN_SECRET_LENGTH}, key=len, reverse=True
        )

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return _BEARER.sub(rf"\1 {REDACTED}", text)


class JsonFormatter(logging.Formatter):
    def __init__(self, scrub: Scrubber) -> None:
        super().__init__()
        self.scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": self.scrub(record.getMessage()),
        }
        for name in JOB_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = self.scrub(str(value))
        line["process"] = record.processName
        line["pid"] = record.process
        if record.exc_info:
            line["exception"] = self.scrub(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = self.scrub(record.exc_text)
        if record.stack_info:
            line["stack"] = self.scrub(self.formatStack(record.stack_info))
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self, scrub: Scrubber) -> None:
        super().__init__("%(asctime)s %(levelname)s [%(processName)s] %(name)s: %(message)s")
        self.scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        job = [f"{n}={getattr(record, n)}" for n in JOB_FIELDS if getattr(record, n, None)]
        if job:
            first, sep, rest = text.partition("\n")  # after the message, before a traceback
            text = f"{first} ({' '.join(job)}){sep}{rest}"
        return self.scrub(text)


class _Handler(logging.StreamHandler[IO[str]]):
    """Marks the handler ``configure`` installed."""


def known_secrets(settings: Settings) -> list[str]:
    """The API keys of every account configured here, the HTTP service's token and the
    webhook secret."""
    found = [
        settings.plausible_api_key.get_secret_value(),
        settings.api_token.get_secret_value(),
        settings.webhook_secret.get_secret_value(),
    ]
    try:
        accounts = list(load_accounts(settings))
    except ConfigurationError:
        return list(dict.fromkeys(s for s in found if s))
    for account in accounts:
        with contextlib.suppress(ConfigurationError):
            found.append(account.api_key().get_secret_value())
    return list(dict.fromkeys(s for s in found if s))


def wants_json(settings: Settings, stream: IO[str]) -> bool:
    if settings.log_format != "auto":
        return settings.log_format == "json"
    isatty = getattr(stream, "isatty", None)
    return not (callable(isatty) and isatty())


def configure(
    settings: Settings,
    *,
    stream: IO[str] | None = None,
    secrets: Iterable[str] | None = None,
    level: int | str = logging.INFO,
) -> logging.Handler:
    """Make the root logger write to ``stream`` (stderr) in the configured format, replacing
    its handlers. ``secrets`` defaults to ``known_secrets(settings)``. Returns the handler."""
    stream = stream if stream is not None else sys.stderr
    scrub = Scrubber(known_secrets(settings) if secrets is None else secrets)
    handler = _Handler(stream)
    handler.setFormatter(
        JsonFormatter(scrub) if wants_json(settings, stream) else TextFormatter(scrub)
    )
    handler.addFilter(JobContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # multiprocessing's logger (billiard's, in a Celery pool) does not propagate to the root.
    pool = logging.getLogger("multiprocessing")
    for old in [h for h in pool.handlers if isinstance(h, _Handler)]:
        pool.removeHandler(old)
    pool.addHandler(handler)
    pool.propagate = False
    logging.captureWarnings(True)  # warnings too become log lines, not raw stderr text
    # httpx logs every request at INFO (the API client logs its own line, at DEBUG), billiard
    # every pool child it starts: below DEBUG, only their warnings.
    quiet = logging.WARNING if root.getEffectiveLevel() > logging.DEBUG else logging.NOTSET
    for name in ("httpx", "httpcore", "multiprocessing"):
        logging.getLogger(name).setLevel(quiet)
    return handler

"""Completion webhooks: when a job reaches a final status, its JSON is POSTed to a URL.

The URL is the event's ``callback_url``, else its account's ``webhook_url`` (accounts file).
Delivery goes through an outbox, the ``webhook_deliveries`` table:

- the store writes the row in the same transaction that gives the job its final status
  (``Claims.succeed``, ``fail``, ``Actions.cancel``), with the body as it will be sent: a crash
  between the two cannot happen, and every attempt sends the same bytes under the same id;
- every worker's sweeper process runs a ``Sender`` thread that claims due rows with a lease (a
  conditional UPDATE, ``Outbox.claim_delivery``), POSTs them and records the answer; a worker
  that dies mid-delivery leaves a lease that runs out, and another worker sends again;
- 2xx is delivered; anything else (3xx, since redirects are never followed; 4xx; 5xx; no
  answer within ``PROVISIONER_WEBHOOK_TIMEOUT_SECONDS``) is tried again after an exponential
  backoff with jitter, up to ``PROVISIONER_WEBHOOK_MAX_ATTEMPTS`` attempts, then failed.

Delivery is at least once: a receiver that answers too late, or a worker that dies after the
receiver answered, gets the event again. The ``Provisioner-Event-Id`` header (and ``id`` in the
body) is the same every time, so receivers deduplicate on it.

Every request is signed, Stripe-style: ``Provisioner-Signature: t=<unix seconds>,v1=<hex>``,
where ``v1`` is HMAC-SHA256 with ``PROVISIONER_WEBHOOK_SECRET`` over ``<t>.<raw body>``
(``sign``; receivers check it as ``verify`` does). The secret is never logged or stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from worker.errors import ConfigurationError
from worker.jobs import view
from worker.jobs.models import ProvisioningJob, WebhookDelivery
from worker.jobs.states import DeliveryStatus, JobStatus
from worker.problems import explain
from worker.settings import Settings

if TYPE_CHECKING:
    from worker.accounts import Accounts
    from worker.jobs.outbox import DeliveryClaim, Outbox

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Provisioner-Signature"
EVENT_ID_HEADER = "Provisioner-Event-Id"
ATTEMPT_HEADER = "Provisioner-Delivery-Attempt"
USER_AGENT = "plausible-provisioner-webhooks/1"
#: A callback URL is at most this long.
MAX_URL_LENGTH = 2048
#: ``last_error`` is cut to this many characters.
MAX_ERROR_LENGTH = 300
#: The event type of each final status.
EVENT_TYPES = {
    JobStatus.succeeded: "job.succeeded",
    JobStatus.failed: "job.failed",
    JobStatus.cancelled: "job.cancelled",
}
#: How many deliveries one ``deliver_due`` sends at most before returning.
BATCH = 100


# -- URLs --------------------------------------------------------------------------------------


def allowed_hosts(settings: Settings) -> frozenset[str]:
    """``PROVISIONER_WEBHOOK_ALLOWED_HOSTS`` as a set of lower-case hosts; empty: any host."""
    return parse_hosts(settings.webhook_allowed_hosts)


def parse_hosts(value: str) -> frozenset[str]:
    return frozenset(
        host.strip().lower().rstrip(".") for host in value.split(",") if host.strip(" .")
    )


def host_allowed(host: str, allowed: Collection[str]) -> bool:
    """``host`` is in ``allowed``, or a subdomain of a ``*.domain`` entry; anything if empty."""
    if not allowed:
        return True
    host = host.lower().rstrip(".")
    return any(
        host == entry or (entry.startswith("*.") and host.endswith(entry[1:])) for entry in allowed
    )


def url_problem(value: object, allowed: Collection[str] = ()) -> str | None:
    """What is wrong with ``value`` as a callback URL, in words ("must use http or https"), or
    None: an absolute http(s) URL with a host, no user name or password, at most
    ``MAX_URL_LENGTH`` characters, and a host ``allowed`` (empty: any)."""
    if not isinstance(value, str) or not value.strip():
        return "must be a non-empty string"
    url = value.strip()
    if len(url) > MAX_URL_LENGTH:
        return f"is longer than {MAX_URL_LENGTH} characters"
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number in 0..65535
    except ValueError:
        return "is not a valid URL"
    if parts.scheme.lower() not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return "must not contain a user name or password"
    host = parts.hostname
    if not host:
        return "must name a host"
    if port == 0:
        return "must not use port 0"
    if not host_allowed(host, allowed):
        return f"host {host!r} is not allowed (PROVISIONER_WEBHOOK_ALLOWED_HOSTS)"
    return None


def check_settings(settings: Settings, accounts: Accounts) -> None:
    """ConfigurationError, in one line, if an account has a webhook_url and there is no secret
    to sign its deliveries with."""
    if settings.webhook_secret.get_secret_value():
        return
    for account in accounts:
        if account.webhook_url:
            raise ConfigurationError(
                f"account {account.name!r} has a webhook_url but PROVISIONER_WEBHOOK_SECRET is "
                "not set: workers cannot sign its webhooks"
            )


# -- signatures --------------------------------------------------------------------------------


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The hex HMAC-SHA256 of ``<timestamp>.<body>`` with ``secret``."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``Provisioner-Signature`` header of ``body`` sent at ``timestamp`` (unix seconds)."""
    return f"t={timestamp},v1={signature(secret, body, timestamp)}"


def verify(
    secret: str,
    header: str,
    body: bytes,
    *,
    tolerance: float = 300,
    now: Callable[[], float] = time.time,
) -> bool:
    """A receiver's check: ``header`` signs ``body`` with ``secret`` and its ``t`` is within
    ``tolerance`` seconds of now (a replayed old request fails). As in README's snippet."""
    fields: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        fields.setdefault(name, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs(now() - timestamp) > tolerance:
        return False
    expected = signature(secret, body, timestamp)
    return any(hmac.compare_digest(expected, candidate) for candidate in fields.get("v1", []))


# -- the body ----------------------------------------------------------------------------------


def new_delivery(job: ProvisioningJob, url: str, now: datetime) -> WebhookDelivery:
    """The outbox row for ``job``, just given its final status: the body is built now, once
    (``worker.jobs.view.webhook_event``: the job as every caller sees it, without ``webhook``)."""
    delivery = WebhookDelivery(
        job_id=job.id,
        type=EVENT_TYPES[JobStatus(job.status)],
        url=url,
        body="",
        next_attempt_at=now,
        created_at=now,
    )
    event = view.webhook_event(job, event_id=delivery.event_id, type=delivery.type, created=now)
    delivery.body = json.dumps(event.document(), separators=(",", ":"))
    return delivery


# -- delivery ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """What one POST came to: the receiver's status (None: no answer) and, unless it was 2xx,
    why it failed; ``final``: trying again cannot help (the URL is refused here)."""

    status: int | None
    error: str | None = None
    final: bool = False

    @property
    def delivered(self) -> bool:
        return self.error is None


@dataclass
class DeliveryReport:
    delivered: int = 0
    retried: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.delivered + self.retried + self.failed


def make_client(settings: Settings) -> httpx.Client:
    """The HTTP client deliveries go out on: short timeouts, no redirects, and nothing from the
    environment (no proxy settings, no ``.netrc`` credentials sent to a receiver)."""
    return httpx.Client(
        timeout=httpx.Timeout(settings.webhook_timeout_seconds),
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": USER_AGENT},
    )


def lease_seconds(settings: Settings) -> float:
    """How long a claimed delivery stays with its worker: well past one POST's timeouts."""
    return 3 * settings.webhook_timeout_seconds + 10


def backoff(settings: Settings, attempts: int) -> float:
    """Seconds before trying again after the ``attempts``-th attempt failed."""
    base, top = settings.webhook_backoff_base_seconds, settings.webhook_backoff_max_seconds
    ceiling = min(top, base * 2 ** max(attempts - 1, 0))
    return float(ceiling / 2 + random.uniform(0, ceiling / 2))


def post(
    client: httpx.Client,
    delivery: DeliveryClaim,
    secret: str,
    *,
    timeout: float,
    now: Callable[[], float] = time.time,
) -> Attempt:
    """One signed POST of ``delivery``; never raises for what the receiver or network does."""
    body = delivery.body.encode()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(secret, body, int(now())),
        EVENT_ID_HEADER: delivery.event_id,
        ATTEMPT_HEADER: str(delivery.attempts),
    }
    try:
        # Streamed and closed unread: only the status counts, and a receiver trickling a body
        # cannot hold the worker.
        with client.stream("POST", delivery.url, content=body, headers=headers) as response:
            status = response.status_code
    except httpx.TimeoutException:
        return Attempt(None, f"no answer within {timeout:g}s")
    except Exception as exc:  # connection refused, DNS, TLS...: a line without the URL
        reason = _one_line(str(exc), delivery.url, secret) or type(exc).__name__
        return Attempt(None, f"{type(exc).__name__}: {reason}")
    if 200 <= status < 300:
        return Attempt(status)
    if 300 <= status < 400:
        return Attempt(status, f"HTTP {status}: a redirect, not followed")
    return Attempt(status, f"HTTP {status}")


def _one_line(text: str, url: str, secret: str) -> str:
    """The first line of an error's text, without the URL (its query may hold a token) or the
    secret (belt and braces: no error text should hold it), cut to ``MAX_ERROR_LENGTH``."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    first = first.replace(url, "[url]").replace(secret, "[redacted]")
    return first[:MAX_ERROR_LENGTH]


def deliver_due(
    store: Outbox,
    settings: Settings,
    client: httpx.Client,
    *,
    limit: int = BATCH,
    keep_going: Callable[[], bool] = lambda: True,
    now: Callable[[], float] = time.time,
) -> DeliveryReport:
    """Claim and send due deliveries one at a time, up to ``limit`` (or until ``keep_going``
    says stop); records each outcome. Without a secret nothing is sent: rows wait."""
    report = DeliveryReport()
    secret = settings.webhook_secret.get_secret_value()
    if not secret:
        return report
    allowed = allowed_hosts(settings)
    timeout = settings.webhook_timeout_seconds
    while report.total < limit and keep_going():
        delivery = store.claim_delivery(
            lease_seconds=lease_seconds(settings), max_attempts=settings.webhook_max_attempts
        )
        if delivery is None:
            break
        problem = url_problem(delivery.url, allowed)
        if problem is not None:
            attempt = Attempt(None, f"not sent: the URL {problem}", final=True)
        else:
            attempt = post(client, delivery, secret, timeout=timeout, now=now)
        _record(store, settings, delivery, attempt, report)
    return report


def _record(
    store: Outbox,
    settings: Settings,
    delivery: DeliveryClaim,
    attempt: Attempt,
    report: DeliveryReport,
) -> None:
    where = f"webhook {delivery.event_id} (job {delivery.job_id})"
    attempts, most = delivery.attempts, settings.webhook_max_attempts
    if attempt.delivered:
        status, wait = DeliveryStatus.delivered, None
    elif attempt.final or attempts >= most:
        status, wait = DeliveryStatus.failed, None
    else:
        status, wait = DeliveryStatus.pending, backoff(settings, attempts)
    kept = store.finish_delivery(
        delivery,
        status=status,
        last_status=attempt.status,
        last_error=attempt.error,
        retry_in=wait,
    )
    if not kept:
        log.warning("%s: its lease ran out during the attempt; another worker sends it", where)
        return
    if status is DeliveryStatus.delivered:
        report.delivered += 1
        log.info("%s delivered (attempt %d, HTTP %s)", where, attempts, attempt.status)
    elif status is DeliveryStatus.failed:
        report.failed += 1
        log.warning(
            "%s failed after %d attempt(s): %s; not sent again", where, attempts, attempt.error
        )
    else:
        report.retried += 1
        log.info(
            "%s: %s; attempt %d of %d, next in %.1fs", where, attempt.error, attempts, most, wait
        )


class Sender(threading.Thread):
    """Sends due webhooks every ``sweep_interval_seconds`` for as long as ``owner`` (the sweeper
    thread that started it) lives, so a slow receiver never holds up the scheduler."""

    def __init__(self, store: Outbox, settings: Settings, owner: threading.Thread) -> None:
        super().__init__(name="provisioner-webhooks", daemon=True)
        self.store = store
        self.settings = settings
        self.owner = owner
        self._stop_event = threading.Event()

    def running(self) -> bool:
        return self.owner.is_alive() and not self._stop_event.is_set()

    def run(self) -> None:
        with make_client(self.settings) as client:
            while self.running():
                try:
                    deliver_due(self.store, self.settings, client, keep_going=self.running)
                except Exception as exc:  # an outage of the status table: try again later
                    problem = explain(exc, self.settings)
                    if problem is None:
                        log.exception("sending webhooks failed; retrying")
                    else:
                        log.warning("sending webhooks failed: %s; retrying", problem)
                self._stop_event.wait(self.settings.sweep_interval_seconds)

    def stop(self) -> None:
        self._stop_event.set()


def start_sender(store: Outbox, settings: Settings) -> Sender | None:
    """Start a ``Sender`` owned by the calling thread; None (and a warning if deliveries are
    waiting) when there is no secret to sign them with."""
    if not settings.webhook_secret.get_secret_value():
        try:
            waiting = store.pending_deliveries()
        except Exception:  # the status table is down: the sweeper's loop will say so
            waiting = 0
        if waiting:
            log.warning(
                "%d webhook(s) wait: set PROVISIONER_WEBHOOK_SECRET so workers can sign them",
                waiting,
            )
        return None
    sender = Sender(store, settings, threading.current_thread())
    sender.start()
    return sender

"""Completion webhooks: when a job reaches a final status, its JSON is POSTed to a URL.

The URL is the event's ``callback_url``, else its account's ``webhook_url`` (accounts file).
Delivery goes through an outbox, the ``webhook_deliveries`` table:

- the store writes the row in the same transaction that gives the job its final status
  (``Claims.succeed``, ``fail``, ``Actions.cancel``), with the body as it will be sent: a crash
  between the two cannot happen, and every attempt sends the same bytes under the same id;
- every worker's sweeper process runs a ``Sender`` thread that claims due rows with a lease (a
  conditional UPDATE, ``Outbox.claim_delivery``), POSTs them and records the answer; a worker
  that dies mid-delivery leaves a lease that runs out, and another worker sends again;
- before every attempt the URL is checked again (``worker.egress``: allowed host, public
  addresses only) and the request goes to the very address checked; a URL that is refused is
  failed at once, never sent;
- 2xx is delivered; anything else (3xx, since redirects are never followed; 4xx; 5xx; no
  answer within ``PROVISIONER_WEBHOOK_TIMEOUT_SECONDS``) is tried again after an exponential
  backoff with jitter, up to ``PROVISIONER_WEBHOOK_MAX_ATTEMPTS`` attempts, then failed. Only
  the status is kept: the receiver's body is never read, stored or shown.

Delivery is at least once: a receiver that answers too late, or a worker that dies after the
receiver answered, gets the event again. The ``Provisioner-Event-Id`` header (and ``id`` in the
body) is the same every time, so receivers deduplicate on it.

Every request is signed, Stripe-style: ``Provisioner-Signature: t=<unix seconds>,v1=<hex>``,
where ``v1`` is HMAC-SHA256 over ``<t>.<raw body>`` with the account's secret (the variable its
``webhook_secret_env`` names, else ``PROVISIONER_WEBHOOK_SECRET``; ``sign``; receivers check it
as ``verify`` does). A secret setting may hold several, comma-separated, newest first: each
signs, so the header carries one ``v1`` per secret while a rotation is under way. Secrets are
never logged or stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import SecretStr

from worker.accounts import Accounts, load_accounts
from worker.egress import Destination, Refused, Targets
from worker.errors import ConfigurationError
from worker.jobs import view
from worker.jobs.models import ProvisioningJob, WebhookDelivery
from worker.jobs.states import DeliveryStatus, JobStatus
from worker.problems import explain
from worker.settings import Settings

if TYPE_CHECKING:
    import httpx

    from worker.jobs.outbox import DeliveryClaim, Outbox

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Provisioner-Signature"
EVENT_ID_HEADER = "Provisioner-Event-Id"
ATTEMPT_HEADER = "Provisioner-Delivery-Attempt"
USER_AGENT = "plausible-provisioner-webhooks/1"
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


# -- configuration ---------------------------------------------------------------------------


def secrets_of(value: SecretStr | str) -> tuple[str, ...]:
    """A comma-separated secret setting as its secrets, newest first: during a rotation every
    request carries a signature by each (``sign``), and receivers accept any they know."""
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    return tuple(part.strip() for part in text.split(",") if part.strip())


def signing_secrets(settings: Settings, accounts: Accounts | None, account: str) -> tuple[str, ...]:
    """The secrets ``account``'s deliveries are signed with: its own (``webhook_secret_env`` in
    the accounts file) if it has them, else ``PROVISIONER_WEBHOOK_SECRET``'s."""
    known = accounts.by_name.get(account) if accounts is not None else None
    if known is not None and known.webhook_secret_env is not None:
        own = secrets_of(known.webhook_secret())
        if own:
            return own
    return secrets_of(settings.webhook_secret)


def check_settings(settings: Settings, accounts: Accounts) -> None:
    """ConfigurationError, in one line, if an account has a webhook_url and there is no secret
    to sign its deliveries with."""
    for account in accounts:
        if account.webhook_url and not signing_secrets(settings, accounts, account.name):
            own = f" nor {account.webhook_secret_env}" if account.webhook_secret_env else ""
            raise ConfigurationError(
                f"account {account.name!r} has a webhook_url but PROVISIONER_WEBHOOK_SECRET{own} "
                "is not set: workers cannot sign its webhooks"
            )


# -- signatures --------------------------------------------------------------------------------


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The hex HMAC-SHA256 of ``<timestamp>.<body>`` with ``secret``."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secrets: str | Sequence[str], body: bytes, timestamp: int) -> str:
    """The ``Provisioner-Signature`` header of ``body`` sent at ``timestamp`` (unix seconds):
    one ``v1`` per secret."""
    keys = (secrets,) if isinstance(secrets, str) else secrets
    return ",".join([f"t={timestamp}", *(f"v1={signature(key, body, timestamp)}" for key in keys)])


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


def make_client(settings: Settings, *, verify: ssl.SSLContext | bool = True) -> httpx.Client:
    """The HTTP client deliveries go out on: short timeouts, no redirects, and nothing from the
    environment (no proxy settings, no ``.netrc`` credentials sent to a receiver). ``verify``:
    the certificate authorities trusted (True: the system's)."""
    import httpx  # here, not above: a process that only reads the table need not load it

    return httpx.Client(
        verify=verify,
        timeout=httpx.Timeout(settings.webhook_timeout_seconds),
        follow_redirects=False,
        trust_env=False,
        # A connection is made to the address just checked (``worker.egress``) and never kept:
        # a pooled one would be reused for another host name on the same address.
        limits=httpx.Limits(max_keepalive_connections=0),
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
    destination: Destination,
    secrets: Sequence[str],
    *,
    timeout: float,
    now: Callable[[], float] = time.time,
) -> Attempt:
    """One signed POST of ``delivery`` to ``destination`` (the address checked, under the URL's
    own host name); never raises for what the receiver or network does."""
    import httpx

    body = delivery.body.encode()
    headers = {
        "Host": destination.host_header,
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(secrets, body, int(now())),
        EVENT_ID_HEADER: delivery.event_id,
        ATTEMPT_HEADER: str(delivery.attempts),
    }
    request = client.build_request(
        "POST",
        destination.url,
        content=body,
        headers=headers,
        extensions=destination.request_extensions(),
    )
    try:
        # Streamed and closed unread: only the status counts (the receiver's body is never
        # stored or shown), and a receiver trickling a body cannot hold the worker.
        response = client.send(request, stream=True)
        response.close()
        status = response.status_code
    except httpx.TimeoutException:
        return Attempt(None, f"no answer within {timeout:g}s")
    except Exception as exc:  # connection refused, TLS...: a line without the URL or a secret
        hidden = (delivery.url, destination.url, *secrets)
        reason = _one_line(str(exc), hidden) or type(exc).__name__
        return Attempt(None, f"{type(exc).__name__}: {reason}")
    if 200 <= status < 300:
        return Attempt(status)
    if 300 <= status < 400:
        return Attempt(status, f"HTTP {status}: a redirect, not followed")
    return Attempt(status, f"HTTP {status}")


def _one_line(text: str, hidden: Iterable[str]) -> str:
    """The first line of an error's text without any of ``hidden`` (the URL, whose query may
    hold a token; the secrets, belt and braces), cut to ``MAX_ERROR_LENGTH``."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    for value in hidden:
        if value:
            first = first.replace(value, "[redacted]")
    return first[:MAX_ERROR_LENGTH]


def deliver_due(
    store: Outbox,
    settings: Settings,
    client: httpx.Client,
    *,
    accounts: Accounts | None = None,
    limit: int = BATCH,
    keep_going: Callable[[], bool] = lambda: True,
    now: Callable[[], float] = time.time,
) -> DeliveryReport:
    """Claim and send due deliveries one at a time, up to ``limit`` (or until ``keep_going``
    says stop); records each outcome. ``accounts`` give their own signing secrets. Without any
    secret nothing is sent: rows wait."""
    report = DeliveryReport()
    if not can_sign(settings, accounts):
        return report
    targets = Targets.of(settings)
    timeout = settings.webhook_timeout_seconds
    while report.total < limit and keep_going():
        delivery = store.claim_delivery(
            lease_seconds=lease_seconds(settings), max_attempts=settings.webhook_max_attempts
        )
        if delivery is None:
            break
        secrets = signing_secrets(settings, accounts, delivery.account)
        try:
            if not secrets:
                raise Refused(f"no signing secret for account {delivery.account!r}", final=False)
            destination = targets.destination(delivery.url)
        except Refused as refused:
            attempt = Attempt(None, f"not sent: {refused}", final=refused.final)
        else:
            attempt = post(client, delivery, destination, secrets, timeout=timeout, now=now)
        _record(store, settings, delivery, attempt, report)
    return report


def can_sign(settings: Settings, accounts: Accounts | None) -> bool:
    """Some delivery can be signed: there is a secret, the process's or an account's."""
    if secrets_of(settings.webhook_secret):
        return True
    return accounts is not None and any(
        signing_secrets(settings, accounts, account.name) for account in accounts
    )


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

    def __init__(
        self, store: Outbox, settings: Settings, accounts: Accounts, owner: threading.Thread
    ) -> None:
        super().__init__(name="provisioner-webhooks", daemon=True)
        self.store = store
        self.settings = settings
        self.accounts = accounts
        self.owner = owner
        self._stop_event = threading.Event()

    def running(self) -> bool:
        return self.owner.is_alive() and not self._stop_event.is_set()

    def run(self) -> None:
        with make_client(self.settings) as client:
            while self.running():
                try:
                    deliver_due(
                        self.store,
                        self.settings,
                        client,
                        accounts=self.accounts,
                        keep_going=self.running,
                    )
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
    accounts = load_accounts(settings)
    if not can_sign(settings, accounts):
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
    sender = Sender(store, settings, accounts, threading.current_thread())
    sender.start()
    return sender

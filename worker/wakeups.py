"""Wake-ups: the scheduler sleeps until something happens instead of polling several times a
second.

Whoever makes work for the scheduler says so: a producer that enqueued jobs, an operator's
retry, a worker that finished or handed back a job. In one process (embedded mode, a worker's
own threads) that sets a ``Wakeup`` directly; across processes and hosts it is one message on a
channel every worker's ``Wakeup`` listens to. The channel has two transports, chosen by
configuration (``PROVISIONER_WAKEUPS``, ``transport_for``): a PUBLISH on the broker's Redis
(``CHANNEL``), or a NOTIFY on the PostgreSQL status database (``PG_CHANNEL``), which a worker
hears on a connection of its own (LISTEN). A wake-up is only a hint: nothing is lost when one
is missed (the channel down, no channel at all), since the scheduler still looks on its own
every ``PROVISIONER_IDLE_POLL_SECONDS`` and when a quota window opens, and while its channel is
lost it is woken every ``RESUBSCRIBE_SECONDS`` as the listener tries again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from worker.jobs.pgurl import psycopg_conninfo
from worker.settings import Settings

log = logging.getLogger(__name__)

#: The Redis pub/sub channel every worker listens on.
CHANNEL = "provisioner:wake"
#: The PostgreSQL LISTEN/NOTIFY channel (an identifier: no colon).
PG_CHANNEL = "provisioner_wake"
#: How long a lost subscription waits before subscribing again, and an announcer that failed
#: before it tries again (so an outage does not slow every enqueue).
RESUBSCRIBE_SECONDS = 5.0
#: A listener's blocking read returns this often, only to notice stop().
READ_SECONDS = 5.0


class Transport(Protocol):
    """One way wake-ups cross processes."""

    def publish(self) -> None:
        """Send one wake-up to every listener; raises when the channel is unreachable."""
        ...

    def listen(
        self, heard: Callable[[], None], subscribed: Callable[[], None], stopped: threading.Event
    ) -> None:
        """Call ``subscribed`` once listening, then ``heard`` for every wake-up, until
        ``stopped`` is set; raises when the connection is lost."""
        ...


def redis_url_of(broker_url: str | None) -> str | None:
    """The broker's URL when it is Redis (pub/sub is available there), else None."""
    if broker_url and broker_url.split("://", 1)[0].lower() in ("redis", "rediss"):
        return broker_url
    return None


def transport_for(
    broker_url: str | None, database_url: str | None = None, choice: str = "auto"
) -> Transport | None:
    """The wake-up channel across processes: ``choice`` "redis" (the broker's, when it is Redis),
    "postgres" (the status database's, when it is PostgreSQL), "none", or "auto": Redis when the
    broker is Redis, else PostgreSQL when the status database is. None: no channel."""
    redis_url = redis_url_of(broker_url) if choice in ("auto", "redis") else None
    if redis_url:
        return RedisTransport(redis_url)
    conninfo = psycopg_conninfo(database_url) if choice in ("auto", "postgres") else None
    if conninfo is not None:  # empty: all of libpq's defaults
        return PostgresTransport(conninfo)
    if choice in ("redis", "postgres"):
        log.warning(
            "PROVISIONER_WAKEUPS=%s: no %s to listen on (the %s URL is not one this channel can "
            "use); waking on the idle poll only",
            choice,
            "Redis broker" if choice == "redis" else "PostgreSQL status database",
            "broker" if choice == "redis" else "database",
        )
    return None


def transport_of(settings: Settings) -> Transport | None:
    """The wake-up channel ``settings`` choose (``PROVISIONER_WAKEUPS``)."""
    return transport_for(settings.broker_url, settings.database_url, settings.wakeups)


class RedisTransport:
    """PUBLISH and SUBSCRIBE on ``CHANNEL`` of the broker's Redis."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client: Any = None
        self._lock = threading.Lock()

    def publish(self) -> None:
        with self._lock:
            if self._client is None:
                import redis

                self._client = redis.Redis.from_url(
                    self.url, socket_connect_timeout=1, socket_timeout=1
                )
            client = self._client
        client.publish(CHANNEL, b"1")

    def listen(
        self, heard: Callable[[], None], subscribed: Callable[[], None], stopped: threading.Event
    ) -> None:
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=5)
        with client.pubsub(ignore_subscribe_messages=True) as pubsub:
            pubsub.subscribe(CHANNEL)
            first = pubsub.get_message(timeout=5.0)  # reads the subscription's confirmation
            subscribed()
            if first is not None:
                heard()
            # A blocking read: no CPU while nothing is published.
            while not stopped.is_set():
                if pubsub.get_message(timeout=READ_SECONDS) is not None:
                    heard()


class PostgresTransport:
    """NOTIFY and LISTEN on ``PG_CHANNEL`` of the status database, each on a connection of its
    own outside the engine's pool (a listening connection is never given back)."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self._conn: Any = None
        self._pid = 0
        self._lock = threading.Lock()

    def publish(self) -> None:
        import psycopg

        with self._lock:
            if self._conn is not None and (self._conn.closed or self._pid != os.getpid()):
                # A forked child never closes its parent's connection: that would end it.
                self._conn = None
            if self._conn is None:
                self._conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=1)
                self._pid = os.getpid()
            try:
                self._conn.execute("SELECT pg_notify(%s, '')", (PG_CHANNEL,))
            except psycopg.Error:
                self._conn.close()
                self._conn = None
                raise

    def listen(
        self, heard: Callable[[], None], subscribed: Callable[[], None], stopped: threading.Event
    ) -> None:
        import psycopg

        # TCP keepalives: a dead server or network is noticed within about a minute on this
        # idle connection, which otherwise would wait on a socket nobody writes to.
        with psycopg.connect(
            self.conninfo,
            autocommit=True,
            connect_timeout=5,
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
        ) as conn:
            conn.execute(f"LISTEN {PG_CHANNEL}")
            subscribed()
            # A blocking wait on the socket: no CPU while nothing is notified.
            while not stopped.is_set():
                for _ in conn.notifies(timeout=READ_SECONDS, stop_after=1):
                    heard()


class Wakeup:
    """An event the scheduler waits on; set in this process or by a message on a channel."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._stopped = threading.Event()
        #: Set while a listener is subscribed to its channel.
        self.subscribed = threading.Event()

    def set(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds or until set; True if set (and clears it)."""
        woken = self._event.wait(timeout)
        self._event.clear()
        return woken

    def listen(self, transport: Transport) -> None:
        """Also wake on every wake-up sent over ``transport`` (a daemon thread)."""
        threading.Thread(
            target=self._listen, args=(transport,), name="wakeup-listener", daemon=True
        ).start()

    def stop(self) -> None:
        self._stopped.set()
        self._event.set()

    def _subscribed(self) -> None:
        self.subscribed.set()
        # Work announced before the subscription was not heard: look once more.
        self._event.set()

    def _listen(self, transport: Transport) -> None:
        while not self._stopped.is_set():
            try:
                transport.listen(self._event.set, self._subscribed, self._stopped)
            except Exception as exc:  # a hint channel: never fatal
                log.debug("wake-up channel unavailable (%s); polling meanwhile", exc)
            self.subscribed.clear()
            self._event.set()  # something may have been missed: look now, and again each retry
            self._stopped.wait(RESUBSCRIBE_SECONDS)


def listening(settings: Settings, wakeup: Wakeup | None = None) -> Wakeup:
    """``wakeup`` (a new one by default), also woken by every wake-up other processes send over
    the channel ``settings`` choose, if any."""
    wakeup = Wakeup() if wakeup is None else wakeup
    transport = transport_of(settings)
    if transport is not None:
        wakeup.listen(transport)
    return wakeup


class Announcer:
    """Sends a wake-up over a transport; errors are swallowed (the poll catches up)."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._quiet_until = 0.0

    def __call__(self) -> None:
        if time.monotonic() < self._quiet_until:
            return
        try:
            self.transport.publish()
        except Exception as exc:  # a hint: the poll catches up
            log.debug("could not announce new work (%s)", exc)
            self._quiet_until = time.monotonic() + RESUBSCRIBE_SECONDS


def announcer(transport: Transport | None) -> Callable[[], None] | None:
    """What a process making work calls once it has made it, or None (no channel)."""
    return Announcer(transport) if transport else None

"""Wake-ups: the scheduler sleeps until something happens instead of polling several times a
second.

Whoever makes work for the scheduler says so: a producer that enqueued jobs, an operator's
retry, a worker that finished or handed back a job. In one process (embedded mode, a worker's
own threads) that sets a ``Wakeup`` directly; across processes and hosts it is one PUBLISH on
the broker's Redis (``CHANNEL``), which every worker's ``Wakeup`` listens to. A wake-up is only
a hint: nothing is lost when one is missed (Redis down, a non-Redis broker), since the scheduler
still looks on its own every ``PROVISIONER_IDLE_POLL_SECONDS`` and when a quota window opens.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: The Redis pub/sub channel every worker listens on.
CHANNEL = "provisioner:wake"
#: How long a lost subscription waits before subscribing again, and an announcer that failed
#: before it tries again (so a Redis outage does not slow every enqueue).
RESUBSCRIBE_SECONDS = 5.0


def redis_url_of(broker_url: str | None) -> str | None:
    """The broker's URL when it is Redis (pub/sub is available there), else None."""
    if broker_url and broker_url.split("://", 1)[0].lower() in ("redis", "rediss"):
        return broker_url
    return None


class Wakeup:
    """An event the scheduler waits on; set in this process or by a message on ``CHANNEL``."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._stopped = threading.Event()

    def set(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds or until set; True if set (and clears it)."""
        woken = self._event.wait(timeout)
        self._event.clear()
        return woken

    def listen(self, redis_url: str) -> None:
        """Also wake on every message published on ``CHANNEL`` (a daemon thread)."""
        threading.Thread(
            target=self._listen, args=(redis_url,), name="wakeup-listener", daemon=True
        ).start()

    def stop(self) -> None:
        self._stopped.set()
        self._event.set()

    def _listen(self, redis_url: str) -> None:
        import redis

        while not self._stopped.is_set():
            try:
                client = redis.Redis.from_url(redis_url, socket_connect_timeout=5)
                with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    pubsub.subscribe(CHANNEL)
                    # A blocking read: no CPU while nothing is published. The timeout only
                    # lets the thread notice stop().
                    while not self._stopped.is_set():
                        if pubsub.get_message(timeout=5.0) is not None:
                            self._event.set()
            except Exception as exc:  # a hint channel: never fatal
                log.debug("wake-up channel unavailable (%s); polling meanwhile", exc)
                self._event.set()  # something may have been missed
                self._stopped.wait(RESUBSCRIBE_SECONDS)


class Announcer:
    """Publishes a wake-up on ``CHANNEL``; errors are swallowed (the poll catches up)."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self._client: Any = None
        self._lock = threading.Lock()
        self._quiet_until = 0.0

    def __call__(self) -> None:
        if time.monotonic() < self._quiet_until:
            return
        try:
            with self._lock:
                if self._client is None:
                    import redis

                    self._client = redis.Redis.from_url(
                        self.redis_url, socket_connect_timeout=1, socket_timeout=1
                    )
                client = self._client
            client.publish(CHANNEL, b"1")
        except Exception as exc:  # a hint: the poll catches up
            log.debug("could not announce new work (%s)", exc)
            self._quiet_until = time.monotonic() + RESUBSCRIBE_SECONDS


def announcer(broker_url: str | None) -> Callable[[], None] | None:
    """What a process publishing to this broker calls once it has made work, or None."""
    url = redis_url_of(broker_url)
    return Announcer(url) if url else None

"""One small cache for what the dashboard remembers between requests (a batch's submission
time, first start and last finish, its expected completion).

Bounded, so a service that has seen many batches keeps its memory; least recently used first
out, so the batches being watched stay; optionally time-limited, for a value that drifts (an
expected completion). No library: ``functools.lru_cache`` has no expiry and is keyed by the
call's arguments, and this is the only cache the dashboard needs.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Recent(Generic[K, V]):
    """At most ``size`` entries, each kept at most ``seconds`` (None: until pushed out by newer
    ones). Thread-safe: the dashboard's handlers run in FastAPI's threadpool."""

    def __init__(
        self,
        size: int,
        *,
        seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.size = size
        self.seconds = seconds
        self.clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def _entry(self, key: K) -> tuple[float, V] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if self.seconds is not None and self.clock() - entry[0] >= self.seconds:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry

    def __contains__(self, key: object) -> bool:
        """Whether a value (None included) is kept for ``key`` and has not expired."""
        return self._entry(key) is not None  # type: ignore[arg-type]

    def get(self, key: K) -> V | None:
        """The value kept for ``key``; None if there is none (or it expired)."""
        entry = self._entry(key)
        return entry[1] if entry is not None else None

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._entries[key] = (self.clock(), value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        """The value kept for ``key``, else ``make()`` (called outside the lock: it may read the
        database), kept. A value may be None."""
        entry = self._entry(key)
        if entry is not None:
            return entry[1]
        value = make()
        self.put(key, value)
        return value

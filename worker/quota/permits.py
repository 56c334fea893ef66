"""One job's permits: the gate every request of the job passes before it is sent.

The scheduler reserves the calls a job still needs when it dispatches it, in the windows a
request sent then would be charged to. Each request spends one permit in every window it may be
counted in. When a window rolls over (or retries need more than was reserved), the job takes
what it still needs in the new window at once, so it runs to its end without waiting; if even
that does not fit, it raises QuotaWait before sending anything and goes back to the scheduler
at its checkpoint. Permits left over when the job ends go back to windows still open.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from worker import metrics
from worker.accounts import Quota
from worker.errors import PlausibleError, QuotaWait, RateLimitedError
from worker.jobs.states import Priority
from worker.quota import windows
from worker.quota.limiter import Limiter
from worker.quota.windows import Window

log = logging.getLogger(__name__)


class JobPermits:
    """The ``RequestGate`` of one run of one job."""

    def __init__(
        self,
        limiter: Limiter,
        quota: Quota,
        priority: Priority,
        reserved: dict[str, int],
        needed: Callable[[], int],
    ) -> None:
        self.limiter = limiter
        self.quota = quota
        self.priority = priority
        self.held: dict[Window, int] = {}
        for key, n in reserved.items():
            try:
                self.held[Window.from_key(key)] = n
            except ValueError:
                log.warning("ignoring a malformed permit %r", key)
        self.needed = needed
        self.sent_at = 0.0

    def before_request(self) -> None:
        at = self.limiter.clock()
        span = self.limiter.span(self.quota, at)
        missing = [w for w in span if self.held.get(w, 0) <= 0]
        if missing:
            n = max(1, min(self.needed(), self.limiter.capacity(self.quota, self.priority)))
            refusal = self.limiter.take(self.quota, missing, n, self.priority)
            if refusal is not None:
                when = datetime.fromtimestamp(refusal.retry_at, tz=UTC).isoformat(
                    timespec="seconds"
                )
                state = "spent (429)" if refusal.spent else "full"
                metrics.QUOTA_WAITS.labels(self.quota.name).inc()
                raise QuotaWait(
                    f"quota {self.quota.name}: {refusal.window.kind} window {state}; "
                    f"{n} call(s) wait until about {when}",
                    retry_at=refusal.retry_at,
                )
            for window in missing:
                self.held[window] = self.held.get(window, 0) + n
        for window in span:
            self.held[window] -= 1
        self.sent_at = at

    def after_response(self, error: PlausibleError | None) -> None:
        if isinstance(error, RateLimitedError):
            # Another user of the team's quota spent it: shut the window for every process.
            metrics.RATE_LIMITED.labels(self.quota.name, error.limit).inc()
            kind = windows.HOUR if error.limit == "hourly" else windows.BURST
            window = windows.current(self.quota, kind, self.sent_at)
            log.warning(
                "quota %s: 429 in %s window %d; closing it", self.quota.name, kind, window.index
            )
            self.limiter.mark_spent(self.quota, window)

    def release(self) -> None:
        """Give the unused permits back; the gate takes fresh ones if it is used again."""
        held, self.held = self.held, {}
        self.limiter.give_back(self.quota, held)

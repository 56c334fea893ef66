"""What the quota looks like now, and when a batch should be done: for ``provision quota``,
``GET /quota`` and every view of a batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from worker.accounts import Accounts, Quota
from worker.jobs.counts import Counts
from worker.jobs.states import Priority
from worker.pauses import Pause, Pauses
from worker.quota import windows
from worker.quota.limiter import Limiter
from worker.quota.windows import HOUR


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Reporter:
    store: Counts
    limiter: Limiter
    accounts: Accounts

    def quotas(self) -> list[dict[str, Any]]:
        """Per quota: its accounts, and for each current window the calls used and remaining,
        the limit, when it resets; and the jobs waiting for the scheduler, by class."""
        out = []
        paused = Pauses(self.store.engine).active()
        for quota in self.accounts.quotas.values():
            names = self.accounts.of_quota(quota.name)
            out.append(
                {
                    "quota": quota.name,
                    "accounts": [
                        {
                            "name": name,
                            "waiting": self.store.waiting_by_priority([name]),
                            "paused": _pause_view(paused.get(name)),
                        }
                        for name in names
                    ],
                    "windows": [
                        {
                            "kind": usage.window.kind,
                            "seconds": windows.length(quota, usage.window.kind),
                            "used": usage.used,
                            "limit": usage.limit,
                            "remaining": usage.remaining,
                            "interactive_reserve": self.limiter.reserve(quota, usage.window.kind),
                            "spent": usage.spent,
                            "resets_at": _iso(usage.resets_at),
                        }
                        for usage in self.limiter.usage(quota)
                    ],
                    "waiting": self.store.waiting_by_priority(names),
                }
            )
        return out

    def batch_eta(self, batch_id: str, *, within: Sequence[str] | None = None) -> datetime | None:
        """When the batch's last job should be done (``batch_etas``)."""
        return self.batch_etas([batch_id], within=within).get(batch_id)

    def batch_etas(
        self, batch_ids: Sequence[str], *, within: Sequence[str] | None = None
    ) -> dict[str, datetime | None]:
        """When each batch's last job should be done, from the budget and the work queued ahead
        of it: interactive jobs first, other bulk batches sharing round-robin. None for a batch
        with nothing left (or only under accounts not configured here, or outside ``within``).
        The work ahead is read once per quota, whatever the number of batches."""
        now = self.limiter.clock()
        finish: dict[str, float | None] = dict.fromkeys(batch_ids)
        quotas: dict[str, list[str]] = {}
        for batch_id in batch_ids:
            for name in self.store.batch_accounts(batch_id):
                if name in self.accounts and (within is None or name in within):
                    quotas.setdefault(self.accounts.get(name).quota.name, []).append(batch_id)
        for quota_name, batches in quotas.items():
            quota = self.accounts.quotas[quota_name]
            names = self.accounts.of_quota(quota_name)
            interactive = self.store.open_calls_by_batch(names, Priority.interactive)
            bulk = self.store.open_calls_by_batch(names, Priority.bulk)
            ahead = sum(interactive.values())
            for batch_id in batches:
                if batch_id not in bulk and batch_id not in interactive:
                    continue  # nothing left to do here
                # Interactive jobs (this batch's included) go first; then this batch's bulk
                # jobs, round-robin with the other batches: each takes as many calls as this
                # one until either is done.
                mine = bulk.get(batch_id, 0)
                calls = ahead + mine
                calls += sum(
                    min(theirs, mine) for other, theirs in bulk.items() if other != batch_id
                )
                done = now + self.seconds_for(quota, calls, now)
                known = finish[batch_id]
                finish[batch_id] = done if known is None else max(known, done)
        return {
            batch_id: None if at is None else datetime.fromtimestamp(at, tz=UTC)
            for batch_id, at in finish.items()
        }

    def seconds_for(self, quota: Quota, calls: int, now: float) -> float:
        """How long the budget takes to hand out ``calls`` permits from now."""
        burst_rate = self.limiter.budget(quota, windows.BURST) / quota.burst_seconds
        hourly = self.limiter.budget(quota, HOUR)
        hour = windows.current(quota, HOUR, now)
        used = next(u.used for u in self.limiter.usage(quota) if u.window.kind == HOUR)
        this_hour = max(0, hourly - used)
        if calls <= this_hour:
            return calls / burst_rate
        rest = calls - this_hour
        full_hours, last = divmod(rest, hourly)
        seconds = windows.end(quota, hour) - now + full_hours * quota.hour_seconds
        return seconds + last / burst_rate


def _pause_view(pause: Pause | None) -> dict[str, str] | None:
    if pause is None:
        return None
    return {"code": pause.code, "message": pause.message, "scope": pause.scope}

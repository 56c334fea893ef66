"""A quota: its accounts, the calls used and left in each window, and the jobs waiting for it."""

from __future__ import annotations

from pydantic import Field

from provisioner_types.jobs import Timestamp
from provisioner_types.model import Model


class AccountPause(Model):
    code: str = Field(description="invalid_api_key, sites_api_unavailable or site_limit_reached.")
    message: str
    scope: str = Field(description="`all` jobs, or `provision`: only new sites wait.")


class QuotaAccount(Model):
    name: str
    waiting: dict[str, int] = Field(description="Its queued jobs waiting, by priority class.")
    paused: AccountPause | None = Field(
        description="Set while an account-level error holds its jobs (see README, Accounts)."
    )


class QuotaWindow(Model):
    kind: str = Field(description="`hour` or `burst`.")
    seconds: float
    used: int
    limit: int
    remaining: int
    interactive_reserve: int
    spent: bool = Field(description="Plausible answered 429 in this window: nothing more goes out.")
    resets_at: Timestamp


class Quota(Model):
    """One quota (``Reporter.quotas()``)."""

    quota: str
    accounts: list[QuotaAccount]
    windows: list[QuotaWindow]
    waiting: dict[str, int] = Field(description="Queued jobs waiting, by priority class.")

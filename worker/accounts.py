"""Accounts: the Plausible teams or API keys jobs run under, each drawing on a quota.

``default`` is built from ``PLAUSIBLE_API_KEY`` and the ``PROVISIONER_`` quota settings, so a
single-key deployment needs nothing else. ``PROVISIONER_ACCOUNTS_FILE`` (TOML) names more::

    [accounts.agency-b]
    api_key_env = "PLAUSIBLE_API_KEY_B"   # required: the variable holding the key
    team_id = "..."                       # optional: sent when creating sites
    hourly_limit = 600                    # these four default to the settings
    burst_limit = 60
    burst_seconds = 10
    quota_reserve = 0
    quota = "team-b"                      # optional: accounts naming the same quota share it
    webhook_url = "https://app.example/hooks/provisioner"  # optional: completion webhooks
    webhook_secret_env = "WEBHOOK_SECRET_B"  # optional: signs its webhooks instead of the default

Keys never go in the file, the database or the broker: only the name of the variable does. A
file may define ``[accounts.default]`` itself. Accounts whose keys belong to one Plausible team
must name one ``quota``, since Plausible counts every key of a team in one bucket.
``webhook_url`` receives the account's finished jobs whose event named no ``callback_url``
(``worker.webhooks``); it follows the same rules as a ``callback_url`` (``worker.egress``).
``webhook_secret_env`` names the variable holding the secret the account's webhooks are signed
with (comma-separated during a rotation); without it, ``PROVISIONER_WEBHOOK_SECRET``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from pydantic import SecretStr

from worker.egress import Targets
from worker.errors import ConfigurationError
from worker.settings import Settings

DEFAULT_ACCOUNT = "default"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LIMIT_FIELDS = ("hourly_limit", "burst_limit", "burst_seconds", "quota_reserve")
_FIELDS = frozenset(
    {"api_key_env", "team_id", "quota", "webhook_url", "webhook_secret_env", *_LIMIT_FIELDS}
)


@dataclass(frozen=True)
class Quota:
    """One Plausible rate-limit bucket (§4): a team's hourly window and its burst window."""

    name: str
    hourly_limit: int
    burst_limit: int
    burst_seconds: float
    hour_seconds: float
    #: Calls per hour left for the team's other users: we spend ``hourly_limit - reserve``.
    reserve: int = 0

    @property
    def hourly_budget(self) -> int:
        return self.hourly_limit - self.reserve


@dataclass(frozen=True)
class Account:
    name: str
    api_key_env: str
    team_id: str | None
    quota: Quota
    #: The key when settings hold it already (``default``: ``PLAUSIBLE_API_KEY``).
    preset_key: SecretStr | None = field(default=None, repr=False)
    #: Where the account's finished jobs are POSTed when their event names no callback_url.
    webhook_url: str | None = None
    #: The variable holding the secret(s) this account's webhooks are signed with.
    webhook_secret_env: str | None = None

    def api_key(self, environ: Mapping[str, str] | None = None) -> SecretStr:
        """The key, read from its variable; ConfigurationError naming both if it is unset."""
        if self.preset_key is not None and self.preset_key.get_secret_value():
            return self.preset_key
        value = _environment(environ).get(self.api_key_env, "").strip()
        if not value:
            raise ConfigurationError(
                f"account {self.name!r}: {self.api_key_env} is not set, so workers cannot call "
                "Plausible for it"
            )
        return SecretStr(value)

    def webhook_secret(self, environ: Mapping[str, str] | None = None) -> SecretStr:
        """The value of ``webhook_secret_env`` (empty when unset or not named)."""
        if self.webhook_secret_env is None:
            return SecretStr("")
        return SecretStr(_environment(environ).get(self.webhook_secret_env, "").strip())


def _environment(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    """``environ``, or the variables as settings read them: the environment over ``.env``."""
    if environ is not None:
        return environ
    return {**{k: v or "" for k, v in dotenv_values(".env").items()}, **os.environ}


@dataclass(frozen=True)
class Accounts:
    by_name: Mapping[str, Account]

    def __iter__(self) -> Iterator[Account]:
        return iter(self.by_name.values())

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def get(self, name: str) -> Account:
        try:
            return self.by_name[name]
        except KeyError:
            raise ConfigurationError(f"unknown account {name!r}") from None

    @property
    def names(self) -> list[str]:
        return list(self.by_name)

    @property
    def quotas(self) -> dict[str, Quota]:
        return {account.quota.name: account.quota for account in self}

    def of_quota(self, quota: str) -> list[str]:
        return [account.name for account in self if account.quota.name == quota]

    @property
    def webhook_urls(self) -> dict[str, str]:
        """Account name -> ``webhook_url``, for the accounts that have one."""
        return {account.name: account.webhook_url for account in self if account.webhook_url}


def load_accounts(settings: Settings) -> Accounts:
    """The default account and those of the accounts file; ConfigurationError in one line naming
    the file, the account and the field at fault."""
    defaults: dict[str, Any] = {
        "hourly_limit": settings.hourly_limit,
        "burst_limit": settings.burst_limit,
        "burst_seconds": settings.burst_seconds,
        "quota_reserve": settings.quota_reserve,
    }
    entries: dict[str, dict[str, Any]] = {DEFAULT_ACCOUNT: {"api_key_env": "PLAUSIBLE_API_KEY"}}
    path = settings.accounts_file
    if path is not None:
        entries.update(_read_file(path))
    where = f"{path}: " if path is not None else ""
    accounts: dict[str, Account] = {}
    quotas: dict[str, tuple[str, Quota]] = {}
    for name, entry in entries.items():
        values = {**defaults, **{k: v for k, v in entry.items() if k in _LIMIT_FIELDS}}
        for limit in _LIMIT_FIELDS:
            _check_number(where, name, limit, values[limit])
        if values["quota_reserve"] >= values["hourly_limit"]:
            raise ConfigurationError(
                f"{where}account {name!r}: quota_reserve ({values['quota_reserve']}) must be "
                f"below hourly_limit ({values['hourly_limit']})"
            )
        quota_name = entry.get("quota", name)
        if not isinstance(quota_name, str) or not _NAME.fullmatch(quota_name):
            raise ConfigurationError(f"{where}account {name!r}: quota must be a name like 'team-b'")
        quota = Quota(
            name=quota_name,
            hourly_limit=int(values["hourly_limit"]),
            burst_limit=int(values["burst_limit"]),
            burst_seconds=float(values["burst_seconds"]),
            hour_seconds=settings.hour_seconds,
            reserve=int(values["quota_reserve"]),
        )
        if quota_name in quotas and quotas[quota_name][1] != quota:
            other = quotas[quota_name][0]
            raise ConfigurationError(
                f"{where}accounts {other!r} and {name!r} share quota {quota_name!r} but set "
                "different limits; give them the same hourly_limit, burst_limit, burst_seconds "
                "and quota_reserve"
            )
        quotas[quota_name] = (name, quota)
        team_id = entry.get("team_id")
        if team_id is not None and (not isinstance(team_id, str) or not team_id.strip()):
            raise ConfigurationError(f"{where}account {name!r}: team_id must be a non-empty string")
        preset = settings.plausible_api_key if entry["api_key_env"] == "PLAUSIBLE_API_KEY" else None
        webhook_url = entry.get("webhook_url")
        if webhook_url is not None:
            problem = Targets.of(settings).problem(webhook_url)
            if problem is not None:
                raise ConfigurationError(f"{where}account {name!r}: webhook_url {problem}")
            webhook_url = str(webhook_url).strip()
        secret_env = entry.get("webhook_secret_env")
        if secret_env is not None and (
            not isinstance(secret_env, str) or not _ENV_NAME.fullmatch(secret_env)
        ):
            raise ConfigurationError(
                f"{where}account {name!r}: webhook_secret_env must name an environment variable"
            )
        accounts[name] = Account(
            name, entry["api_key_env"], team_id, quota, preset, webhook_url, secret_env
        )
    return Accounts(accounts)


def _read_file(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(
            f"PROVISIONER_ACCOUNTS_FILE: cannot read {path}: {exc.strerror}"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - {"accounts", "tokens"}  # tokens: provision.tokens
    if unknown:
        raise ConfigurationError(
            f"{path}: unknown table {sorted(unknown)[0]!r}; accounts go in [accounts.NAME]"
        )
    accounts = data.get("accounts", {})
    if not isinstance(accounts, dict) or not accounts:
        raise ConfigurationError(f"{path}: no [accounts.NAME] table")
    entries: dict[str, dict[str, Any]] = {}
    for name, entry in accounts.items():
        if not _NAME.fullmatch(name):
            raise ConfigurationError(
                f"{path}: account name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)"
            )
        if not isinstance(entry, dict):
            raise ConfigurationError(f"{path}: account {name!r} must be a table")
        extra = set(entry) - _FIELDS
        if extra:
            raise ConfigurationError(
                f"{path}: account {name!r}: unknown field {sorted(extra)[0]!r} "
                f"(known: {', '.join(sorted(_FIELDS))})"
            )
        env = entry.get("api_key_env")
        if not isinstance(env, str) or not _ENV_NAME.fullmatch(env):
            raise ConfigurationError(
                f"{path}: account {name!r}: api_key_env is required: the name of the "
                "environment variable holding its key (the key itself never goes in the file)"
            )
        entries[name] = entry
    return entries


def _check_number(where: str, account: str, field: str, value: Any) -> None:
    integral = field != "burst_seconds"
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and integral:
        ok = float(value).is_integer()
    if ok:
        ok = value >= 0 if field == "quota_reserve" else value > 0
    if not ok:
        kind = "a whole number" if integral else "a number"
        bound = "0 or more" if field == "quota_reserve" else "above 0"
        raise ConfigurationError(f"{where}account {account!r}: {field} must be {kind}, {bound}")

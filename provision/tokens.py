"""Who may do what through the HTTP service and the dashboard: bearer tokens per tenant, each
with the accounts it may see and its scopes.

Tokens are named in the accounts file, beside the accounts::

    [tokens.signup-app]
    hash_env = "SIGNUP_APP_TOKEN_HASH"   # the variable holding the token's hash (never the token)
    accounts = ["agency"]                 # the accounts it may see; ["*"]: every account
    scopes = ["jobs:write", "jobs:read"]

``provision token hash`` turns a token into the value of that variable (``sha256:<hex>``); the
token itself is stored nowhere the provisioner reads. ``PROVISIONER_API_TOKEN``, the single token
of earlier versions, keeps working as an ``admin`` token named ``api-token``.

Scopes: ``jobs:write`` (enqueue), ``jobs:read`` (jobs, batches, sites, export, the quota of its
accounts), ``jobs:operate`` (retry, cancel, apply), ``admin`` (every account, the metrics, the
workers, sessions and the audit trail; implies every other scope).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import tomllib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from worker.errors import ConfigurationError
from worker.settings import Settings

SCOPES = ("jobs:write", "jobs:read", "jobs:operate", "admin")
#: The name ``PROVISIONER_API_TOKEN`` goes by in the audit trail and the sessions list.
LEGACY_NAME = "api-token"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HASH = re.compile(r"sha256:[0-9a-f]{64}")
_FIELDS = frozenset({"hash_env", "accounts", "scopes"})


def token_hash(token: str) -> str:
    """What a token is known by: ``sha256:<hex>`` of it (tokens are long random strings, so a
    fast hash is as good as a slow one)."""
    return "sha256:" + hashlib.sha256(token.strip().encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: a token's name, its scopes and the accounts it may see (None:
    every account)."""

    name: str
    scopes: frozenset[str]
    accounts: frozenset[str] | None

    def can(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def sees(self, account: str) -> bool:
        return self.accounts is None or account in self.accounts

    def visible(self, accounts: Iterable[str]) -> list[str]:
        return [account for account in accounts if self.sees(account)]

    @property
    def restriction(self) -> tuple[str, ...] | None:
        """The accounts a query is restricted to (None: no restriction)."""
        return None if self.accounts is None else tuple(sorted(self.accounts))


#: Development mode (no token configured): everything, for everyone.
OPEN = Principal("development", frozenset({"admin"}), None)
#: ``PROVISIONER_API_TOKEN``: an admin.
LEGACY = Principal(LEGACY_NAME, frozenset({"admin"}), None)


@dataclass(frozen=True)
class Tokens:
    """The configured tokens, by their hashes."""

    by_hash: Mapping[str, Principal]

    @property
    def open(self) -> bool:
        """No token at all: development mode."""
        return not self.by_hash

    def resolve(self, presented: str) -> Principal | None:
        """The principal of a presented token; None if it is no token of ours."""
        if self.open:
            return OPEN
        digest = token_hash(presented)
        found = None
        for known, principal in self.by_hash.items():
            # Every candidate compared in constant time, so timing tells nothing.
            if hmac.compare_digest(known, digest):
                found = principal
        return found

    def names(self) -> list[str]:
        return sorted(principal.name for principal in self.by_hash.values())

    def named(self, name: str) -> Principal | None:
        """The token called ``name``, if it is still configured (a dashboard session lives as
        long as its token does)."""
        return next((p for p in self.by_hash.values() if p.name == name), None)


def load_tokens(settings: Settings, accounts: Collection[str]) -> Tokens:
    """``PROVISIONER_API_TOKEN`` (an admin) and the accounts file's ``[tokens.NAME]``;
    ConfigurationError in one line naming the file, the token and the field at fault."""
    by_hash: dict[str, Principal] = {}
    legacy = settings.api_token.get_secret_value()
    if legacy:
        by_hash[token_hash(legacy)] = LEGACY
    path = settings.accounts_file
    if path is None:
        return Tokens(by_hash)
    environ = {**{k: v or "" for k, v in dotenv_values(".env").items()}, **os.environ}
    for name, entry in _read_tokens(path).items():
        principal = _principal(path, name, entry, accounts)
        env = entry["hash_env"]
        value = environ.get(env, "").strip()
        if not _HASH.fullmatch(value):
            raise ConfigurationError(
                f"{path}: token {name!r}: {env} must hold the token's hash, sha256:<64 hex "
                "digits> (make it with `provision token hash`)"
            )
        if value in by_hash:
            raise ConfigurationError(
                f"{path}: token {name!r} has the same hash as {by_hash[value].name!r}"
            )
        by_hash[value] = principal
    return Tokens(by_hash)


def _principal(
    path: Path, name: str, entry: Mapping[str, Any], accounts: Collection[str]
) -> Principal:
    where = f"{path}: token {name!r}"
    scopes = entry.get("scopes")
    if not isinstance(scopes, list) or not scopes or not all(s in SCOPES for s in scopes):
        raise ConfigurationError(
            f"{where}: scopes must list some of {', '.join(SCOPES)} (got {scopes!r})"
        )
    seen = entry.get("accounts")
    if not isinstance(seen, list) or not seen or not all(isinstance(a, str) for a in seen):
        raise ConfigurationError(
            f'{where}: accounts must list the accounts it may see, or ["*"] for every account'
        )
    if "admin" in scopes or seen == ["*"]:
        return Principal(name, frozenset(scopes), None)
    unknown = sorted(set(seen) - set(accounts))
    if unknown:
        raise ConfigurationError(f"{where}: accounts: no account {unknown[0]!r}")
    return Principal(name, frozenset(scopes), frozenset(seen))


def _read_tokens(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}  # worker.accounts reads the same file first and says what is wrong with it
    tokens = data.get("tokens", {})
    if not isinstance(tokens, dict):
        raise ConfigurationError(f"{path}: tokens must be tables: [tokens.NAME]")
    for name, entry in tokens.items():
        if not _NAME.fullmatch(name):
            raise ConfigurationError(
                f"{path}: token name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)"
            )
        if not isinstance(entry, dict):
            raise ConfigurationError(f"{path}: token {name!r} must be a table")
        extra = set(entry) - _FIELDS
        if extra:
            raise ConfigurationError(
                f"{path}: token {name!r}: unknown field {sorted(extra)[0]!r} "
                f"(known: {', '.join(sorted(_FIELDS))})"
            )
        env = entry.get("hash_env")
        if not isinstance(env, str) or not _ENV_NAME.fullmatch(env):
            raise ConfigurationError(
                f"{path}: token {name!r}: hash_env is required: the name of the environment "
                "variable holding the token's hash (the token itself never goes in the file)"
            )
    return tokens

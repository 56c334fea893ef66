"""Accounts: the default one from settings, more from a TOML file, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from testkit.sandbox_process import REPO_ROOT
from worker.accounts import Quota, load_accounts
from worker.errors import ConfigurationError
from worker.settings import Settings


def settings_with(path: Path | None = None, **values: object) -> Settings:
    return Settings(accounts_file=path, **values)  # type: ignore[arg-type]


def accounts_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "accounts.toml"
    path.write_text(text)
    return path


def test_a_single_key_deployment_has_the_default_account_from_settings() -> None:
    accounts = load_accounts(
        settings_with(plausible_api_key=SecretStr("k"), hourly_limit=1000, quota_reserve=100)
    )
    assert accounts.names == ["default"]
    default = accounts.get("default")
    assert default.api_key().get_secret_value() == "k"
    assert default.quota == Quota("default", 1000, 60, 10.0, 3600.0, reserve=100)
    assert default.quota.hourly_budget == 900


def test_the_file_adds_accounts_with_their_own_or_shared_quotas(tmp_path: Path) -> None:
    path = accounts_file(
        tmp_path,
        """
        [accounts.agency-b]
        api_key_env = "KEY_B"
        team_id = "team-uuid"
        hourly_limit = 1200
        quota = "team-b"

        [accounts.agency-b2]
        api_key_env = "KEY_B2"
        hourly_limit = 1200
        quota = "team-b"

        [accounts.c]
        api_key_env = "KEY_C"
        burst_seconds = 5
        """,
    )
    accounts = load_accounts(settings_with(path))
    assert sorted(accounts.names) == ["agency-b", "agency-b2", "c", "default"]
    assert accounts.get("agency-b").team_id == "team-uuid"
    assert sorted(accounts.quotas) == ["c", "default", "team-b"]
    assert sorted(accounts.of_quota("team-b")) == ["agency-b", "agency-b2"]
    assert accounts.quotas["c"].burst_seconds == 5.0
    assert accounts.get("c").api_key({"KEY_C": "secret-c"}).get_secret_value() == "secret-c"
    with pytest.raises(ConfigurationError, match=r"account 'c': KEY_C is not set"):
        accounts.get("c").api_key({})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[accounts.b]\nteam_id = "x"\n', r"account 'b': api_key_env is required"),
        ('[accounts.b]\napi_key_env = "K"\nhourly_limit = 0\n', r"account 'b': hourly_limit must"),
        ('[accounts.b]\napi_key_env = "K"\nburst_limit = 1.5\n', r"account 'b': burst_limit must"),
        (
            '[accounts.b]\napi_key_env = "K"\napi_key = "s"\n',
            r"account 'b': unknown field 'api_key'",
        ),
        (
            '[accounts.b]\napi_key_env = "K"\nquota_reserve = 600\n',
            r"account 'b': quota_reserve \(600\) must be below hourly_limit \(600\)",
        ),
        (
            '[accounts.a]\napi_key_env = "A"\nquota = "t"\n'
            '[accounts.b]\napi_key_env = "B"\nquota = "t"\nburst_limit = 5\n',
            r"accounts 'a' and 'b' share quota 't' but set different limits",
        ),
        ("[accounts.b\n", r"not valid TOML"),
        ('[teams.b]\napi_key_env = "K"\n', r"unknown table 'teams'"),
    ],
)
def test_a_bad_accounts_file_is_one_line_naming_the_account_and_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = accounts_file(tmp_path, text)
    with pytest.raises(ConfigurationError, match=message) as raised:
        load_accounts(settings_with(path))
    assert "\n" not in str(raised.value)
    assert str(path) in str(raised.value)


def test_a_missing_accounts_file_says_which_setting_points_at_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="PROVISIONER_ACCOUNTS_FILE: cannot read"):
        load_accounts(settings_with(tmp_path / "absent.toml"))


def test_every_command_stops_at_start_on_a_bad_accounts_file(tmp_path: Path) -> None:
    path = accounts_file(tmp_path, '[accounts.b]\napi_key_env = "K"\nburst_limit = -1\n')
    signups = tmp_path / "s.jsonl"
    signups.write_text('{"domain": "a.example.com"}\n')
    env = {
        "PATH": "/usr/bin:/bin",
        "PROVISIONER_ACCOUNTS_FILE": str(path),
        "PROVISIONER_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "PLAUSIBLE_API_KEY": "k",
    }
    for args in (["import", str(signups)], ["quota"]):
        done = subprocess.run(
            [sys.executable, "-m", "provision", *args],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        last = done.stderr.strip().splitlines()
        assert (
            last[-1] == f"Error: {path}: account 'b': burst_limit must be a whole number, above 0"
        )
        assert "Traceback" not in done.stderr

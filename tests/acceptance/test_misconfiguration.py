"""A misconfigured URL is one line saying what to write, as a user meets it: no traceback, no
password echoed, exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from testkit.cli import clean_environ, provision


@pytest.mark.parametrize(
    ("variable", "url", "says"),
    [
        ("PROVISIONER_DATABASE_URL", "mysql://root:hunter2@db/prov", "mysql:// is not a supported"),
        (
            "PROVISIONER_DATABASE_URL",
            "postgres://app:hunter2@db/prov",
            "write postgresql+psycopg://",
        ),
        (
            "PROVISIONER_DATABASE_URL",
            "postgresql://app:hunter2@db/prov",
            "write postgresql+psycopg://",
        ),
        (
            "PROVISIONER_DATABASE_URL",
            "db.example.com/hunter2",
            "sqlite:///PATH or postgresql+psycopg://",
        ),
        (
            "PROVISIONER_BROKER_URL",
            "reddis://:hunter2@cache:6379/0",
            "reddis:// is not a supported broker",
        ),
    ],
)
def test_an_unsupported_or_misspelled_url_is_one_line_naming_the_forms_that_work(
    variable: str, url: str, says: str, tmp_path: Path
) -> None:
    done = provision({**clean_environ(), variable: url}, "quota", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert variable in lines[0]
    assert says in lines[0]
    assert "hunter2" not in done.stderr + done.stdout


@pytest.mark.parametrize("args", [["token", "hash", "--new"], ["sandbox", "--help"]])
def test_commands_that_run_on_their_own_settings_ignore_a_broken_provisioner_setting(
    args: list[str], tmp_path: Path
) -> None:
    """``provision token`` and ``provision sandbox`` need none of the provisioner's settings:
    a broken database URL does not stop them."""
    environ = {**clean_environ(), "PROVISIONER_DATABASE_URL": "mysql://root:hunter2@db/prov"}
    done = provision(environ, *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "PROVISIONER_DATABASE_URL" not in done.stderr

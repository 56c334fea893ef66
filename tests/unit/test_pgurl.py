"""The status database's URL as psycopg's connection parameters (``worker.jobs.pgurl``), held
against the reference: what SQLAlchemy's psycopg dialect connects the store with."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import make_url

from worker.jobs.pgurl import psycopg_params
from worker.jobs.rows import PG_CONNECT_TIMEOUT_SECONDS, _open


def sqlalchemy_params(url: str) -> dict[str, str]:
    _, params = PGDialect_psycopg().create_connect_args(make_url(url))
    return {name: str(value) for name, value in params.items()}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql+psycopg://postgres@127.0.0.1:5432/jobs",
            {"user": "postgres", "host": "127.0.0.1", "port": "5432", "dbname": "jobs"},
        ),
        # Left out: libpq's defaults (PGHOST, PGPORT, the user's name as the database).
        (
            "postgresql+psycopg://postgres@db.internal/jobs",
            {"user": "postgres", "host": "db.internal", "dbname": "jobs"},
        ),
        ("postgresql+psycopg://db.internal", {"host": "db.internal"}),
        ("postgresql+psycopg:///jobs", {"dbname": "jobs"}),
        ("postgresql+psycopg://", {}),
        ("postgresql+psycopg://u:@h/db", {"user": "u", "host": "h", "dbname": "db"}),
        # Percent-encoded parts; a "+" outside the query is itself.
        (
            "postgresql+psycopg://us%40er:p%40ss%2Fw%3Ard%25@h/my%20db",
            {"user": "us@er", "password": "p@ss/w:rd%", "host": "h", "dbname": "my db"},
        ),
        (
            "postgresql+psycopg://u:p%2Bq+r@h/db",
            {"user": "u", "password": "p+q+r", "host": "h", "dbname": "db"},
        ),
        # The query: libpq's options, read as form data, over the URL's parts.
        (
            "postgresql+psycopg://u@h/db?sslmode=require&application_name=a+b%26c",
            {
                "user": "u",
                "host": "h",
                "dbname": "db",
                "sslmode": "require",
                "application_name": "a b&c",
            },
        ),
        (
            "postgresql+psycopg://u@h/db?options=-c+statement_timeout%3D5s",
            {"user": "u", "host": "h", "dbname": "db", "options": "-c statement_timeout=5s"},
        ),
        (
            "postgresql+psycopg://u@h:5432/db?port=5433&connect_timeout=3",
            {"user": "u", "host": "h", "port": "5433", "dbname": "db", "connect_timeout": "3"},
        ),
        # A unix socket's directory, and an IPv6 host.
        (
            "postgresql+psycopg://u@/db?host=/var/run/postgresql",
            {"user": "u", "host": "/var/run/postgresql", "dbname": "db"},
        ),
        (
            "postgresql+psycopg://u@[::1]:5433/db",
            {"user": "u", "host": "::1", "port": "5433", "dbname": "db"},
        ),
        # libpq's multi-host form.
        (
            "postgresql+psycopg://u@/db?host=h1,h2&port=5432,5433",
            {"user": "u", "host": "h1,h2", "port": "5432,5433", "dbname": "db"},
        ),
        # Any driver of SQLAlchemy's, and none: the same database.
        ("postgresql+psycopg2://u@h/db", {"user": "u", "host": "h", "dbname": "db"}),
        ("postgresql+psycopg_async://u@h/db", {"user": "u", "host": "h", "dbname": "db"}),
        ("postgresql://u@h/db", {"user": "u", "host": "h", "dbname": "db"}),
    ],
)
def test_the_parameters_are_the_ones_sqlalchemy_connects_with(
    url: str, expected: dict[str, str]
) -> None:
    assert psycopg_params(url) == expected
    assert psycopg_params(url) == sqlalchemy_params(url)


def test_a_socket_directory_percent_encoded_in_the_host_is_decoded() -> None:
    # libpq's reading. SQLAlchemy keeps the host as written, so its store could not connect
    # there: this is the one place the two differ.
    url = "postgresql+psycopg://u@%2Fvar%2Frun%2Fpostgresql/db"
    assert psycopg_params(url) == {"user": "u", "host": "/var/run/postgresql", "dbname": "db"}
    assert sqlalchemy_params(url)["host"] == "%2Fvar%2Frun%2Fpostgresql"


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///jobs.db",
        "sqlite://",
        "postgres://u@h/db",  # not a name SQLAlchemy loads a dialect by
        "mysql+pymysql://u@h/db",
        "not a url",
        # SQLAlchemy's own multi-host forms, which only its dialect translates.
        "postgresql+psycopg://u@/db?host=h1:5432&host=h2:5433",
        "postgresql+psycopg://u@/db?host=h1:5433",
        # What libpq does not parse.
        "postgresql+psycopg://u@h/my db",
    ],
)
def test_none_for_another_database_or_a_url_only_sqlalchemy_reads(url: str) -> None:
    assert psycopg_params(url) is None


def test_the_parameters_reach_the_database_the_url_names(postgres_url: str) -> None:
    params = psycopg_params(postgres_url)
    assert params is not None
    with psycopg.connect(make_conninfo(**params)) as conn:
        row = conn.execute("SELECT current_database()").fetchone()
    assert row is not None
    assert row[0] == make_url(postgres_url).database


@pytest.mark.parametrize(
    ("query", "timeout"), [("", str(PG_CONNECT_TIMEOUT_SECONDS)), ("?connect_timeout=3", "3")]
)
def test_provision_status_connects_with_the_urls_parameters_and_its_own_timeout(
    postgres_url: str, query: str, timeout: str
) -> None:
    opened = _open(postgres_url + query)
    assert opened is not None
    with opened[0] as conn:
        parameters = conn.info.get_parameters()
    assert parameters["connect_timeout"] == timeout  # the URL's wins
    assert parameters["dbname"] == make_url(postgres_url).database

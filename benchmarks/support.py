"""What the benchmarks share: a fresh status database, and a real ``provision worker``."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url

from testkit.services import libpq_conninfo

REPO_ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
#: The ``provision`` console script, run from this interpreter.
PROVISION = [
    sys.executable,
    "-c",
    "import sys; sys.argv[0] = 'provision'; from provision.cli import main; main()",
]


@contextlib.contextmanager
def database(store: str, workdir: Path) -> Iterator[str]:
    """A status database URL: a SQLite file in ``workdir``, or a fresh PostgreSQL database
    (dropped afterwards)."""
    if store == "sqlite":
        yield f"sqlite:///{workdir / 'bench.db'}"
        return
    import psycopg

    admin = libpq_conninfo(POSTGRES_URL)
    name = f"provisioner_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_worker(env: dict[str, str], log: Path, extra: list[str]) -> subprocess.Popen[bytes]:
    """``provision worker`` in its own process group, once it says it is ready."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*PROVISION, "worker", *extra],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while " ready." not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)
    return proc

"""The tests flush only what is theirs: a Redis database is flushed only when it is empty or
carries the mark the tests leave in it, so pointing them at a database in real use fails
loudly instead of wiping it. (PostgreSQL databases are created per test, with random names,
and only those are dropped.)"""

from __future__ import annotations

from typing import Any

import pytest

MARK = "plausible-provisioner:tests-own-this-db"


def flush_owned(client: Any, *, setting: str) -> int:
    """FLUSHDB, if the database is ours; returns how many keys were there (the mark aside)."""
    keys = int(client.dbsize())
    if keys and not client.exists(MARK):
        where = client.connection_pool.connection_kwargs
        pytest.fail(
            f"Redis db {where.get('db', 0)} on {where.get('host')}:{where.get('port')} holds "
            f"{keys} key(s) the tests did not put there; refusing to flush it. Point {setting} "
            "at an empty database.",
            pytrace=False,
        )
    client.flushdb()
    client.set(MARK, "1")
    return keys - 1 if keys else 0

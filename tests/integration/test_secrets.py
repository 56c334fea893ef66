"""The API key reaches Plausible and nothing else: no broker message, no table row, no log line."""

from __future__ import annotations

import uuid
from pathlib import Path

import redis

from testkit.workers import Stack, assert_all_succeeded


def broker_bytes(redis_url: str) -> bytes:
    """Every key and value in the broker's database, as raw bytes."""
    client = redis.Redis.from_url(redis_url)
    dump = bytearray()
    for key in client.scan_iter():
        dump += key
        kind = client.type(key)
        if kind == b"list":
            dump += b"".join(client.lrange(key, 0, -1))
        elif kind == b"hash":
            for field, value in client.hgetall(key).items():
                dump += field + value
        elif kind == b"set":
            dump += b"".join(client.smembers(key))
        elif kind == b"zset":
            dump += b"".join(client.zrange(key, 0, -1))
        elif kind == b"string":
            dump += client.get(key) or b""
    client.close()
    return bytes(dump)


def test_api_key_is_in_no_message_row_or_log(
    redis_url: str, sqlite_stack: Stack, tmp_path: Path
) -> None:
    secret = f"sk-{uuid.uuid4().hex}"
    sqlite_stack.sandbox.add_key(key=secret)
    with sqlite_stack.sandbox.client(
        "other-team-key"
    ) as other:  # one job will fail: its error is stored
        assert other.post("/api/v1/sites", json={"domain": "taken.example.com"}).status_code == 200
    domains = ["a.example.com", "b.example.com", "taken.example.com"]

    ids = sqlite_stack.submit_sites(domains)
    assert sorted(sqlite_stack.schedule()) == sorted(ids)  # no worker yet: the messages wait
    queued = broker_bytes(redis_url)
    assert len(ids) == 3
    assert all(job_id.encode() in queued for job_id in ids)  # the dump really holds the messages
    assert secret.encode() not in queued

    worker = sqlite_stack.start_worker(api_key=secret)
    jobs = sqlite_stack.wait_done(ids)
    assert_all_succeeded([j for j in jobs if j.domain != "taken.example.com"])
    assert [j.error_code for j in jobs if j.domain == "taken.example.com"] == ["domain_taken"]

    database = Path(sqlite_stack.database_url.removeprefix("sqlite:///"))
    stored = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
    assert b"a.example.com" in stored
    assert secret.encode() not in stored
    assert secret.encode() not in broker_bytes(redis_url)
    assert secret not in worker.log_path.read_text(errors="replace")

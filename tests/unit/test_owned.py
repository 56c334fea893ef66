"""The tests never flush a Redis database they do not own."""

from __future__ import annotations

import fakeredis
import pytest

from testkit.services import MARK, flush_owned


def test_an_empty_or_marked_database_is_flushed_and_marked() -> None:
    client = fakeredis.FakeRedis()
    assert flush_owned(client, setting="X") == 0
    client.set("left-by-a-test", "1")
    assert flush_owned(client, setting="X") == 1
    assert client.keys() == [MARK.encode()]


def test_a_database_holding_someone_elses_keys_is_left_alone() -> None:
    client = fakeredis.FakeRedis()
    client.set("production-queue", "precious")
    with pytest.raises(pytest.fail.Exception, match=r"refusing to flush it\. Point X at an empty"):
        flush_owned(client, setting="X")
    assert client.get("production-queue") == b"precious"

"""Fuzzing JSON Lines and CSV files and stream entries (hypothesis): each junk row is
reported with its line number (a junk stream entry dead-lettered) and each valid row beside it
is enqueued.

No junk input crashes a process or costs a neighbouring valid input. How runs are derandomized
and scaled: ``testkit.strategies``; a falsifying example found stays as an ``@example``.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from hypothesis import event as tally
from hypothesis import example, given
from hypothesis import strategies as st
from sqlalchemy import delete
from sqlmodel import Session

from producers.consumer import StreamConsumer
from producers.events import parse_event
from producers.importer import ImportSummary, import_file, import_stream
from producers.rows import BOM, CSV_COLUMNS, csv_event
from testkit.databases import migrated_engine
from testkit.events import event
from testkit.strategies import (
    ANY_TEXT,
    JSONISH,
    KEYS,
    deep_json,
    fuzz,
)
from worker.jobs.intake import derive_key
from worker.jobs.models import ProvisioningJob
from worker.jobs.store import JobStore

# -- files: JSON Lines and CSV -------------------------------------------------------------------

_runs = itertools.count()


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def store(fuzz_dir: Path) -> JobStore:
    """One store for every example: each example's rows carry keys of their own (``run``), or
    the example empties it first (a strategy must not depend on a counter)."""
    return JobStore(migrated_engine(f"sqlite:///{fuzz_dir / 'fuzz.db'}"))


def _empty(store: JobStore) -> None:
    with Session(store.engine) as session:
        session.execute(delete(ProvisioningJob))
        session.commit()


def valid_event(run: int, n: int) -> dict[str, Any]:
    return event(n, id=f"fz{run}_{n}", domain=f"r{run}n{n}.example.com")


BAD_BYTES = st.sampled_from(
    [b"\xff", b"\x80", b"\xc3", b"\xc3(", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82"]
)


def _insert(line: bytes, at: int, piece: bytes) -> bytes:
    at = at % (len(line) + 1)
    return line[:at] + piece + line[at:]


#: The wrong-typed or out-of-range values for fields of a site.provision event, each refused.
WRONG_FIELDS = st.one_of(
    st.tuples(st.just("id"), st.sampled_from([1.5, [], {}, True, "", " ", "x" * 256, -(10**300)])),
    st.tuples(st.just("type"), st.sampled_from([None, 1, [], {}, "site.other", "SITE.DELETE"])),
    st.tuples(st.just("domain"), st.sampled_from([None, 1, 1e308, [], {}, True, "", "a b", "a@b"])),
    st.tuples(st.just("domain"), st.just("x" * 300)),
    st.tuples(st.just("timezone"), st.sampled_from([1, [], {}, True, "", "Mars/Olympus"])),
    st.tuples(st.just("goals"), st.sampled_from([1, "Signup", {}, [1], [{}], [None]])),
    st.tuples(st.just("shared_links"), st.sampled_from([1, "WordPress", {}, [1], [""]])),
    st.tuples(st.just("account"), st.sampled_from([1, [], {}, True, "", "  "])),
    st.tuples(st.just("priority"), st.sampled_from([1, [], {}, True, "", "urgent", "BULK"])),
)


@st.composite
def jsonl_junk(draw: st.DrawFn, run: int, n: int) -> bytes:
    """One line (no newline) that must be refused."""
    base = json.dumps(valid_event(run, n)).encode()
    kind = draw(
        st.sampled_from(
            [
                "bad_utf8",
                "truncated",
                "not_an_object",
                "huge_number",
                "deep",
                "nul",
                "surrogate",
                "wrong_type",
                "binary",
                "jsonish",
            ]
        )
    )
    if kind == "bad_utf8":
        return _insert(base, draw(st.integers(0, len(base))), draw(BAD_BYTES))
    if kind == "truncated":
        return base[: draw(st.integers(1, len(base) - 1))]
    if kind == "not_an_object":
        value = draw(JSONISH.filter(lambda v: not isinstance(v, dict)))
        return json.dumps(value, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    if kind == "huge_number":
        digits = "9" * draw(st.integers(256, 6000))
        return draw(
            st.sampled_from(
                [
                    f'{{"id": {digits}, "domain": "h{run}n{n}.example.com"}}',
                    f'{{"id": "h{n}", "domain": {digits}}}',
                    f'{{"id": "h{n}", "domain": 1e999}}',
                    f'{{"type": "goal.delete", "domain": "a.example.com", "goal_id": {digits}}}',
                ]
            )
        ).encode()
    if kind == "deep":
        nested = deep_json(draw(st.integers(8, 100_000)), draw(st.sampled_from("[{")))
        return f'{{"domain": "d{run}n{n}.example.com", "goals": {nested}}}'.encode()
    if kind in ("nul", "surrogate"):
        data = valid_event(run, n)
        where = draw(st.sampled_from(["id", "domain", "timezone", "key", "goal"]))
        bad = "\\u0000" if kind == "nul" else "\\ud800"
        text = json.dumps(data)
        if where == "key":
            return text.replace('"timezone"', f'"time{bad}zone"', 1).encode()
        if where == "goal":
            return text.replace('"Signup"', f'"Sign{bad}up"', 1).encode()
        value = json.dumps(data[where])
        return text.replace(value, value[:-1] + bad + '"', 1).encode()
    if kind == "wrong_type":
        field, value = draw(WRONG_FIELDS)
        data = valid_event(run, n)
        data[field] = value
        return json.dumps(data).encode()
    if kind == "jsonish":  # any object without a valid domain
        value = draw(st.dictionaries(KEYS, JSONISH, max_size=6))
        value["domain"] = draw(st.sampled_from([None, "", "a@b", "bad domain", 7]))
        return json.dumps(value).encode("utf-8", "surrogatepass")
    raw = draw(st.binary(min_size=1, max_size=60).map(lambda b: b.replace(b"\n", b"")))
    # Anything else that is not blank (a blank line is skipped, not reported) nor a valid event.
    # (A byte order mark is stripped from line 1, so it does not count.)
    if not raw.removeprefix(BOM).rstrip(b"\r").decode("utf-8", "replace").strip():
        raw = b"\x00" + raw
    return raw


def _spans(lines: list[bytes], junk: list[int]) -> list[range]:
    """The physical line numbers each junk element of ``lines`` covers (an element may hold a
    CSV record over several lines)."""
    starts = list(itertools.accumulate((raw.count(b"\n") for raw in lines), initial=1))
    return [range(starts[i], max(starts[i + 1], starts[i] + 1)) for i in junk]


@st.composite
def jsonl_file(draw: st.DrawFn, run: int) -> tuple[bytes, list[range], list[str]]:
    """A JSON Lines file of valid rows and junk: (content, the junk's lines, the valid keys)."""
    lines: list[bytes] = []
    junk: list[int] = []
    keys: list[str] = []
    for n in range(draw(st.integers(1, 12))):
        ending = draw(st.sampled_from([b"\n", b"\r\n"]))
        if draw(st.booleans()):
            data = valid_event(run, n)
            text = json.dumps(data, ensure_ascii=draw(st.booleans()))
            pad = draw(st.sampled_from(["", " ", "\t"]))
            lines.append((pad + text + pad).encode() + ending)
            keys.append(data["id"])
        else:
            junk.append(len(lines))
            lines.append(draw(jsonl_junk(run, n)) + ending)
        if draw(st.integers(0, 9)) == 0:
            lines.append(draw(st.sampled_from([b"\n", b"  \r\n", b"\t\n"])))  # blank: skipped
    bom = b"\xef\xbb\xbf" if draw(st.booleans()) else b""
    return bom + b"".join(lines), _spans(lines, junk), keys


def _assert_imported(
    summary: ImportSummary, store: JobStore, junk: list[range], keys: list[str]
) -> None:
    """Every valid row queued once; every junk row reported, at a line it covers; nothing else."""
    reported = [row.line for row in summary.invalid_rows]
    if all(len(span) == 1 for span in junk):
        assert reported == [span.start for span in junk], summary.invalid_rows
    for span in junk:
        assert any(line in span for line in reported), (span, summary.invalid_rows)
    for row in summary.invalid_rows:
        assert any(row.line in span for span in junk), row
        assert row.reason
        # validate() turns an unexpected exception into "SomeError: ..." rather than crash: a
        # reason of that shape is a parser bug that was swallowed.
        assert not re.match(r"\w+(Error|Exception): ", row.reason), row
    assert (summary.queued, summary.duplicate) == (len(keys), 0), summary
    assert summary.invalid == len(reported)
    assert sorted(job.idempotency_key for job in store.batch(summary.batch_id)) == sorted(keys)


@fuzz(150)
@given(data=st.data(), batch_size=st.integers(1, 5))
def test_every_valid_jsonl_row_is_imported_and_every_junk_row_reported(
    store: JobStore, fuzz_dir: Path, data: st.DataObject, batch_size: int
) -> None:
    _empty(store)  # the rows' keys repeat from one example to the next
    content, junk, keys = data.draw(jsonl_file(0))
    path = fuzz_dir / f"run{next(_runs)}.jsonl"
    path.write_bytes(content)
    summary = import_file(store, path, batch_size=batch_size)
    _assert_imported(summary, store, junk, keys)
    tally(f"rows: {len(keys)} valid, {len(junk)} junk")


# CSV: a header of some columns (domain among them), in any order and case.
CSV_HEADER = st.lists(
    st.sampled_from([c for c in CSV_COLUMNS if c != "domain"]), unique=True, max_size=5
).flatmap(lambda extra: st.permutations(["domain", *extra]))


def csv_cells(header: list[str], run: int, n: int) -> dict[str, str]:
    values = {
        "id": f"fz{run}_{n}",
        "domain": f"r{run}n{n}.example.com",
        "timezone": "Europe/Berlin",
        "goals": "event:Signup|page:/pricing/*",
        "shared_links": "WordPress|Docs",
        "account": "default",
        "priority": "bulk",
        "type": "site.provision",
    }
    return {column: values.get(column, "") for column in header}


def csv_line(cells: list[str], quote_all: bool, ending: str) -> bytes:
    out = io.StringIO()
    csv.writer(
        out, quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL, lineterminator=ending
    ).writerow(cells)
    return out.getvalue().encode("utf-8", "surrogatepass")


BAD_DOMAINS = st.one_of(
    st.sampled_from(["bad domain!", "a@b", 'sh"op.example.com', "x" * 300, "\x00", ""]),
    st.tuples(ANY_TEXT, ANY_TEXT).map(lambda t: f"{t[0]}@{t[1]}".replace("\x00", "")),
)
BAD_GOALS = st.one_of(
    st.sampled_from(["visit", "event:", "page: ", "bogus:x", "[", "[1", '[{"goal_type": 1}]']),
    st.integers(256, 6000).map(lambda d: "[" + "9" * d + "]"),
    st.integers(8, 50_000).map(lambda d: deep_json(d, "[")),
)


@st.composite
def csv_junk(draw: st.DrawFn, header: list[str], run: int, n: int, ending: str) -> bytes:
    cells = csv_cells(header, run, n)
    kind = draw(
        st.sampled_from(["extra_cells", "bad_utf8", "nul", "domain", "goals", "empty", "cr"])
    )
    if kind == "goals" and "goals" not in header:
        kind = "domain"
    if kind == "extra_cells":
        extra = draw(st.lists(st.sampled_from(["x", "", '"q,uoted"', " "]), min_size=1))
        return csv_line([*cells.values(), *extra], False, ending)
    if kind == "bad_utf8":
        line = csv_line(list(cells.values()), False, ending).rstrip(b"\r\n")
        return _insert(line, draw(st.integers(0, len(line))), draw(BAD_BYTES)) + ending.encode()
    if kind == "nul":
        column = draw(st.sampled_from(header))
        cells[column] = cells[column][:1] + "\x00" + cells[column][1:]
    elif kind == "domain":
        cells["domain"] = draw(BAD_DOMAINS)
    elif kind == "goals":
        cells["goals"] = draw(BAD_GOALS)
    elif kind == "empty":
        cells = dict.fromkeys(cells, "")
    elif kind == "cr":  # a carriage return inside an unquoted cell: the reader refuses the record
        line = csv_line(list(cells.values()), False, "")
        at = draw(st.integers(1, len(line) - 1))
        return line[:at] + b"\r" + line[at:] + ending.encode()
    if len(cells) == 1 and not cells["domain"].strip():
        cells["domain"] = " , "  # one blank cell ("" quoted too) is a blank line: skipped
    return csv_line(list(cells.values()), draw(st.booleans()), ending)


@st.composite
def csv_file(draw: st.DrawFn, run: int) -> tuple[bytes, list[range], list[str]]:
    header = draw(CSV_HEADER)
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    shown = [draw(st.sampled_from([c, c.upper(), f" {c} "])) for c in header]
    lines = [csv_line(shown, draw(st.booleans()), ending)]
    junk: list[int] = []
    keys: list[str] = []
    for n in range(draw(st.integers(1, 12))):
        if draw(st.booleans()):
            cells = csv_cells(header, run, n)
            lines.append(csv_line(list(cells.values()), draw(st.booleans()), ending))
            # Without an id column the key is derived from the request.
            keys.append(cells.get("id") or derive_key(parse_event(csv_event(cells)).request))
        else:
            junk.append(len(lines))
            lines.append(draw(csv_junk(header, run, n, ending)))
        if draw(st.integers(0, 9)) == 0:
            lines.append(ending.encode())  # a blank line: skipped, still counted
    return b"".join(lines), _spans(lines, junk), keys


@fuzz(150)
@given(data=st.data(), batch_size=st.integers(1, 5))
def test_every_valid_csv_row_is_imported_and_every_junk_row_reported(
    store: JobStore, fuzz_dir: Path, data: st.DataObject, batch_size: int
) -> None:
    _empty(store)  # the rows' keys repeat from one example to the next
    content, junk, keys = data.draw(csv_file(0))
    path = fuzz_dir / f"run{next(_runs)}.csv"
    path.write_bytes(content)
    summary = import_file(store, path, batch_size=batch_size)
    _assert_imported(summary, store, junk, keys)


@fuzz(60)
@given(
    before=st.integers(0, 5),
    after=st.integers(1, 5),
    opener=st.sampled_from(['"unclosed', 'x,"unclosed', '"a""b']),
)
def test_an_unclosed_csv_quote_is_one_reported_record_and_spares_the_rows_before_it(
    store: JobStore, before: int, after: int, opener: str
) -> None:
    """An opening quote never closed runs on to the end of the file (that is CSV): the record is
    one invalid row, reported at its first line; the rows before it are imported."""
    run = next(_runs)
    lines = [b"id,domain\n"]
    lines += [
        csv_line([f"u{run}_{n}", f"u{run}n{n}.example.com"], False, "\n") for n in range(before)
    ]
    lines.append(f"bad{run},{opener}\n".encode())
    lines += [
        csv_line([f"v{run}_{n}", f"v{run}n{n}.example.com"], False, "\n") for n in range(after)
    ]
    summary = import_stream(store, io.BytesIO(b"".join(lines)), fmt="csv")
    assert [row.line for row in summary.invalid_rows] == [before + 2], summary.invalid_rows
    assert (summary.queued, summary.invalid) == (before, 1)
    assert sorted(job.idempotency_key for job in store.batch(summary.batch_id)) == sorted(
        f"u{run}_{n}" for n in range(before)
    )


# -- stream entries ------------------------------------------------------------------------------

STREAM = "signups"


@st.composite
def stream_junk(draw: st.DrawFn, run: int, n: int) -> dict[bytes | str, bytes | str]:
    """The fields of one entry that must be dead-lettered."""
    kind = draw(st.sampled_from(["jsonl", "no_event", "empty_event", "bad_utf8_value"]))
    if kind == "no_event":
        return draw(
            st.dictionaries(
                st.sampled_from(["other", "evt", "EVENT", "data"]),
                st.binary(max_size=20),
                min_size=1,
                max_size=3,
            )
        )
    if kind == "empty_event":
        return {"event": draw(st.sampled_from(["", " ", "\t"]))}
    if kind == "bad_utf8_value":
        # A non-UTF-8 byte inside a string of an otherwise valid event.
        base = json.dumps(valid_event(run, n)).encode()
        where = draw(st.sampled_from([b'"fz', b'"r', b'"Europe', b'"Signup', b'"WordPress']))
        at = base.index(where) + len(where)
        return {"event": base[:at] + draw(BAD_BYTES) + base[at:]}
    fields: dict[bytes | str, bytes | str] = {"event": draw(jsonl_junk(run, n))}
    if draw(st.booleans()):
        fields["source"] = draw(st.binary(max_size=10))
    return fields


Fields = dict[bytes | str, bytes | str]
#: An entry to add: ("valid", extra fields beside the event) or ("junk", all its fields).
STREAM_ENTRIES = st.lists(
    st.one_of(
        st.tuples(st.just("valid"), st.dictionaries(st.sampled_from(["source", "x"]), st.binary())),
        st.tuples(st.just("junk"), st.integers(0, 99).flatmap(lambda n: stream_junk(-1, n))),
    ),
    min_size=1,
    max_size=10,
)


@fuzz(120)
@given(entries=STREAM_ENTRIES, batch=st.integers(1, 12))
@example(  # found: a non-UTF-8 byte became U+FFFD and the event was queued (key "\ufffdid")
    entries=[
        ("junk", {"event": b'{"\xffid": "x", "domain": "a.example.com"}'}),
        ("junk", {"event": b'{"id": "fz-1_\xff", "domain": "b.example.com"}'}),
        ("valid", {}),
    ],
    batch=10,
)
def test_junk_stream_entries_are_dead_lettered_and_valid_neighbours_enqueued(
    store: JobStore, entries: list[tuple[str, Fields]], batch: int
) -> None:
    run = next(_runs)
    # Bytes, as production reads the stream (provision/cli/run.py: no decode_responses).
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    consumer = StreamConsumer(
        client, store, stream=STREAM, group="g", consumer="c1", block_ms=1, count=batch
    )
    consumer.ensure_group()
    junk: dict[str, Fields] = {}
    keys: list[str] = []
    for n, (kind, fields) in enumerate(entries):
        if kind == "valid":
            body = valid_event(run, n)
            client.xadd(STREAM, {"event": json.dumps(body), **fields})
            keys.append(body["id"])
        else:
            junk[client.xadd(STREAM, fields).decode()] = fields
    read = 0
    while step := consumer.step():
        read += step
    assert read == len(entries)
    assert (consumer.stats.queued, consumer.stats.dead) == (len(keys), len(junk))
    dead = client.xrange(f"{STREAM}:dead")
    assert [fields[b"entry_id"].decode() for _, fields in dead] == list(junk)
    for _, fields in dead:
        # "SomeError: ..." is an exception that parse_event should have turned into a reason;
        # json.loads's own ValueError and RecursionError (huge numbers, deep nesting) are fine.
        reason = fields[b"reason"]
        assert reason
        assert not re.match(
            rb"(?!ValueError: Exceeds|RecursionError)\w+(Error|Exception): ", reason
        )
        # The dead letter keeps the entry's event exactly, bytes that are not UTF-8 included.
        original = junk[fields[b"entry_id"].decode()].get("event")
        if original is not None:
            raw = original if isinstance(original, bytes) else original.encode()
            assert fields[b"event"] == raw
    assert client.xpending(STREAM, "g")["pending"] == 0
    for key in keys:
        assert store.get_by_key(key) is not None, key

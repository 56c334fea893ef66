"""Fuzzing the inputs (hypothesis): events, JSON Lines and CSV rows, stream entries, and the
Plausible client's handling of odd responses.

The one property behind every test: no input crashes a process or costs a neighbouring valid
input. Each junk input is *reported* (an ``InvalidRequestError`` naming the field, an invalid
row with its line number, a dead-lettered stream entry, a ``PlausibleError``), and each valid
input next to it still goes through.

Under ``CI`` the runs are derandomized (the same examples every run). ``FUZZ_SCALE=10`` multiplies
every example budget, for a longer local hunt. A failure prints the falsifying example and a
``@reproduce_failure`` blob; keep the example as an ``@example`` next to its test once fixed.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import fakeredis
import httpx
import pytest
from hypothesis import event as tally
from hypothesis import example, given
from hypothesis import strategies as st
from sqlalchemy import delete
from sqlmodel import Session

from producers.consumer import StreamConsumer
from producers.events import Event, parse_event
from producers.importer import ImportSummary, import_file, import_stream
from producers.rows import BOM, CSV_COLUMNS, csv_event
from testkit.databases import migrated_engine
from testkit.events import event
from testkit.strategies import (
    ANY_TEXT,
    EVENT_LIKE,
    JSONISH,
    KEYS,
    TRICKY_LATIN1,
    fuzz,
    spliced,
)
from worker.errors import InvalidRequestError, PlausibleError, RateLimitedError
from worker.jobs.intake import derive_key, fingerprint
from worker.jobs.models import ProvisioningJob
from worker.jobs.states import Priority
from worker.jobs.store import JobStore
from worker.plausible import PlausibleClient, error_from_response

# -- strategies --------------------------------------------------------------------------------


DOMAINS = st.one_of(
    st.sampled_from(["shop.example.com", "https://www.Shop.Example.com/", "blog.example.org"]),
    # (no leading "www.": it is stripped)
    st.from_regex(r"[a-vx-z0-9][a-z0-9-]{0,20}(\.[a-z]{2,8}){1,2}", fullmatch=True),
)
VALID_GOALS = st.lists(
    st.one_of(
        st.sampled_from(["Signup", "Purchase", " Trial "]).map(
            lambda name: {"goal_type": "event", "event_name": name}
        ),
        st.sampled_from(["/pricing/*", "blog", "/"]).map(
            lambda path: {"goal_type": "page", "page_path": path}
        ),
    ),
    max_size=4,
)
COMMON = {
    "id": st.one_of(
        st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=40),
        st.integers(0, 10**30),
    ),
    "account": st.just("default"),
    "priority": st.sampled_from(["interactive", "bulk"]),
}
#: Events that are valid by the rules of docs/events.md: each must be accepted.
VALID_EVENTS = st.one_of(
    st.fixed_dictionaries(
        {"domain": DOMAINS},
        optional={
            **COMMON,
            "type": st.just("site.provision"),
            "timezone": st.sampled_from(["Europe/Berlin", "Etc/UTC", "America/New_York"]),
            "goals": VALID_GOALS,
            "shared_links": st.lists(st.sampled_from(["WordPress", "Docs", " Team "]), max_size=3),
        },
    ),
    st.fixed_dictionaries({"type": st.just("site.delete"), "domain": DOMAINS}, optional=COMMON),
    st.fixed_dictionaries(
        {
            "type": st.just("goal.delete"),
            "domain": DOMAINS,
            "goal_id": st.one_of(st.integers(1, 2**63 - 1), st.integers(1, 2**63 - 1).map(str)),
        },
        optional=COMMON,
    ),
    st.fixed_dictionaries(
        {"type": st.just("goal.delete"), "domain": DOMAINS, "event_name": st.just("Signup")},
        optional=COMMON,
    ),
)
#: A valid event with one field (known or not) replaced by anything.
NEAR_VALID = st.tuples(VALID_EVENTS, KEYS, JSONISH).map(lambda t: {**t[0], t[1]: t[2]})


def _check_accepted(parsed: Event) -> None:
    """What an accepted event promises: it builds a job the store can fingerprint."""
    assert isinstance(parsed, Event)
    assert parsed.key is None or 0 < len(parsed.key) <= 255
    job = parsed.job(Priority.bulk)
    assert job.priority in (Priority.bulk, Priority.interactive)
    assert derive_key(parsed.request).startswith("req-")
    assert len(fingerprint(parsed.request)) == 64


# -- events ------------------------------------------------------------------------------------


@fuzz(500)
@given(data=st.one_of(JSONISH, EVENT_LIKE, NEAR_VALID, VALID_EVENTS))
@example(data={"type": [], "domain": "a.example.com"})  # an unhashable type
@example(data={"domain": "a.example.com", "priority": 10**5000})  # found: repr() raised
@example(data={"goal_id": "١٢", "type": "goal.delete", "domain": "a.example.com"})
@example(data={"domain": "a.example.com", "goals": [{"goal_type": "event", "event_name": "a"}] * 2})
def test_parse_event_returns_an_event_or_raises_invalid_request(data: object) -> None:
    outcome = _parse(data)
    if isinstance(outcome, Event):
        tally("accepted")
        _check_accepted(outcome)
        return
    tally(f"refused: {(outcome.field or '(event)').split('.')[0].split('[')[0]}")
    assert isinstance(outcome.message, str)
    assert outcome.message
    # A field is a path such as goals[0].event_name; "" only for a key that is itself "".
    assert outcome.field is None or isinstance(outcome.field, str)
    if not isinstance(data, Mapping):
        assert outcome.field is None


def _parse(data: object) -> Event | InvalidRequestError:
    """parse_event's answer; any exception but InvalidRequestError propagates (and fails)."""
    try:
        return parse_event(data)
    except InvalidRequestError as exc:
        return exc


@fuzz(200)
@given(data=VALID_EVENTS)
def test_every_valid_event_is_accepted(data: dict[str, Any]) -> None:
    outcome = _parse(data)
    assert isinstance(outcome, Event), (outcome, data)
    _check_accepted(outcome)
    assert outcome.request.domain == data["domain"].lower().removeprefix("https://www.").strip("/")
    tally(outcome.request.operation.value)


MUTABLE_FIELDS = ("id", "type", "domain", "timezone", "goals", "shared_links", "account")


@fuzz(300)
@given(name=st.sampled_from(MUTABLE_FIELDS), value=JSONISH)
@example(name="goals", value=[{"goal_type": "event", "event_name": "x", "custom_props": {"": ""}}])
@example(name="id", value=10**5000)  # found: str() of an int over 4300 digits raised ValueError
@example(name="type", value=10**5000)  # found: so did repr() in the error message
@example(name="timezone", value=[10**5000])
@example(name="goals", value=[{"goal_type": 10**5000}])
def test_a_bad_field_is_named_in_the_error(name: str, value: object) -> None:
    """One field of a valid event replaced by anything: refused, the error names that field (or
    one inside it), or accepted as a valid event."""
    data = event(1)
    data[name] = value
    outcome = _parse(data)
    if isinstance(outcome, Event):
        _check_accepted(outcome)
        return
    assert outcome.field is not None, outcome.message
    # A type switched to goal.delete is refused for the goal it then needs.
    allowed = (name, "goal_id") if name == "type" else (name,)
    assert outcome.field.split(".")[0].split("[")[0] in allowed, (outcome.field, outcome.message)


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


def _deep(depth: int, opener: str) -> str:
    """A JSON value nested ``depth`` levels deep: ``[[1]]`` or ``{"a": {"a": 1}}``."""
    if opener == "[":
        return "[" * depth + "1" + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


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
        nested = _deep(draw(st.integers(8, 100_000)), draw(st.sampled_from("[{")))
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
    st.integers(8, 50_000).map(lambda d: _deep(d, "[")),
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


# -- the Plausible client and odd responses ------------------------------------------------------

SITE = {
    "domain": "example.com",
    "timezone": "Etc/UTC",
    "custom_properties": [],
    "tracker_script_configuration": {"id": "pa-x"},
}
GOAL = {
    "id": 1,
    "goal_type": "event",
    "event_name": "Signup",
    "page_path": None,
    "display_name": "Signup",
    "custom_props": {},
    "domain": "example.com",
}
PAGE_META = {"after": None, "before": None, "limit": 100}
#: Each client method, called as the pipeline calls it (iterators drained), and the 200 body
#: it expects.
METHODS: dict[str, tuple[Callable[[PlausibleClient], object], object]] = {
    "create_site": (lambda c: c.create_site("example.com", timezone="Etc/UTC"), SITE),
    "get_site": (lambda c: c.get_site("example.com"), SITE),
    "update_site": (lambda c: c.update_site("example.com", domain="new.example.com"), SITE),
    "delete_site": (lambda c: c.delete_site("example.com"), {"deleted": True}),
    "list_sites": (
        lambda c: list(c.list_sites()),
        {"sites": [{"domain": "a.com", "timezone": "Etc/UTC"}], "meta": PAGE_META},
    ),
    "list_teams": (
        lambda c: list(c.list_teams()),
        {"teams": [{"id": "t", "name": "T", "api_available": True}], "meta": PAGE_META},
    ),
    "ensure_shared_link": (
        lambda c: c.ensure_shared_link("example.com", "WordPress"),
        {"name": "WordPress", "url": "https://plausible.test/share/x"},
    ),
    "ensure_goal": (
        lambda c: c.ensure_goal("example.com", goal_type="event", event_name="Signup"),
        GOAL,
    ),
    "delete_goal": (lambda c: c.delete_goal("example.com", 1), {"deleted": True}),
    "list_goals": (
        lambda c: list(c.list_goals("example.com")),
        {"goals": [GOAL], "meta": PAGE_META},
    ),
    "list_custom_props": (
        lambda c: c.list_custom_props("example.com"),
        {"custom_properties": [{"property": "plan"}]},
    ),
    "add_custom_prop": (lambda c: c.add_custom_prop("example.com", "plan"), {"created": True}),
    "delete_custom_prop": (
        lambda c: c.delete_custom_prop("example.com", "plan"),
        {"deleted": True},
    ),
    "list_guests": (
        lambda c: list(c.list_guests("example.com")),
        {"guests": [{"email": "a@b.c", "role": "viewer", "status": "invited"}], "meta": PAGE_META},
    ),
    "ensure_guest": (
        lambda c: c.ensure_guest("example.com", "a@b.c", "viewer"),
        {"email": "a@b.c", "role": "viewer", "status": "invited"},
    ),
    "delete_guest": (lambda c: c.delete_guest("example.com", "a@b.c"), {"deleted": True}),
}

HTML_PAGE = (
    "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    "<body><h1>Bad Gateway</h1><p>nginx</p></body></html>"
)
#: Fragments of Plausible's real error texts, so the message-driven branches are reached.
MESSAGES = st.one_of(
    st.sampled_from(
        [
            "Too many API requests in a short period of time, the limit is 600 per 10 seconds",
            "Too many API requests, the limit is 600 per hour",
            "This domain cannot be registered",
            "Your account has reached the limit",
            "Site could not be found",
            "Missing API key",
        ]
    ),
    st.builds(
        "in a short period of time, the limit is {} per {} seconds".format,
        st.integers(0, 10**4),
        st.one_of(
            st.integers(0, 10**30).map(str),
            st.floats(0, 1e30, allow_nan=False).map(lambda f: f"{f:f}"),
            st.integers(1, 500).map(lambda z: "1" + "0" * z),
            st.sampled_from(["0", "0.0", "0.000001", "00"]),
        ),
    ),
    ANY_TEXT,
)


#: Retry-After as a server or proxy might send it: seconds, HTTP dates, and any bytes at all.
RETRY_AFTER = st.one_of(
    st.integers(0, 10**30).map(lambda i: str(i).encode()),
    st.integers(0, 999)
    .flatmap(lambda i: spliced(str(i), TRICKY_LATIN1))
    .map(lambda t: t.encode("latin-1")),
    st.sampled_from([b"Wed, 21 Oct 2015 07:28:00 GMT", b"Mon, 01 Jan 0001 00:00:00 GMT", b"-1"]),
    st.datetimes().map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S GMT").encode()),
    st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"").strip()),
)


def _wrong(value: object, draw: st.DrawFn) -> object:
    """``value`` with one part dropped, mistyped or replaced, at any depth."""
    if isinstance(value, dict) and value and draw(st.integers(0, 3)):
        key = draw(st.sampled_from(sorted(value)))
        changed = dict(value)
        if draw(st.booleans()):
            del changed[key]
        else:
            changed[key] = _wrong(value[key], draw)
        return changed
    if isinstance(value, list) and value and draw(st.booleans()):
        return [_wrong(value[0], draw), *value[1:]]
    return draw(JSONISH)


def _json_bytes(value: object) -> bytes:
    return json.dumps(value).encode("utf-8", "surrogatepass")


@st.composite
def odd_responses(draw: st.DrawFn, valid: object) -> tuple[httpx.Response, str]:
    """A response a real (or broken) server or proxy could send, and what kind of body it has."""
    status = draw(
        st.one_of(
            st.sampled_from([200, 200, 201, 204, 301, 400, 401, 402, 403, 404, 406, 409, 422]),
            st.sampled_from([429, 429, 500, 502, 503, 504]),
            st.integers(200, 599),
        )
    )
    kind = draw(
        st.sampled_from(
            ["valid", "truncated", "html", "wrong", "jsonish", "empty", "error", "deep", "bytes"]
        )
    )
    good = _json_bytes(valid)
    body = {
        "valid": lambda: good,
        "truncated": lambda: good[: draw(st.integers(0, len(good) - 1))],
        "html": lambda: HTML_PAGE.encode(),
        "wrong": lambda: _json_bytes(_wrong(valid, draw)),
        "jsonish": lambda: _json_bytes(draw(JSONISH)),
        "empty": lambda: b"",
        "error": lambda: _json_bytes(
            {draw(st.sampled_from(["error", "message", "errors"])): draw(MESSAGES)}
        ),
        "deep": lambda: _deep(
            draw(st.integers(100, 100_000)), draw(st.sampled_from("[{"))
        ).encode(),
        "bytes": lambda: draw(st.binary(max_size=200)),
    }[kind]()
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", draw(st.sampled_from([b"application/json", b"text/html", b"text/plain"])))
    ]
    if draw(st.booleans()):
        charset = draw(st.sampled_from([b"utf-8", b"latin-1", b"utf-16", b"no-such-codec", b""]))
        headers[0] = (b"content-type", headers[0][1] + b"; charset=" + charset)
    if status == 429 or draw(st.integers(0, 4)) == 0:
        retry_after = draw(RETRY_AFTER)
        headers.append((b"retry-after", retry_after))
    return httpx.Response(status, headers=headers, content=body), kind


def _client(response: httpx.Response) -> PlausibleClient:
    def handler(request: httpx.Request) -> httpx.Response:
        # A fresh copy per request: paginated methods may ask more than once.
        return httpx.Response(
            response.status_code, headers=response.headers.raw, content=response.content
        )

    return PlausibleClient(
        base_url="https://plausible.test",
        api_key="sk-fuzz",
        transport=httpx.MockTransport(handler),
        clock=lambda: 1_700_000_000.0,
    )


#: (client method, response, kind of body).
CALLS = st.sampled_from(sorted(METHODS)).flatmap(
    lambda name: odd_responses(METHODS[name][1]).map(lambda answer: (name, *answer))
)


@fuzz(400)
@given(case=CALLS)
@example(  # found: RecursionError from response.json() escaped _call
    case=("get_site", httpx.Response(200, content=b"[" * 100_000), "deep")
)
@example(  # found: RecursionError escaped _server_message too
    case=("create_site", httpx.Response(502, content=b"{" * 100_000), "deep")
)
@example(  # found: response.text raised UnicodeError ("UTF-16 stream does not start with BOM")
    case=(
        "get_site",
        httpx.Response(
            201, headers={"content-type": "text/html; charset=utf-16"}, content=b"<html>"
        ),
        "html",
    )
)
def test_every_odd_response_becomes_a_plausible_error(
    case: tuple[str, httpx.Response, str],
) -> None:
    name, response, kind = case
    call, _ = METHODS[name]
    with _client(response) as client:
        try:
            result: object = call(client)
        except PlausibleError as exc:
            result = exc
    tally(f"{kind} body -> {type(result).__name__}")
    if isinstance(result, PlausibleError):
        assert result.code
        assert str(result)
        # The documented body of a 200 is never refused.
        assert (response.status_code, kind) != (200, "valid"), result
    else:
        assert response.status_code == 200, result
        assert result is not None


@fuzz(500)
@given(
    status=st.one_of(st.sampled_from([400, 401, 402, 403, 404, 429, 500]), st.integers(201, 599)),
    message=MESSAGES,
    wrap=st.sampled_from(["error", "message", "raw"]),
    retry_after=st.none() | RETRY_AFTER,
    now=st.floats(0, 4e9),
)
@example(  # found: "²".isdigit() is true, float("²") raised ValueError
    status=429, message="x", wrap="error", retry_after="\u00b2".encode("latin-1"), now=0.0
)
@example(  # found: a burst window of 0 s divided by zero
    status=429,
    message="Too many API requests in a short period of time, the limit is 600 per 0 seconds",
    wrap="error",
    retry_after=None,
    now=1.7e9,
)
@example(  # found: a burst window of 10**20 s overflowed datetime.fromtimestamp
    status=429,
    message="in a short period of time, the limit is 1 per 100000000000000000000 seconds",
    wrap="message",
    retry_after=None,
    now=1.7e9,
)
def test_error_from_response_maps_every_error_response(
    status: int, message: str, wrap: str, retry_after: bytes | None, now: float
) -> None:
    body = (
        message.encode("utf-8", "surrogatepass") if wrap == "raw" else _json_bytes({wrap: message})
    )
    headers = [] if retry_after is None else [(b"retry-after", retry_after)]
    error = error_from_response(httpx.Response(status, headers=headers, content=body), now=now)
    assert isinstance(error, PlausibleError)
    assert error.status == status
    if isinstance(error, RateLimitedError):
        # Never in the past, and never further than the hourly window's cap.
        assert now - 1 <= error.reset_at.timestamp() <= now + 3600 + 1, error.reset_at


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_accepts_its_valid_body(name: str) -> None:
    """The fuzz test's baseline: with the documented 200 body, each method returns."""
    call, valid = METHODS[name]
    with _client(httpx.Response(200, json=valid)) as client:
        assert call(client) is not None

"""``provision import``: streaming, validation at the edge, batching, deduplication, priority."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import event as sa_event

from producers.events import parse_event
from producers.importer import import_file
from provision.cli import main
from testkit.databases import migrated_engine
from testkit.events import event, jsonl
from testkit.sandbox_process import REPO_ROOT
from worker.jobs.intake import NewJob
from worker.jobs.states import JobStatus, Priority
from worker.jobs.store import JobStore
from worker.settings import get_settings


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(migrated_engine(f"sqlite:///{tmp_path / 'jobs.db'}"))


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Settings for the CLI: a SQLite file and an in-memory broker (no embedded workers)."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    migrated_engine(url).dispose()  # with a broker, creating the schema is the operator's step
    monkeypatch.setenv("PROVISIONER_DATABASE_URL", url)
    monkeypatch.setenv("PROVISIONER_BROKER_URL", "memory://")
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def messy_file(path: Path) -> Path:
    """A file with one row of every kind of problem, between valid rows."""
    first = event(1)
    lines = [
        b"\xef\xbb\xbf" + json.dumps(first).encode() + b"\r\n",  # 1 BOM + CRLF: valid
        b'{"id": "evt_x", "domain": \n',  # 2 bad JSON
        json.dumps({"id": "evt_3", "timezone": "Etc/UTC"}).encode() + b"\n",  # 3 missing domain
        json.dumps(event(4, domain="shop@example.com")).encode() + b"\n",  # 4 reserved char
        json.dumps(event(5, timezone="Mars/Olympus")).encode() + b"\n",  # 5 bad timezone
        json.dumps(event(6, goals=[{"goal_type": "visit"}])).encode() + b"\n",  # 6 goal type
        b"   \r\n",  # 7 blank: skipped silently
        b'{"id": "evt_8", "domain": "caf\xe9.example.com"}\n',  # 8 not UTF-8
        json.dumps(event(9)).encode() + b"\r\n",  # 9 valid, CRLF
        json.dumps(first).encode() + b"\n",  # 10 duplicate of line 1
        json.dumps(event(1, domain="other.example.com")).encode() + b"\n",  # 11 key reused
        json.dumps(event(12, domain="a" * 250 + ".example.com")).encode() + b"\n",  # 12 too long
        json.dumps(event(13, shared_links=["WordPress - Shared Dashboard"])).encode() + b"\n",
        b"\n",  # 14 blank
        json.dumps(event(15, domain="https://www.Shop.Example.com/")).encode(),  # 15 no newline
    ]
    path.write_bytes(b"".join(lines))
    return path


EXPECTED_INVALID = [
    (2, None, "not valid JSON"),
    (3, "domain", "domain is required"),
    (4, "domain", "must not contain URI reserved characters"),
    (5, "timezone", "'Mars/Olympus' is not an IANA timezone"),
    (6, "goals[0].goal_type", "unknown goal_type 'visit'"),
    (8, None, "not valid UTF-8"),
    (11, "id", "already belongs to job"),
    (12, "domain", "at most 255 allowed"),
    (13, "shared_links[0]", "is reserved by Plausible"),
]


def test_every_kind_of_invalid_row_is_reported_and_valid_rows_are_queued(
    store: JobStore, tmp_path: Path
) -> None:
    summary = import_file(store, messy_file(tmp_path / "messy.jsonl"), batch_size=4)

    got = [(row.line, row.field, row.reason) for row in summary.invalid_rows]
    assert [(line, field) for line, field, _ in got] == [(n, f) for n, f, _ in EXPECTED_INVALID]
    for (_, _, reason), (_, _, expected) in zip(got, EXPECTED_INVALID, strict=True):
        assert expected in reason
    assert (summary.queued, summary.duplicate, summary.invalid) == (3, 1, 9)
    jobs = store.batch(summary.batch_id)
    assert sorted(job.domain for job in jobs) == [
        "shop.example.com",  # normalised exactly as Plausible does
        "site1.example.com",
        "site9.example.com",
    ]
    # Written for the scheduler to dispatch: queued, no message yet, in the bulk class.
    assert {(job.status, job.dispatched_at, job.priority) for job in jobs} == {
        (JobStatus.queued, None, Priority.bulk)
    }


def test_importing_the_same_file_twice_enqueues_nothing_new(
    store: JobStore, tmp_path: Path
) -> None:
    path = tmp_path / "signups.jsonl"
    path.write_text(jsonl(*(event(n) for n in range(50)), {"domain": "nokey.example.com"}))
    first = import_file(store, path, batch_size=7)
    second = import_file(store, path, batch_size=7)
    assert (first.queued, first.duplicate) == (51, 0)
    assert (second.queued, second.duplicate, second.invalid) == (0, 51, 0)
    assert store.batch(second.batch_id) == []
    assert len(store.batch(first.batch_id)) == 51


def test_csv_rows_map_to_the_same_events(store: JobStore, tmp_path: Path) -> None:
    path = tmp_path / "signups.csv"
    path.write_text(
        "id,type,domain,timezone,goals,shared_links,goal_id,event_name,page_path\r\n"
        "c1,,shop.example.com,Europe/Berlin,event:Signup|page:/pricing/*,WordPress|Docs,,,\r\n"
        'c2,site.provision,blog.example.org,,"[{""goal_type"": ""event"", ""event_name"": ""A""}]",,,,\r\n'
        "c3,goal.delete,shop.example.com,,,,,Signup,\r\n"
        "c4,,bad domain!,,,,,,\r\n"
        "c5,,x.example.com,,visit:/a,,,,\r\n",
        encoding="utf-8",
    )
    summary = import_file(store, path)
    assert [(r.line, r.field) for r in summary.invalid_rows] == [
        (5, "domain"),
        (6, "goals[0].goal_type"),
    ]
    assert summary.queued == 3
    by_key = {job.idempotency_key: job.spec for job in store.batch(summary.batch_id)}
    shop = by_key["c1"]
    assert [g.natural_key for g in shop.goals] == ["event:Signup", "page:/pricing/*"]
    assert shop.shared_links == ("WordPress", "Docs")
    assert shop.timezone == "Europe/Berlin"
    assert [g.event_name for g in by_key["c2"].goals] == ["A"]
    assert by_key["c3"].goal is not None
    assert by_key["c3"].goal.event_name == "Signup"


def priorities(store: JobStore, batch_id: str) -> dict[str, Priority]:
    return {job.idempotency_key: job.priority for job in store.batch(batch_id)}


def test_imported_rows_are_bulk_unless_the_import_or_the_row_says_otherwise(
    store: JobStore, tmp_path: Path
) -> None:
    path = tmp_path / "signups.jsonl"
    path.write_text(jsonl(event(1), event(2, priority="interactive"), event(3, priority="bulk")))
    by_default = import_file(store, path)
    assert priorities(store, by_default.batch_id) == {
        "evt_1": Priority.bulk,
        "evt_2": Priority.interactive,  # the row's own priority wins
        "evt_3": Priority.bulk,
    }
    other = tmp_path / "urgent.jsonl"
    other.write_text(jsonl(event(4), event(5, priority="bulk")))
    urgent = import_file(store, other, priority=Priority.interactive)
    assert priorities(store, urgent.batch_id) == {
        "evt_4": Priority.interactive,
        "evt_5": Priority.bulk,
    }


def test_rows_with_an_unknown_account_or_priority_are_invalid_naming_the_field(
    store: JobStore, tmp_path: Path
) -> None:
    path = tmp_path / "accounts.jsonl"
    path.write_text(
        jsonl(
            event(1, account="default"),
            event(2, account="nobody"),
            event(3, priority="urgent"),
            event(4),
        )
    )
    summary = import_file(store, path, accounts=["default"])
    assert [(r.line, r.field) for r in summary.invalid_rows] == [(2, "account"), (3, "priority")]
    assert "nobody" in summary.invalid_rows[0].reason
    assert sorted(job.idempotency_key for job in store.batch(summary.batch_id)) == [
        "evt_1",
        "evt_4",
    ]


def test_csv_account_and_priority_columns_are_read(store: JobStore, tmp_path: Path) -> None:
    path = tmp_path / "accounts.csv"
    path.write_text(
        "id,domain,account,priority\n"
        "a1,a1.example.com,agency,interactive\n"
        "a2,a2.example.com,,\n"
        "a3,a3.example.com,nobody,\n"
        "a4,a4.example.com,,urgent\n"
        "a5,a5.example.com,agency,bulk\n",
        encoding="utf-8",
    )
    summary = import_file(store, path, accounts=["default", "agency"])
    assert [(r.line, r.field) for r in summary.invalid_rows] == [(4, "account"), (5, "priority")]
    jobs = {job.idempotency_key: job for job in store.batch(summary.batch_id)}
    assert {key: (job.account, job.priority) for key, job in jobs.items()} == {
        "a1": ("agency", Priority.interactive),
        "a2": ("default", Priority.bulk),  # empty cells: absent
        "a5": ("agency", Priority.bulk),
    }
    assert jobs["a1"].spec.account == "agency"


def test_jsonl_rows_that_crash_parsers_are_reported_per_line(
    store: JobStore, tmp_path: Path
) -> None:
    path = tmp_path / "edge.jsonl"
    lines = [
        json.dumps(event(1)),
        json.dumps({"type": [], "domain": "a.example.com"}),  # 2 unhashable type
        '{"id": "evt_3", "domain": "c.example.com", "goal_id": ' + "9" * 5000 + "}",  # 3
        "[" * 100_000,  # 4 RecursionError
        json.dumps(event(5, id="evt_\ud800")),  # 5 lone surrogate
        json.dumps(event(6, domain="s6\u0000.example.com")),  # 6 NUL
        json.dumps(event(7, shared_links=["Docs\x00"])),  # 7 NUL in a link name
        json.dumps(event(8)),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = import_file(store, path)
    assert [(r.line, r.field) for r in summary.invalid_rows] == [
        (2, "type"),
        (3, None),
        (4, None),
        (5, "id"),
        (6, "domain"),
        (7, "shared_links[0]"),
    ]
    assert "4300" in summary.invalid_rows[1].reason
    assert "nested too deeply" in summary.invalid_rows[2].reason
    assert summary.queued == 2


def test_csv_records_that_crash_the_reader_are_reported_and_reading_resumes(
    store: JobStore, tmp_path: Path
) -> None:
    path = tmp_path / "edge.csv"
    rows = [
        "id,domain,goals,shared_links",  # 1
        "c2,s2.example.com,,",  # 2 valid
        "c3,s3.example.com,[" + "9" * 5000 + "],",  # 3 huge integer in a JSON cell
        "c4,s4.example.com,," + "[" * 100_000,  # 4 deeply nested JSON cell
        'c5,s5.exa"mple.com,,',  # 5 stray quote inside an unquoted cell: a literal quote
        "c6,s6.example.com,,",  # 6 valid
        "c7,s7.example.com,," + "x" * 200_000,  # 7 cell over the field size limit
        "c8,s8.example.com,,",  # 8 valid
        "c9,s9.example.com\rx,,",  # 9 stray carriage return
        "c10,s10.example.com,,",  # 10 valid
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    summary = import_file(store, path)
    got = [(r.line, r.field) for r in summary.invalid_rows]
    assert got == [(3, "goals"), (4, "shared_links"), (5, "domain"), (7, None), (9, None)]
    assert "field larger than field limit" in summary.invalid_rows[3].reason
    assert "reading resumes at line 8" in summary.invalid_rows[3].reason
    assert sorted(job.idempotency_key for job in store.batch(summary.batch_id)) == [
        "c10",
        "c2",
        "c6",
        "c8",
    ]


def test_an_unclosed_csv_quote_is_one_bad_record_not_a_crash(
    store: JobStore, tmp_path: Path
) -> None:
    path = tmp_path / "quote.csv"
    path.write_text(
        'id,domain\nc2,s2.example.com\nc3,"s3.example.com\nc4,s4.example.com\n', encoding="utf-8"
    )
    summary = import_file(store, path)
    # The quoted cell runs to the end of the file: one record from line 3, whose domain cell
    # swallowed line 4, is refused; the row before it is queued.
    assert [(r.line, r.field) for r in summary.invalid_rows] == [(3, "domain")]
    assert summary.queued == 1


def test_postgres_import_is_batched_and_idempotent(postgres_url: str, tmp_path: Path) -> None:
    store = JobStore(migrated_engine(postgres_url))
    path = tmp_path / "signups.jsonl"
    path.write_text(jsonl(*(event(n) for n in range(1200)), event(5)))
    first = import_file(store, path, batch_size=500)
    second = import_file(store, path, batch_size=500)
    assert (first.queued, first.duplicate) == (1200, 1)
    assert (second.queued, second.duplicate) == (0, 1201)
    store.engine.dispose()


def test_cli_reports_invalid_lines_and_exits_non_zero(cli_env: str, tmp_path: Path) -> None:
    path = messy_file(tmp_path / "messy.jsonl")
    runner = CliRunner()
    result = runner.invoke(main, ["import", str(path)])
    assert result.exit_code == 1, result.output
    assert "queued=3 duplicate=1 invalid=9" in result.stdout
    assert "line 5: timezone: 'Mars/Olympus' is not an IANA timezone" in result.stderr
    again = runner.invoke(main, ["import", "--json", str(path)])
    assert again.exit_code == 1
    summary = json.loads(again.stdout)
    assert (summary["queued"], summary["duplicate"], summary["invalid"]) == (0, 4, 9)
    assert summary["invalid_rows"][0] == {
        "line": 2,
        "field": None,
        "reason": summary["invalid_rows"][0]["reason"],
    }


def test_cli_exits_zero_when_every_row_is_valid(cli_env: str, tmp_path: Path) -> None:
    path = tmp_path / "ok.jsonl"
    path.write_text(jsonl(event(1), event(2)))
    result = CliRunner().invoke(main, ["import", "--json", str(path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["queued"] == 2


def test_cli_priority_sets_the_class_of_rows_that_name_none(cli_env: str, tmp_path: Path) -> None:
    path = tmp_path / "ok.jsonl"
    path.write_text(jsonl(event(1), event(2, priority="bulk")))
    runner = CliRunner()
    refused = runner.invoke(main, ["import", "--priority", "urgent", str(path)])
    assert refused.exit_code == 2
    assert "urgent" in refused.output
    result = runner.invoke(main, ["import", "--json", "--priority", "interactive", str(path)])
    assert result.exit_code == 0, result.output
    urgent = json.loads(result.stdout)["batch_id"]
    other = tmp_path / "more.jsonl"
    other.write_text(jsonl(event(3)))
    result = runner.invoke(main, ["import", "--json", str(other)])
    assert result.exit_code == 0, result.output
    default = json.loads(result.stdout)["batch_id"]
    store = JobStore(migrated_engine(cli_env))
    assert priorities(store, urgent) == {"evt_1": Priority.interactive, "evt_2": Priority.bulk}
    assert priorities(store, default) == {"evt_3": Priority.bulk}
    store.engine.dispose()


MEMORY_PROBE = textwrap.dedent(
    """
    import gc, json, sys
    from pathlib import Path
    from producers.importer import import_file
    from testkit.databases import migrated_engine
    from worker.jobs.store import JobStore

    def rss_kib():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    store = JobStore(migrated_engine(sys.argv[2]))
    import_file(store, Path(sys.argv[3]))  # warm-up: imports, caches, first batches
    gc.collect()
    baseline = rss_kib()
    samples, lines = [], [0]

    def progress(_bytes):
        lines[0] += 1
        if lines[0] % 2000 == 0:
            samples.append(rss_kib() - baseline)

    summary = import_file(store, Path(sys.argv[1]), on_progress=progress)
    print(json.dumps({"queued": summary.queued, "samples_kib": samples}))
    """
)


def test_a_100k_line_file_is_imported_in_flat_memory(tmp_path: Path) -> None:
    big = tmp_path / "big.jsonl"
    with big.open("w") as handle:
        for n in range(100_000):
            handle.write(
                json.dumps(event(n, goals=[{"goal_type": "page", "page_path": f"/p/{n}"}])) + "\n"
            )
    warm = tmp_path / "warm.jsonl"
    warm.write_text(
        jsonl(*(event(n, id=f"warm_{n}", domain=f"w{n}.example.com") for n in range(2000)))
    )
    size_kib = big.stat().st_size // 1024  # about 20 MiB; parsed rows would take ~10x that
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            MEMORY_PROBE,
            str(big),
            f"sqlite:///{tmp_path / 'big.db'}",
            str(warm),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(probe.stdout)
    assert result["queued"] == 100_000
    samples = result["samples_kib"]
    assert len(samples) == 50
    # Resident memory, sampled every 2,000 lines, stays within a few MiB of where it started
    # (SQLite cache, allocator) and does not grow with the lines read: holding the file even as
    # raw bytes would add its whole size by the end, and as parsed events about ten times it.
    assert max(samples) < size_kib // 4, (samples, size_kib)
    assert samples[-1] - samples[4] < size_kib // 10, (samples, size_kib)


def test_bulk_inserts_go_in_key_order_and_report_by_input_position(store: JobStore) -> None:
    """Concurrent importers inserting overlapping keys in opposite orders would deadlock on
    PostgreSQL; rows sorted by key take their locks in one global order."""
    inserted: list[list[str]] = []

    def record(conn: Any, clause: Any, multiparams: Any, params: Any, options: Any) -> None:
        rows = multiparams[0] if multiparams and isinstance(multiparams[0], list) else multiparams
        keys = [
            row["idempotency_key"] for row in rows if isinstance(row, dict) and "fingerprint" in row
        ]
        if keys:
            inserted.append(keys)

    sa_event.listen(store.engine, "before_execute", record)
    requests = [parse_event(event(n)).request for n in (3, 1, 2)]
    store.enqueue_many([NewJob("k-1", requests[1])])
    result = store.enqueue_many(
        [
            NewJob("k-3", requests[0]),
            NewJob("k-1", requests[1]),
            NewJob("k-2", requests[2]),
            NewJob("k-3", requests[0]),
        ]
    )
    assert inserted[-1] == ["k-1", "k-2", "k-3"]  # given as k-3, k-1, k-2
    assert sorted(result.created) == [0, 2]
    assert sorted(result.duplicate) == [1, 3]
    assert result.duplicate[3] == result.created[0]
    assert store.get(result.created[0]).idempotency_key == "k-3"  # type: ignore[union-attr]

"""Reading signup files row by row: JSON Lines or CSV, streamed, never held in memory.

Every row comes out as ``Row(line, data, error)``: ``data`` is the event as a dict (a CSV row is
mapped to the same shape as a JSON Lines object), ``error`` says why the row could not even be
read. Byte-level rules, the same for both formats:

- a UTF-8 byte order mark at the start of the file is stripped;
- lines may end in LF or CRLF;
- blank (whitespace-only) lines are skipped silently, but still count for line numbers;
- a line that is not valid UTF-8 is reported (``field`` None) and the next line is read.

CSV columns (header row required, order free, unknown columns refused): ``id, type, domain,
timezone, goals, shared_links, goal_id, event_name, page_path``. An empty cell means "absent".
``goals`` is ``event:Signup|page:/pricing/*`` (``|`` between goals, ``type:value`` each) or a
JSON array as in JSON Lines; ``shared_links`` is ``WordPress|Docs`` or a JSON array.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Format = Literal["jsonl", "csv"]
BOM = b"\xef\xbb\xbf"
CSV_COLUMNS = (
    "id",
    "type",
    "domain",
    "timezone",
    "goals",
    "shared_links",
    "goal_id",
    "event_name",
    "page_path",
)


@dataclass(frozen=True)
class Row:
    line: int
    data: dict[str, Any] | None
    error: str | None = None
    field: str | None = None


def detect_format(path: Path) -> Format:
    return "csv" if path.suffix.lower() == ".csv" else "jsonl"


def read_rows(handle: Iterable[bytes], fmt: Format) -> Iterator[Row]:
    """The rows of an open binary file, one at a time."""
    lines = _decoded_lines(handle)
    return _csv_rows(lines) if fmt == "csv" else _jsonl_rows(lines)


def _decoded_lines(handle: Iterable[bytes]) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, text without its line ending, or None and the decoding error)."""
    for number, raw in enumerate(handle, start=1):
        if number == 1 and raw.startswith(BOM):
            raw = raw[len(BOM) :]
        raw = raw.rstrip(b"\r\n")
        try:
            yield number, raw.decode("utf-8"), None
        except UnicodeDecodeError as exc:
            yield (
                number,
                None,
                f"not valid UTF-8 (byte {exc.start + 1}: {raw[exc.start : exc.start + 1]!r})",
            )


def _jsonl_rows(lines: Iterable[tuple[int, str | None, str | None]]) -> Iterator[Row]:
    for number, text, problem in lines:
        if text is None:
            yield Row(number, None, problem)
            continue
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            yield Row(number, None, f"not valid JSON: {exc.msg} (column {exc.colno})")
            continue
        if not isinstance(data, dict):
            yield Row(number, None, "an event must be a JSON object")
            continue
        yield Row(number, data)


def _csv_rows(lines: Iterable[tuple[int, str | None, str | None]]) -> Iterator[Row]:
    header: list[str] | None = None
    # A quoted cell may span lines: collect physical lines until the record is complete.
    pending: list[str] = []
    start = 0
    for number, text, problem in lines:
        if text is None:
            pending, start = [], 0
            yield Row(number, None, problem)
            continue
        if not pending and not text.strip():
            continue
        if not pending:
            start = number
        pending.append(text)
        joined = "\n".join(pending)
        if joined.count('"') % 2:  # inside a quoted cell: the record continues on the next line
            continue
        pending = []
        cells = next(csv.reader([joined]), [])
        if header is None:
            header = [cell.strip().lower() for cell in cells]
            unknown = [name for name in header if name not in CSV_COLUMNS]
            if unknown or "domain" not in header:
                yield Row(
                    start, None, f"bad CSV header: unknown {unknown}, need 'domain'", "header"
                )
                return
            continue
        if len(cells) != len(header):
            yield Row(start, None, f"{len(cells)} cells, but the header has {len(header)}")
            continue
        try:
            yield Row(start, csv_event(dict(zip(header, cells, strict=True))))
        except ValueError as exc:
            yield Row(start, None, str(exc.args[1]), str(exc.args[0]))
    if pending:
        yield Row(start, None, "unterminated quoted cell at end of file")


def csv_event(cells: dict[str, str]) -> dict[str, Any]:
    """A CSV row as a signup event; raises ValueError(field, reason) for a malformed cell."""
    event: dict[str, Any] = {k: v.strip() for k, v in cells.items() if v.strip() != ""}
    if "goals" in event:
        event["goals"] = _goals_cell(event["goals"])
    if "shared_links" in event:
        event["shared_links"] = _list_cell("shared_links", event["shared_links"])
    return event


def _list_cell(field: str, cell: str) -> Any:
    if cell.startswith("["):
        try:
            return json.loads(cell)
        except json.JSONDecodeError as exc:
            raise ValueError(field, f"not a valid JSON array: {exc.msg}") from None
    return [part.strip() for part in cell.split("|") if part.strip()]


def _goals_cell(cell: str) -> Any:
    if cell.startswith("["):
        return _list_cell("goals", cell)
    goals = []
    for part in _list_cell("goals", cell):
        kind, sep, value = part.partition(":")
        if not sep:
            raise ValueError("goals", f"{part!r} should be event:<name> or page:<path>")
        kind = kind.strip()
        key = {"event": "event_name", "page": "page_path"}.get(kind, "value")
        goals.append({"goal_type": kind, key: value.strip()})
    return goals

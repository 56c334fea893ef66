"""Reading signup files row by row: JSON Lines or CSV, streamed, never held in memory.

Every row comes out as ``Row(line, data, error)``: ``data`` is the event as a dict (a CSV row is
mapped to the same shape as a JSON Lines object), ``error`` says why the row could not even be
read. Byte-level rules, the same for both formats:

- a UTF-8 byte order mark at the start of the file is stripped;
- lines may end in LF or CRLF;
- blank (whitespace-only) lines are skipped silently, but still count for line numbers;
- a line that is not valid UTF-8 is reported (``field`` None) and the next line is read.

CSV columns (header row required, order free, unknown columns refused): ``id, type, domain,
timezone, goals, shared_links, goal_id, event_name, page_path, account, priority, callback_url,
custom_props, guests, property, email, tracker_script_configuration``. An empty cell means
"absent".
``goals`` is ``event:Signup|page:/pricing/*`` (``|`` between goals, ``type:value`` each) or a
JSON array as in JSON Lines; ``shared_links`` and ``custom_props`` are ``WordPress|Docs`` or a
JSON array; ``guests`` is ``owner@shop.example:viewer|dev@shop.example:editor`` or a JSON array;
``tracker_script_configuration`` is ``installation_type=manual|outbound_links=true`` or a JSON
object.
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
    "account",
    "priority",
    "callback_url",
    "custom_props",
    "guests",
    "property",
    "email",
    "tracker_script_configuration",
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


Line = tuple[int, str, str | None]


def _decoded_lines(handle: Iterable[bytes]) -> Iterator[Line]:
    """(line number, text without its line ending, None) or, for a line that is not valid UTF-8,
    (line number, the text with U+FFFD for the bad bytes, why it could not be decoded)."""
    for number, raw in enumerate(handle, start=1):
        if number == 1 and raw.startswith(BOM):
            raw = raw[len(BOM) :]
        raw = raw.rstrip(b"\r\n")
        try:
            yield number, raw.decode("utf-8"), None
        except UnicodeDecodeError as exc:
            yield (
                number,
                raw.decode("utf-8", "replace"),
                f"not valid UTF-8 (byte {exc.start + 1}: {raw[exc.start : exc.start + 1]!r})",
            )


def _jsonl_rows(lines: Iterable[Line]) -> Iterator[Row]:
    for number, text, problem in lines:
        if problem is not None:
            yield Row(number, None, problem)
            continue
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            yield Row(number, None, f"not valid JSON: {exc.msg} (column {exc.colno})")
            continue
        except ValueError as exc:  # e.g. an integer of more than 4300 digits
            yield Row(number, None, f"not valid JSON: {exc}")
            continue
        except RecursionError:
            yield Row(number, None, "not valid JSON: nested too deeply")
            continue
        if not isinstance(data, dict):
            yield Row(number, None, "an event must be a JSON object")
            continue
        yield Row(number, data)


def _csv_rows(lines: Iterable[Line]) -> Iterator[Row]:
    """CSV records, read by ``csv.reader`` (a quoted cell may span lines).

    A record the reader refuses (a cell longer than ``csv.field_size_limit()``, 131072 characters
    by default, or a stray carriage return) is reported with the lines it covered, and reading
    resumes on the next line: the rows before and after it are unaffected. A quote that opens a
    cell and is never closed makes the cell run on over the following lines, up to that limit (or
    the end of the file); those lines are reported as part of the one malformed record.
    """
    consumed: list[int] = []  # line numbers handed to the reader since the last record
    undecodable: list[Row] = []  # and those of them that were not valid UTF-8

    def feed() -> Iterator[str]:
        for number, text, problem in lines:
            consumed.append(number)
            if problem is not None:
                undecodable.append(Row(number, None, problem))
            yield text + "\n"

    reader = csv.reader(feed())
    header: list[str] | None = None
    while True:
        error: csv.Error | None = None
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            cells, error = [], exc
        numbers, consumed[:] = list(consumed), []
        problems, undecodable[:] = list(undecodable), []
        if not numbers:  # pragma: no cover - the reader always consumes a line
            continue
        start, end = numbers[0], numbers[-1]
        if problems:
            yield from problems
            continue
        span = f"line {start}" if start == end else f"lines {start}-{end}"
        if error is not None:
            problem = f"malformed CSV record ({span}): {error}; reading resumes at line {end + 1}"
            yield Row(start, None, problem, "header" if header is None else None)
            if header is None:
                return
            continue
        if len(cells) <= 1 and not "".join(cells).strip():
            continue  # a blank line
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
            hint = "" if start == end else f" (one record over {span}: is a quote unbalanced?)"
            yield Row(start, None, f"{len(cells)} cells, but the header has {len(header)}{hint}")
            continue
        try:
            yield Row(start, csv_event(dict(zip(header, cells, strict=True))))
        except CellError as exc:
            yield Row(start, None, exc.reason, exc.field)


class CellError(ValueError):
    """A malformed CSV cell."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(field, reason)
        self.field = field
        self.reason = reason


def csv_event(cells: dict[str, str]) -> dict[str, Any]:
    """A CSV row as a signup event; raises CellError for a malformed cell."""
    event: dict[str, Any] = {k: v.strip() for k, v in cells.items() if v.strip() != ""}
    if "goals" in event:
        event["goals"] = _goals_cell(event["goals"])
    if "shared_links" in event:
        event["shared_links"] = _list_cell("shared_links", event["shared_links"])
    if "custom_props" in event:
        event["custom_props"] = _list_cell("custom_props", event["custom_props"])
    if "guests" in event:
        event["guests"] = _guests_cell(event["guests"])
    if "tracker_script_configuration" in event:
        event["tracker_script_configuration"] = _tracker_cell(event["tracker_script_configuration"])
    return event


def _tracker_cell(cell: str) -> Any:
    """``installation_type=manual|outbound_links=true``: ``true``, ``false`` and ``null`` as in
    JSON, anything else a string; or a JSON object."""
    field = "tracker_script_configuration"
    if cell.startswith("{"):
        try:
            return json.loads(cell)
        except (ValueError, RecursionError) as exc:
            raise CellError(field, f"not a valid JSON object: {exc}") from None
    settings: dict[str, Any] = {}
    for part in _list_cell(field, cell):
        name, sep, value = part.partition("=")
        if not sep:
            raise CellError(field, f"{part!r} should be <setting>=<value>")
        value = value.strip()
        settings[name.strip()] = {"true": True, "false": False, "null": None}.get(value, value)
    return settings


def _guests_cell(cell: str) -> Any:
    if cell.startswith("["):
        return _list_cell("guests", cell)
    guests = []
    for part in _list_cell("guests", cell):
        email, sep, role = part.rpartition(":")
        if not sep:
            raise CellError("guests", f"{part!r} should be <email>:viewer or <email>:editor")
        guests.append({"email": email.strip(), "role": role.strip()})
    return guests


def _list_cell(field: str, cell: str) -> Any:
    if cell.startswith("["):
        try:
            return json.loads(cell)
        except json.JSONDecodeError as exc:
            raise CellError(field, f"not a valid JSON array: {exc.msg}") from None
        except ValueError as exc:  # e.g. an integer of more than 4300 digits
            raise CellError(field, f"not a valid JSON array: {exc}") from None
        except RecursionError:
            raise CellError(field, "not a valid JSON array: nested too deeply") from None
    return [part.strip() for part in cell.split("|") if part.strip()]


def _goals_cell(cell: str) -> Any:
    if cell.startswith("["):
        return _list_cell("goals", cell)
    goals = []
    for part in _list_cell("goals", cell):
        kind, sep, value = part.partition(":")
        if not sep:
            raise CellError("goals", f"{part!r} should be event:<name> or page:<path>")
        kind = kind.strip()
        key = {"event": "event_name", "page": "page_path"}.get(kind, "value")
        goals.append({"goal_type": kind, key: value.strip()})
    return goals

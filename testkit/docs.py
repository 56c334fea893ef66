"""Reading README.md and the pages of ``docs/`` as the tests check them against the code: a
section, a table's cells, the links, and the ``provision`` command lines a page shows with
whether the CLI accepts them."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click

from testkit.cli import REPO

DOCS = REPO / "docs"
README = REPO / "README.md"

_FENCE = re.compile(r"^(```|~~~)")
_CODE_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
#: Ends the command a shell line runs.
_SHELL_BREAKS = frozenset({"&&", "||", ";", "|", "&", "<", ">", "2>", ">>"})
_OPTION = re.compile(r"^(-{1,2}[A-Za-z][\w-]*)")


def page(name: str) -> str:
    """A page of the docs, by file name (``operating.md``)."""
    return (DOCS / name).read_text(encoding="utf-8")


def pages() -> dict[str, str]:
    """Every page of the docs, by file name."""
    return {path.name: path.read_text(encoding="utf-8") for path in sorted(DOCS.glob("*.md"))}


def section(text: str, heading: str) -> str:
    """The body of the section whose heading line is exactly ``heading`` (``## Settings``), up
    to the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = _lines(text)
    starts = [i for i, (line, code) in enumerate(lines) if line == heading and not code]
    if not starts:
        raise AssertionError(f"no section {heading!r}")
    body: list[str] = []
    for line, code in lines[starts[0] + 1 :]:
        match = re.match(r"^(#+) ", line)
        if match and not code and len(match.group(1)) <= level:
            break
        body.append(line)
    return "\n".join(body)


def _lines(text: str) -> list[tuple[str, bool]]:
    """Each line of ``text``, and whether it is code (a fence or inside one)."""
    marked, inside = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            inside = not inside
            marked.append((line, True))
        else:
            marked.append((line, inside))
    return marked


def table(text: str) -> list[list[str]]:
    """The body rows of the first Markdown table in ``text``, each a list of stripped cells
    (a ``|`` inside a code span or escaped as ``\\|`` does not split a cell)."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    if len(rows) < 2:
        raise AssertionError("no table")
    return [_cells(row) for row in rows[2:]]


def _cells(row: str) -> list[str]:
    cells, current, in_code, i = [], "", False, 0
    body = row.strip()[1:]
    while i < len(body):
        char = body[i]
        if char == "\\" and body[i + 1 : i + 2] == "|":
            current += "|"
            i += 2
            continue
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code:
            cells.append(current.strip())
            current = ""
        else:
            current += char
        i += 1
    if current.strip():
        cells.append(current.strip())
    return cells


def links(text: str) -> list[str]:
    """The targets of the inline links and images of ``text``, outside code."""
    prose = _CODE_SPAN.sub("", "\n".join(line for line, code in _lines(text) if not code))
    return re.findall(r"\]\(([^)\s]+)\)", prose)


def github_anchor(heading: str) -> str:
    """The anchor GitHub (and MkDocs, for plain headings) gives a heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of every heading of a Markdown page."""
    return {
        github_anchor(line.lstrip("#"))
        for line, code in _lines(text)
        if re.match(r"^#+ ", line) and not code
    }


def provision_commands(text: str) -> list[list[str]]:
    """Every ``provision`` command a page shows, in its code blocks and code spans, as the words
    after ``provision`` (up to the end of that shell command)."""
    snippets: list[str] = []
    for line, code in _lines(text):
        if _FENCE.match(line):
            continue
        snippets.extend([line] if code else _CODE_SPAN.findall(line))
    commands = []
    for snippet in snippets:
        try:
            words = shlex.split(snippet, comments=True)
        except ValueError:  # a quote a code span leaves open: split on spaces
            words = snippet.split()
        for at, word in enumerate(words):
            if word == "provision" or word.endswith("/provision"):
                rest: list[str] = []
                for following in words[at + 1 :]:
                    if following in _SHELL_BREAKS:
                        break
                    rest.append(following)
                commands.append(rest)
    return commands


def problems_with(words: list[str]) -> list[str]:
    """What the CLI would refuse in ``provision WORDS``: a command or an option it does not have
    (``provision worker`` passes its options to Celery's worker, so they are checked there).
    Words in capitals (``REF``) and bracketed alternatives are placeholders."""
    from celery.bin.worker import worker as celery_worker

    from provision.cli import main

    if not words or not re.fullmatch(r"[a-z][a-z-]*", words[0]):
        return []  # `provision` alone, `provision COMMAND --help`
    command: click.Command = main
    shown = "provision"
    rest = list(words)
    while isinstance(command, click.Group) and rest and re.fullmatch(r"[a-z][a-z-]*", rest[0]):
        name = rest.pop(0)
        shown += f" {name}"
        found = command.get_command(click.Context(command), name)
        if found is None:
            return [f"`{shown}`: no such command"]
        command = found
    accepted = _options(command) | _options(main) | {"--help"}
    if command.name == "worker":
        accepted |= _options(celery_worker)
    unknown = []
    for word in rest:
        match = _OPTION.match(word.strip("[]()`,"))
        if match and match.group(1) not in accepted:
            unknown.append(f"`{shown}`: no option {match.group(1)}")
    return unknown


def _options(command: click.Command) -> set[str]:
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}


def cited_tests(text: str) -> list[str]:
    """Every test module or test a page cites: ``tests/....py`` or ``tests/....py::test_name``."""
    return re.findall(r"\btests/[\w/]+\.py(?:::\w+)?", text)


def missing_test(citation: str) -> str | None:
    """Why a cited test does not exist, or None."""
    path, _, name = citation.partition("::")
    file = REPO / path
    if not file.is_file():
        return f"{citation}: no file {path}"
    if name and not re.search(rf"^(async )?def {re.escape(name)}\(", file.read_text(), re.M):
        return f"{citation}: no test {name} in {path}"
    return None


def relative_file(base: Path, target: str) -> Path:
    """The file a relative link of a page in ``base`` points at."""
    return (base / target.split("#", 1)[0]).resolve()

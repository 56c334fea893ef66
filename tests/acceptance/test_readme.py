"""README.md says what is true and stays a front page: its two commands are the ones that run
the demo and the tests, every ``provision`` command and option it shows exists, its exit codes
are the CLI's, and its links lead to pages and headings of ``docs/`` that exist. The settings
table lives in ``docs/configuration.md`` (``tests/unit/test_docs.py``)."""

from __future__ import annotations

import tomllib

from provision.cli import EXIT_CONFIGURATION, EXIT_FAILED, EXIT_JOBS_FAILED
from testkit import docs
from testkit.cli import REPO

RUN_THE_DEMO = "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/provision demo"
RUN_THE_TESTS = "python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]' && .venv/bin/pytest"
#: A front page: the rest is in docs/.
MAX_LINES = 250


def readme() -> str:
    return docs.README.read_text(encoding="utf-8")


def test_the_readme_gives_the_two_commands_and_they_name_what_exists() -> None:
    lines = readme().splitlines()
    assert RUN_THE_DEMO in lines
    assert RUN_THE_TESTS in lines
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "provision" in project["scripts"]
    assert {"pytest", "mkdocs-material"} <= {
        requirement.split(">")[0].split("[")[0]
        for requirement in project["optional-dependencies"]["dev"]
    }
    assert (
        "python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]'"
        in (REPO / ".ci" / "run").read_text()
    )


def test_every_provision_command_the_readme_shows_exists() -> None:
    commands = docs.provision_commands(readme())
    assert ["demo"] in commands
    assert [problem for words in commands for problem in docs.problems_with(words)] == []


def test_the_readme_exit_codes_are_the_clis() -> None:
    rows = docs.table(docs.section(readme(), "## Five minutes to production"))
    assert {int(cells[0]) for cells in rows} == {
        0,
        EXIT_FAILED,
        EXIT_CONFIGURATION,
        EXIT_JOBS_FAILED,
        130,
    }


def test_the_readme_links_lead_to_pages_and_headings_that_exist() -> None:
    targets = [t for t in docs.links(readme()) if "://" not in t and not t.startswith("#")]
    assert any(t.startswith("docs/") for t in targets), "the README leads into the docs"
    broken = []
    for target in targets:
        file = docs.relative_file(REPO, target)
        if not file.exists():
            broken.append(f"{target}: no file")
            continue
        _, _, anchor = target.partition("#")
        if anchor and anchor not in docs.anchors(file.read_text(encoding="utf-8")):
            broken.append(f"{target}: no heading #{anchor}")
    assert broken == []


def test_the_readme_stays_a_front_page() -> None:
    assert len(readme().splitlines()) <= MAX_LINES

"""README.md says what is true: its configuration table lists every setting, and only those."""

from __future__ import annotations

import re

from pydantic import AliasChoices

from testkit.cli import REPO
from worker.settings import Settings


def documented() -> set[str]:
    text = (REPO / "README.md").read_text()
    table = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for row in table.splitlines():
        if not row.startswith("| `"):
            continue
        first_cell = row.split("|")[1]
        for token in re.findall(r"`([A-Z_]+)`", first_cell):
            names.add(f"PROVISIONER{token}" if token.startswith("_") else token)
    return names


def variables() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names.add(
            alias.choices[0] if isinstance(alias, AliasChoices) else f"PROVISIONER_{name.upper()}"
        )
    return names


def test_the_configuration_table_lists_every_setting_and_nothing_else() -> None:
    assert documented() - variables() == set(), "documented but not a setting"
    assert variables() - documented() == set(), "a setting the README does not document"

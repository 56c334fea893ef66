"""The documentation (``docs/``) says what the code does: the settings table of
``docs/configuration.md`` lists exactly the settings of ``worker.settings.Settings`` with their
defaults, every ``provision`` command and option a page shows exists, every test a page cites
exists, the exit codes are the CLI's, and the webhook receiver's snippet is the check the tests
run."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, SecretStr

from provision.cli import EXIT_CONFIGURATION, EXIT_FAILED, EXIT_JOBS_FAILED
from testkit import docs
from testkit.receiver import verify_signature
from worker.settings import Settings, parse_duration

#: What the default column says of a setting that has no value by default.
UNSET = "(none)"
#: Exit codes the CLI has beside its named ones: success, and an interrupted import.
EXIT_CODES = {0, EXIT_FAILED, EXIT_CONFIGURATION, EXIT_JOBS_FAILED, 130}


def variables() -> dict[str, Any]:
    """Each setting's environment variable and its default, from the code."""
    prefix = Settings.model_config.get("env_prefix", "")
    found = {}
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        variable = alias.choices[0] if isinstance(alias, AliasChoices) else prefix + name.upper()
        assert isinstance(variable, str)
        found[variable] = field.get_default(call_default_factory=True)
    return found


def documented(markdown: str) -> dict[str, str]:
    """The settings table of the configuration page: the default column, by variable."""
    rows = docs.table(docs.section(markdown, "## Settings"))
    table: dict[str, str] = {}
    for cells in rows:
        assert len(cells) == 3, f"a row of three cells (variable, default, meaning): {cells}"
        names = re.fullmatch(r"`([A-Z][A-Z0-9_]*)`", cells[0])
        assert names, f"one variable per row, as `NAME`: {cells[0]!r}"
        assert names.group(1) not in table, f"{names.group(1)} is documented twice"
        table[names.group(1)] = cells[1]
    return table


def same_default(default: Any, cell: str) -> bool:
    """Whether the default column's ``cell`` (`` `value` `` or ``(none)``) says ``default``."""
    if isinstance(default, SecretStr):
        default = default.get_secret_value()
    if cell == UNSET:
        return default is None or default == ""
    shown = re.fullmatch(r"`([^`]*)`", cell)
    if shown is None or default is None or default == "":
        return False
    text = shown.group(1)
    if isinstance(default, bool):
        return text == str(default).lower()
    if isinstance(default, int | float):
        try:
            return float(text) == float(default) and (isinstance(default, float) or text.isdigit())
        except ValueError:
            return False
    if isinstance(default, Path):
        return Path(text) == default
    if isinstance(default, timedelta):
        return parse_duration(text) == default
    return text == str(default)


def table_problems(markdown: str) -> list[str]:
    """Every way the settings table of ``markdown`` differs from the code."""
    table, code = documented(markdown), variables()
    problems = [f"{name} is a setting the table does not list" for name in code.keys() - table]
    problems += [f"{name} is in the table but not a setting" for name in table.keys() - code]
    problems += [
        f"{name}: the table says {table[name]}, the code {code[name]!r}"
        for name in code.keys() & table.keys()
        if not same_default(code[name], table[name])
    ]
    return sorted(problems)


def test_the_settings_table_lists_every_setting_with_its_default_and_nothing_else() -> None:
    assert table_problems(docs.page("configuration.md")) == []


def test_the_settings_check_fails_on_an_undocumented_setting_or_a_wrong_default() -> None:
    page = docs.page("configuration.md")
    row = next(
        line for line in page.splitlines() if line.startswith("| `PROVISIONER_LEASE_SECONDS`")
    )
    assert table_problems(page.replace(row + "\n", "")) == [
        "PROVISIONER_LEASE_SECONDS is a setting the table does not list"
    ]
    wrong = page.replace(
        "| `PROVISIONER_JOB_MAX_ATTEMPTS` | `25` |", "| `PROVISIONER_JOB_MAX_ATTEMPTS` | `26` |"
    )
    assert table_problems(wrong) == [
        "PROVISIONER_JOB_MAX_ATTEMPTS: the table says `26`, the code 25"
    ]
    extra = page.replace(row, row + "\n| `PROVISIONER_NOT_A_SETTING` | (none) | nothing |")
    assert table_problems(extra) == ["PROVISIONER_NOT_A_SETTING is in the table but not a setting"]


def test_defaults_are_read_as_the_code_types_them() -> None:
    assert same_default(SecretStr(""), UNSET)
    assert same_default(None, UNSET)
    assert not same_default(600, UNSET)
    assert same_default(10.0, "`10`")
    assert same_default(0.1, "`0.1`")
    assert not same_default(8, "`8.5`")
    assert same_default(False, "`false`")
    assert not same_default(False, "`true`")
    assert same_default("auto", "`auto`")
    assert not same_default("sqlite:///provisioner.db", "`sqlite:///other.db`")


def test_every_provision_command_the_docs_show_exists() -> None:
    problems = [
        f"{name}: {problem}"
        for name, text in docs.pages().items()
        for words in docs.provision_commands(text)
        for problem in docs.problems_with(words)
    ]
    assert problems == []
    assert docs.problems_with(["import", "--no-such-option"]) != []
    assert docs.problems_with(["no-such-command"]) != []


def test_every_test_the_docs_cite_exists() -> None:
    cited = [c for text in docs.pages().values() for c in docs.cited_tests(text)]
    assert cited, "the guarantees cite the tests that check them"
    assert [problem for c in cited if (problem := docs.missing_test(c))] == []


def test_the_exit_codes_documented_are_the_clis() -> None:
    rows = docs.table(docs.section(docs.page("operating.md"), "## Errors and exit codes"))
    assert {int(cells[0]) for cells in rows} == EXIT_CODES


def test_the_webhook_snippet_is_the_check_the_tests_run() -> None:
    page = docs.page("webhooks.md")
    snippet = page.split("```python\n", 1)[1].split("```", 1)[0]
    [documented_check] = [
        node for node in ast.parse(snippet).body if isinstance(node, ast.FunctionDef)
    ]
    [tested_check] = ast.parse(textwrap.dedent(inspect.getsource(verify_signature))).body
    assert isinstance(tested_check, ast.FunctionDef)
    assert _without_name_and_docstring(documented_check) == _without_name_and_docstring(
        tested_check
    )


def _without_name_and_docstring(function: ast.FunctionDef) -> str:
    body = function.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return ast.dump(ast.Module(body=[*body], type_ignores=[])) + ast.dump(function.args)

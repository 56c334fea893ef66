"""``provision.cli.interrupts``: a signal stops a command with exit 130 wherever it lands.

Each case runs in its own interpreter, since what is checked is the process's exit status."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from testkit.cli import REPO, clean_environ


def run_interruptible(tmp_path: Path, *lines: str) -> subprocess.CompletedProcess[str]:
    """Run ``lines`` inside ``Interruptible()`` the way the command group does, turning the
    KeyboardInterrupt into exit 130, as ``python -m`` runs ``provision`` (CPython's exit by
    SIGINT after an unhandled ^C applies to modules run that way)."""
    block = textwrap.indent("\n".join(lines), " " * 8)
    (tmp_path / "interrupted.py").write_text(
        "import signal, sys\n"
        "from provision.cli.interrupts import Interruptible, raise_if_held\n"
        "try:\n"
        "    with Interruptible():\n"
        f"{block}\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(130)\n"
    )
    env = {**clean_environ(), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "interrupted"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_signal_in_code_run_from_source_text_waits_for_the_next_safe_point(
    tmp_path: Path, signum: str
) -> None:
    """CPython records a KeyboardInterrupt leaving exec()/eval() of source text as an unhandled
    ^C and then ends the process by SIGINT, whatever exit code was chosen (SQLAlchemy runs such
    code at the first query): the interrupt is raised once that code has returned."""
    result = run_interruptible(
        tmp_path,
        f'exec("signal.raise_signal(signal.{signum}); landed = True")',
        'print("reached the safe point", flush=True)',
        "raise_if_held()",
        'print("not stopped", flush=True)',
    )
    assert (result.returncode, result.stdout) == (130, "reached the safe point\n"), result.stderr


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_signal_anywhere_else_interrupts_at_once(tmp_path: Path, signum: str) -> None:
    result = run_interruptible(
        tmp_path, f"signal.raise_signal(signal.{signum})", 'print("not stopped", flush=True)'
    )
    assert (result.returncode, result.stdout) == (130, ""), result.stderr


def test_a_signal_held_until_the_block_ends_still_interrupts(tmp_path: Path) -> None:
    result = run_interruptible(tmp_path, 'exec("signal.raise_signal(signal.SIGTERM)")')
    assert result.returncode == 130, result.stderr

"""Running ``provision`` as a user does: a subprocess with its own environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def clean_environ() -> dict[str, str]:
    """This environment without any provisioner or Plausible setting, nor a PYTHONPATH (which
    would put another copy of the code first)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PROVISIONER_", "PLAUSIBLE_")) and k != "PYTHONPATH"
    }


def provision(
    env: dict[str, str], *args: str, cwd: Path = REPO, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provision", *args],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )

"""``provision demo`` from a built wheel installed in a fresh virtualenv, outside the checkout:
the migrations and the sample signups travel with the package."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

from testkit.cli import REPO, clean_environ


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env or clean_environ(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def test_the_demo_runs_from_an_installed_wheel(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
        "-w", dist, REPO, cwd=tmp_path,
    )  # fmt: skip
    [wheel] = dist.glob("plausible_provisioner-*.whl")
    venv = tmp_path / "fresh"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", "--no-deps", wheel, cwd=tmp_path)
    # The dependencies come from this test run's environment; the package itself only from
    # the wheel (a PYTHONPATH entry runs no .pth file, so this checkout's editable install
    # stays out of the way).
    env = {**clean_environ(), "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    where = run(
        python, "-c", "import producers, worker; print(producers.__file__)", cwd=tmp_path, env=env
    )
    assert str(venv) in where
    out = run(python, "-m", "provision", "demo", cwd=tmp_path, env=env)
    rows = [
        line.split()
        for line in out.splitlines()
        if line[:32].isalnum() and len(line.split()[0]) == 32
    ]
    assert [row[2] for row in rows] == ["succeeded"] * 8
    assert "Traceback" not in out
    assert not list(tmp_path.glob("*.db"))  # the demo's database is a fresh temporary file

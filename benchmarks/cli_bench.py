"""How long the CLI takes to answer, on demand: ``python benchmarks/cli_bench.py``.

Median wall time (and CPU time) of ``--runs`` runs of ``provision --help`` and of
``provision status ID`` and ``provision status --json ID`` against a status table holding one
job (SQLite, or a fresh PostgreSQL database with ``--store postgresql``). ``--compare DIR``
also times the code in DIR (e.g. ``git archive main | tar -x -C /tmp/main``), interleaved with
this checkout so both see the same load:

    python benchmarks/cli_bench.py --compare /tmp/main [--store postgresql]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.support import PROVISION, database  # noqa: E402

#: Run by the checkout timed, so the schema is the one its code expects.
SEED = """
import sys
from worker.jobs.db import make_engine, upgrade
from worker.jobs.specs import JobRequest
from worker.jobs.states import Operation
from worker.jobs.store import JobStore

engine = make_engine(sys.argv[1])
upgrade(engine)
request = JobRequest(operation=Operation.provision_site, domain="bench.example.com")
print(JobStore(engine).enqueue(request).job.id)
"""


def seed(url: str, env: dict[str, str]) -> str:
    """A migrated status table with one queued job; its id."""
    done = subprocess.run(
        [sys.executable, "-c", SEED, url],
        env=env,
        cwd=env["HOME"],  # not this checkout: its modules would come first
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def timed(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one run, which must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([*PROVISION, *args], env=env, cwd=cwd, capture_output=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"provision {' '.join(args)} failed: {done.stderr.decode()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--compare", type=Path, help="Also time the code in this directory.")
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        checkouts = {"this checkout": ROOT}
        if args.compare is not None:
            checkouts[str(args.compare)] = args.compare.resolve()
        envs, commands = {}, {}
        for n, (name, path) in enumerate(checkouts.items()):
            # Each checkout its own table, migrated by its own code.
            (workdir / str(n)).mkdir()
            url = stack.enter_context(database(args.store, workdir / str(n)))
            envs[name] = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": tmp,
                "PROVISIONER_DATABASE_URL": url,
                "PYTHONPATH": str(path),
            }
            job_id = seed(url, envs[name])
            commands[name] = {
                "--help": ["--help"],
                "status ID": ["status", job_id],
                "status --json ID": ["status", "--json", job_id],
            }
        times: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for _ in range(args.runs):
            for name in checkouts:
                for label, command in commands[name].items():
                    times.setdefault((name, label), []).append(timed(command, envs[name], workdir))
        for (name, label), runs in times.items():
            wall = statistics.median(w for w, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            print(f"{name}: provision {label}: median {wall:.3f} s wall, {cpu:.3f} s CPU")


if __name__ == "__main__":
    main()

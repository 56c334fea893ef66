"""The chaos runner's short version: every scenario of ``benchmarks/chaos.py`` (SIGKILLs, SIGTERM,
a flushed and a restarted Redis, a restarted PostgreSQL, 5xx, dropped answers and latency spikes,
deletes killed mid-answer, a slow API with a many-goal job, another client's 429s, the same events
through three producers) on private Redis and PostgreSQL servers, with fewer jobs. Each must end
with nothing lost, nothing duplicated, no job failed that should have succeeded, takeovers within
15 s and work resumed within 10 s of an outage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.sandbox_process import REPO_ROOT

#: The short run takes 3 to 8 minutes on a 2-core machine, by its load.
LIMIT_SECONDS = 900


@pytest.mark.timeout(LIMIT_SECONDS + 120)
def test_every_chaos_scenario_loses_duplicates_and_wrongly_fails_nothing(tmp_path: Path) -> None:
    report = tmp_path / "chaos.json"
    with subprocess.Popen(
        [sys.executable, "benchmarks/chaos.py", "--short", "--json", str(report)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=LIMIT_SECONDS)
        except BaseException:
            # Terminated, not killed: the runner stops its workers and private servers first.
            process.terminate()
            stdout, stderr = process.communicate(timeout=60)
            raise
    run = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    print(run.stdout)  # noqa: T201 - the chaos table, in the CI log with -s or on failure
    assert report.exists(), run.stdout + run.stderr[-3000:]
    results = {r["scenario"]: r for r in json.loads(report.read_text())}
    assert set(results) >= {"baseline", "sigkill", "pg_restart", "three_producers"}
    for name, r in results.items():
        assert r["problems"] == [], (name, r["problems"])
        assert r["jobs"] > 0, name
        assert (r["lost"], r["duplicated"], r["wrongly_failed"]) == (0, 0, 0), (name, r)
    assert results["sigkill"]["takeover"] is not None
    assert results["pg_restart"]["resume"] is not None
    assert run.returncode == 0, run.stdout

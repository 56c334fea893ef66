"""What an idle ``provision worker`` costs: processes, memory and CPU of its whole process tree.

    python benchmarks/footprint_bench.py                      # the default worker (threads pool)
    python benchmarks/footprint_bench.py --pool prefork       # the prefork pool beside it
    python benchmarks/footprint_bench.py --seconds 60 --settle 15 --redis redis://127.0.0.1:6379/11
    python benchmarks/footprint_bench.py --backlog 200000     # waiting on a spent hour, 200k queued

Starts a real ``provision worker`` with its defaults (one account, the default quota, a key
never used) against the Redis database given (flushed first: use a private or a test one) and a
fresh SQLite file, waits ``--settle`` seconds after it says it is ready, then samples for
``--seconds``: the sum of VmRSS over the worker and all its descendants (the peak seen), and
their CPU seconds (utime + stime of /proc/<pid>/stat, counted for every process alive at the
end; processes that came and went are not). Prints one line per pool: processes, RSS MiB, CPU
seconds per minute and % of one core.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.support import start_worker

TICKS = os.sysconf("SC_CLK_TCK")


def tree(root: int) -> list[int]:
    """``root`` and every descendant (through /proc/<pid>/task/*/children)."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                todo += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def spend_the_hour_behind(database: str, backlog: int) -> None:
    """``backlog`` queued jobs (``scale_bench``'s fill) behind a spent hour: the worker has
    work and no quota for it."""
    from benchmarks.scale_bench import fill
    from worker.accounts import load_accounts
    from worker.jobs.db import make_engine
    from worker.jobs.states import Priority
    from worker.quota.limiter import HOUR, Limiter
    from worker.settings import get_settings

    engine = make_engine(database)
    fill(engine, backlog, max(1, backlog // 1000))
    limiter = Limiter(engine)
    for quota in load_accounts(get_settings()).quotas.values():
        hour = [w for w in limiter.span(quota) if w.kind == HOUR]
        refused = limiter.take(quota, hour, limiter.budget(quota, HOUR), Priority.interactive)
        assert refused is None, refused
    engine.dispose()


def measure(
    pool: str | None,
    redis_url: str,
    seconds: float,
    settle: float,
    extra_env: dict[str, str],
    backlog: int = 0,
) -> tuple[int, float, float]:
    """(processes, peak RSS MiB, CPU seconds over ``seconds``) of an idle worker."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    with tempfile.TemporaryDirectory(prefix="footprint-") as tmp:
        work = Path(tmp)
        database = f"sqlite:///{work / 'status.db'}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
        env.update(
            PROVISIONER_BROKER_URL=redis_url,
            PROVISIONER_DATABASE_URL=database,
            PLAUSIBLE_API_KEY="footprint-bench-key-never-used",
            PLAUSIBLE_BASE_URL="http://127.0.0.1:9",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra_env)
        subprocess.run(
            [sys.executable, "-m", "provision", "db", "upgrade"],
            env=env,
            check=True,
            capture_output=True,
        )
        if backlog:
            os.environ.update(env)  # the settings the worker reads
            spend_the_hour_behind(database, backlog)
        proc = start_worker(env, work / "worker.log", ["--pool", pool] if pool else [])
        try:
            time.sleep(settle)
            pids = tree(proc.pid)
            before = {pid: cpu_seconds(pid) for pid in pids}
            peak = 0
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                peak = max(peak, sum(rss_kib(pid) for pid in tree(proc.pid)))
                time.sleep(1.0)
            pids = tree(proc.pid)
            used = sum(cpu_seconds(pid) - before.get(pid, 0.0) for pid in pids)
            return len(pids), peak / 1024, used
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            redis.Redis.from_url(redis_url).flushdb()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--redis",
        default=os.environ.get("PROVISIONER_TEST_REDIS_URL", "redis://127.0.0.1:6379/11"),
        help="Redis database for the broker (flushed before each run).",
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="Sampling time.")
    parser.add_argument("--settle", type=float, default=15.0, help="Wait after ready.")
    parser.add_argument(
        "--pool",
        action="append",
        choices=("threads", "prefork"),
        help="Also measure this pool (repeatable); the default worker is always measured.",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="An environment variable for the worker (PROVISIONER_...); repeatable.",
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=0,
        help="Queued jobs behind a spent hour (the worker waits on the quota, not on nothing).",
    )
    args = parser.parse_args(argv)
    extra_env = dict(item.split("=", 1) for item in args.set)
    pools = ["default", *(args.pool or [])]
    waiting = f", {args.backlog:,} jobs queued behind a spent hour" if args.backlog else ""
    print(f"idle provision worker{waiting}, {args.seconds:g} s after {args.settle:g} s to settle")
    print(f"{'pool':<10} {'processes':>9} {'RSS MiB':>8} {'CPU s/min':>9} {'% core':>7}")
    for pool in pools:
        chosen = None if pool == "default" else pool
        count, rss, cpu = measure(
            chosen, args.redis, args.seconds, args.settle, extra_env, args.backlog
        )
        per_minute = cpu * 60 / args.seconds
        print(
            f"{pool:<10} {count:>9} {rss:>8.0f} {per_minute:>9.2f} {100 * cpu / args.seconds:>7.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

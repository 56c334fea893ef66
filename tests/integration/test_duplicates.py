"""The same signup enqueued more than once, one after the other and at the same time: one job
row, one site.

The job row is unique on its idempotency key (the event's ``id``, or a key derived from the
request), so a repeat returns the existing job and publishes nothing; racing producers collide on
the unique index and all but one get the winner's row.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections import Counter
from pathlib import Path

from sqlmodel import Session, func, select

from testkit.sandbox_process import REPO_ROOT
from testkit.workers import (
    PROVISION,
    Stack,
    assert_all_succeeded,
    assert_provisioned_once,
    provision_event,
    provision_request,
    write_jsonl,
)
from worker.jobs.intake import Enqueued
from worker.jobs.models import ProvisioningJob


def row_count(stack: Stack) -> int:
    with Session(stack.engine) as session:
        return int(session.exec(select(func.count()).select_from(ProvisioningJob)).one())


def submit_concurrently(stack: Stack, n: int, **kwargs: object) -> list[Enqueued]:
    """``n`` threads submit at once (released together by a barrier)."""
    barrier = threading.Barrier(n)
    results: list[Enqueued] = []
    errors: list[BaseException] = []

    def producer() -> None:
        barrier.wait()
        try:
            results.append(stack.submit(**kwargs))  # type: ignore[arg-type]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=producer) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    return results


def test_repeated_and_racing_submissions_make_one_job_and_one_site(stack: Stack) -> None:
    stack.sandbox.configure(latency_ms=50)
    stack.start_worker(concurrency=2)
    ids: list[str] = []

    # Sequentially, with an explicit key: the repeat returns the first job.
    request = provision_request("sequential.example.com")
    first = stack.submit(request, key="evt-sequential")
    again = stack.submit(request, key="evt-sequential")
    assert first.created
    assert not again.created
    assert again.job.id == first.job.id
    ids.append(first.job.id)

    # Sequentially without a key: the derived key makes them the same job too.
    derived = provision_request("derived.example.com")
    a, b = stack.submit(derived), stack.submit(derived)
    assert a.created
    assert not b.created
    assert a.job.id == b.job.id
    ids.append(a.job.id)

    # Eight producers racing, with a key and without one.
    for kwargs in (
        {"request": provision_request("race-key.example.com"), "key": "evt-race"},
        {"request": provision_request("race-derived.example.com")},
    ):
        results = submit_concurrently(stack, 8, **kwargs)
        assert sum(r.created for r in results) == 1, [r.created for r in results]
        assert len({r.job.id for r in results}) == 1
        ids.append(results[0].job.id)

    assert row_count(stack) == len(ids) == 4
    jobs = stack.wait_done(ids, timeout=30)
    assert_all_succeeded(jobs)

    # After the job succeeded: a repeat still returns it and changes nothing.
    requests_before = stack.sandbox.state()["counters"]["total"]
    late = stack.submit(request, key="evt-sequential")
    assert not late.created
    assert late.job.id == first.job.id
    assert row_count(stack) == 4
    assert stack.jobs([first.job.id])[0].attempts == 1
    assert stack.sandbox.state()["counters"]["total"] == requests_before
    assert_provisioned_once(stack.sandbox.state(), jobs)


def test_two_import_processes_on_the_same_file_make_one_job_per_signup(
    stack: Stack, tmp_path: Path
) -> None:
    domains = [f"import{n}.example.com" for n in range(12)]
    events = [provision_event(d, key=f"evt-{d}") for d in domains]
    # The second half of the file repeats some lines, as an at-least-once feed would.
    signups = write_jsonl(tmp_path / "signups.jsonl", events + events[:4])

    args = [*PROVISION, "import", str(signups), "--json"]
    env = stack.env()
    procs = [
        subprocess.Popen(
            args, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    summaries = [json.loads(out) for out, _ in outputs]
    assert sum(s["queued"] for s in summaries) == len(domains)
    assert sum(s["duplicate"] for s in summaries) == 2 * len(events + events[:4]) - len(domains)
    assert all(s["invalid"] == 0 for s in summaries)

    assert row_count(stack) == len(domains)
    keys = Counter(job.idempotency_key for job in stack.jobs())
    assert keys == Counter({f"evt-{d}": 1 for d in domains})

    stack.start_worker(concurrency=2)
    jobs = stack.wait_done([job.id for job in stack.jobs()], timeout=30)
    assert_all_succeeded(jobs)
    assert_provisioned_once(stack.sandbox.state(), jobs)

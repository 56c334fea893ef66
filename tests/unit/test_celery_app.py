"""Every Celery app a process builds runs its own pipeline (tests and the sweeper build several)."""

from __future__ import annotations

from pathlib import Path

from testkit.databases import migrated_engine
from worker.app import TASK_NAME, create_app
from worker.jobs.store import JobStore
from worker.settings import Settings


def test_a_second_app_in_the_process_runs_jobs_of_its_own_database(tmp_path: Path) -> None:
    from producers.events import parse_event

    first = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}"))
    url = f"sqlite:///{tmp_path / 'b.db'}"
    store = JobStore(migrated_engine(url))
    job = store.enqueue(parse_event({"domain": "b.example.com"}).request).job
    second = create_app(
        Settings(database_url=url, plausible_api_key="k", plausible_base_url="http://127.0.0.1:1")
    )
    assert first.tasks[TASK_NAME].run is not second.tasks[TASK_NAME].run
    second.tasks[TASK_NAME].apply(args=(job.id,))
    ran = store.get(job.id)
    assert ran is not None
    assert ran.attempts == 1  # claimed from b.db: the second app's own pipeline ran it

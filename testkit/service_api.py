"""What the HTTP service's tests share: its token, the one error shape every refusal answers,
and jobs put where the routes act on them."""

from __future__ import annotations

import httpx

from worker.jobs.specs import Progress
from worker.jobs.states import Priority
from worker.jobs.store import JobStore

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON_AUTH = {**AUTH, "Content-Type": "application/json"}


def waiting_for_the_scheduler(store: JobStore) -> list[str]:
    """Ids of the queued, never-dispatched interactive jobs: what the scheduler will admit."""
    return [job.id for job in store.ready_jobs(["default"], Priority.interactive, limit=100)]


def assert_error(
    response: httpx.Response, status: int, code: str, field: str | None = None
) -> None:
    """The one error body: ``{"error": {"code", "message", "field"}}``, nothing else."""
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"]
    assert sorted(body["error"]) == ["code", "field", "message"]
    assert (body["error"]["code"], body["error"]["field"]) == (code, field)
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]


def fail(
    store: JobStore, job_id: str, code: str = "site_limit_reached", progress: Progress | None = None
) -> None:
    assert job_id in store.admit({job_id: {}})  # the scheduler dispatches it; it runs and fails
    claim = store.claim(job_id, lease_seconds=60)
    assert claim is not None
    store.fail(claim, code=code, message="limit", http_status=402, progress=progress or Progress())

"""A worker's pipeline against the sandbox, in this process (no Celery), and the requests the
sandbox tests send through it."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import SecretStr
from sqlalchemy import update
from sqlmodel import Session, col

from testkit.sandbox_process import SandboxProcess
from worker.accounts import load_accounts
from worker.jobs.models import ProvisioningJob
from worker.jobs.specs import GoalSpec, JobRequest
from worker.jobs.states import Operation
from worker.jobs.store import JobStore
from worker.plausible import PlausibleClient
from worker.quota.limiter import Limiter
from worker.retrying import RetryPolicy
from worker.service import Pipeline
from worker.settings import Settings

EVENT = GoalSpec(goal_type="event", event_name="Signup")
PAGE = GoalSpec(goal_type="page", page_path="/pricing/*")


LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)
#: Limits far above anything a test sends: tests about the quota set their own.
UNLIMITED = {"hourly_limit": 10_000_000, "burst_limit": 10_000_000}


def make_pipeline(
    sandbox: SandboxProcess,
    store: JobStore,
    key: str = "test-key",
    *,
    base_url: str | None = None,
    **quota: float,
) -> Pipeline:
    """The pipeline of one worker against the sandbox (at ``base_url``, if given: a wrong one),
    for the ``default`` account."""
    base_url = base_url or sandbox.base_url
    settings = Settings(
        plausible_api_key=SecretStr(key),
        plausible_base_url=base_url,
        **{**UNLIMITED, **quota},  # type: ignore[arg-type]
    )
    return Pipeline(
        store=store,
        clients={"default": PlausibleClient(base_url=base_url, api_key=key)},
        accounts=load_accounts(settings),
        limiter=Limiter(store.engine, guard=0.05),
        policy=RetryPolicy(max_attempts=3, backoff_initial=0, backoff_max=0, sleep=lambda _: None),
        lease_seconds=60,
        max_attempts=5,
    )


def client_of(pipeline: Pipeline) -> PlausibleClient:
    return pipeline.clients["default"]


def provision(domain: str = "shop.example.com") -> JobRequest:
    return JobRequest(
        operation=Operation.provision_site,
        domain=domain,
        timezone="Europe/Berlin",
        goals=(EVENT, PAGE),
        shared_links=("WordPress",),
    )


def api_requests(sandbox: SandboxProcess) -> int:
    return int(sandbox.state()["counters"]["total"])


def _set(store: JobStore, job_id: str, **values: object) -> None:
    with Session(store.engine) as session:
        session.execute(
            update(ProvisioningJob).where(col(ProvisioningJob.id) == job_id).values(**values)
        )
        session.commit()


def make_due(store: JobStore, job_id: str) -> None:
    """A parked job's backoff is over: it can be claimed again."""
    _set(store, job_id, next_attempt_at=LONG_AGO)


def expire_lease(store: JobStore, job_id: str) -> None:
    """A killed worker's lease runs out: the job can be claimed again."""
    _set(store, job_id, lease_expires_at=LONG_AGO)

"""Plans from the Python API: Provisioner.plan() from a file or a mapping, apply_plan() as one
batch, a second apply making no job, and the refusals as PlanRefused with their code."""

from __future__ import annotations

from pathlib import Path

import pytest

from producers.api import Provisioner
from producers.plans.desired import DesiredStateError
from producers.plans.saved import PlanRefused
from testkit.databases import migrated_engine
from testkit.inventory import record_site
from worker.jobs.store import JobStore


def test_plan_and_apply_from_python(tmp_path: Path) -> None:
    store = JobStore(migrated_engine(f"sqlite:///{tmp_path / 'api.db'}"))
    record_site(store, "gone.example.com", managed_set="agency")
    provisioner = Provisioner(store, accounts=["default"])
    path = tmp_path / "sites.toml"
    path.write_text('set = "agency"\n[[sites]]\ndomain = "new.example.com"\n')
    plan = provisioner.plan(path)
    assert plan["summary"] == "Plan: 1 site to add; 1 site to destroy."
    kept = provisioner.get_plan(plan["batch"])
    assert kept is not None
    assert (kept["status"], kept["summary"], kept["cost"]["calls"]) == (
        "planned",
        plan["summary"],
        2,
    )
    assert provisioner.get_plan("plan-nope") is None
    assert plan == {
        **provisioner.plan({"set": "agency", "sites": [{"domain": "new.example.com"}]}),
        "created_at": plan["created_at"],
    }
    with pytest.raises(PlanRefused) as refused:
        provisioner.apply_plan(plan)
    assert refused.value.code == "destroy_not_allowed"
    applied = provisioner.apply_plan(plan, allow_destroy=True)
    assert (applied["created"], applied["batch_id"]) == (2, plan["batch"])
    assert provisioner.apply_plan(plan, allow_destroy=True)["duplicate"] == 2
    applied = provisioner.get_plan(plan["batch"])
    assert applied is not None
    assert applied["status"] == "applied"
    with pytest.raises(DesiredStateError) as bad:
        provisioner.plan({"set": "agency", "account": "nobody"})
    assert bad.value.problems == ["account: unknown account 'nobody'; configured: default"]

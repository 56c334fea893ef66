"""The plans' part of the Python API (``producers.api.Provisioner``): make a plan of a desired
state (kept, so it reads back before it is applied), read one back, apply one.

    plan = provisioner.plan("agency.toml")                 # changes, summary, cost, jobs
    provisioner.plan("agency.toml", refresh=True)          # read the sites live first
    provisioner.get_plan(plan["batch"])["status"]          # "planned"
    provisioner.apply_plan(plan)                           # one batch named after its set
    provisioner.get_plan(plan["batch"])["status"]          # "applied"
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from producers.events import parse_domain
from worker.errors import ConfigurationError

if TYPE_CHECKING:
    from producers.plans.refresh import LiveReader
    from worker.jobs.store import JobStore
    from worker.quota.report import Reporter


class PlansAPI:
    """Plans of a desired state, on the Provisioner's status table, accounts and quota."""

    store: JobStore
    accounts: Collection[str] | None
    reporter: Reporter | None
    #: Reads the live state for ``plan(refresh=True)``; None: built without the settings to.
    refresher: LiveReader | None

    def plan(
        self,
        desired: str | Path | Mapping[str, Any],
        targets: Sequence[str] = (),
        *,
        refresh: bool = False,
    ) -> dict[str, Any]:
        """A desired state (a TOML or JSON file's path, or its decoded content) compared with the
        inventory: the plan as ``POST /plans`` answers it (changes, cost, jobs), kept so that
        ``get_plan`` reads it before it is applied. Without an API call unless ``refresh``,
        which first reads the plan's sites live through the account's quota at bulk priority
        (waiting for it when it is spent) and reports drift in ``cost["drift"]``, as
        ``provision plan --refresh`` does. Raises ``DesiredStateError`` listing every problem
        of a bad file."""
        from producers.plans import desired as files
        from producers.plans import saved as plans

        if isinstance(desired, str | Path):
            state = files.load(Path(desired), accounts=self.accounts)
        else:
            state = files.parse(desired, accounts=self.accounts)
        domains = [parse_domain(domain) for domain in targets]
        live = None
        if refresh:
            if self.refresher is None:
                raise ConfigurationError(
                    "refresh needs the provisioner's settings (Plausible's URL and the "
                    "accounts' keys): build it with Provisioner.from_settings() or from_url()"
                )
            live = self.refresher.of(state.account)
        saved, cost = plans.make(self.store, state, domains, reporter=self.reporter, live=live)
        plans.keep(self.store, saved, cost)
        return saved.as_json(cost)

    def get_plan(self, batch_id: str) -> dict[str, Any] | None:
        """A plan made by ``plan()`` (or ``POST /plans``, or applied by ``provision apply``), by
        its batch id, as ``GET /plans/{batch_id}`` answers it: set, account, summary, calls,
        changes, cost and ``status`` (``planned`` or ``applied``); None if there is none."""
        from producers.plans.saved import recorded_plan

        row = recorded_plan(self.store, batch_id)
        return None if row is None else {**row.model_dump(mode="json"), "status": row.status}

    def apply_plan(self, plan: Mapping[str, Any], *, allow_destroy: bool = False) -> dict[str, Any]:
        """Apply a plan from ``plan()`` as one batch named after its set (``POST /plans/apply``):
        what was queued, and ``pending`` deletes to wait for before calling again when it
        replaces a goal or guest. Raises ``PlanRefused`` (``code`` ``stale_plan`` or
        ``destroy_not_allowed``); applying it again makes no second job."""
        from producers.plans import saved as plans

        return plans.apply(self.store, plans.from_json(plan), allow_destroy=allow_destroy).as_json()

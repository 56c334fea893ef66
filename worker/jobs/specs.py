"""What a job asks for (``JobRequest``) and what it has done so far (``Progress``): the pydantic
shapes stored as JSON in a job's row."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField

from worker.jobs.states import DEFAULT_ACCOUNT, Operation


class GoalSpec(BaseModel):
    """A goal to ensure on a site: an event goal or a page goal."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    goal_type: Literal["event", "page"]
    event_name: str | None = None
    page_path: str | None = None
    display_name: str | None = None
    custom_props: dict[str, str] = PydanticField(default_factory=dict)

    @property
    def natural_key(self) -> str:
        """What makes the goal unique on its site, as Plausible's find-or-create sees it."""
        if self.goal_type == "event":
            return f"event:{self.event_name}"
        return f"page:{self.page_path}"


class GuestSpec(BaseModel):
    """A guest to invite to a site (Plausible sends the invitation email)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    email: str
    role: Literal["viewer", "editor"]


class JobRequest(BaseModel):
    """What a producer asks for. Stored verbatim in the job row; never holds a secret."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    operation: Operation
    domain: str
    timezone: str | None = None
    goals: tuple[GoalSpec, ...] = ()
    shared_links: tuple[str, ...] = ()
    #: provision_site: custom properties to allow, and guests to invite (both find-or-create).
    #: Left out of the stored request when empty.
    custom_props: tuple[str, ...] = ()
    guests: tuple[GuestSpec, ...] = ()
    #: delete_prop: the property; delete_guest: the guest's email.
    custom_prop: str | None = None
    email: str | None = None
    #: set_tracker: the tracker script settings to change (merged into the site's); also
    #: provision_site: sent with the create. Left out of the stored request when None.
    tracker_script_configuration: dict[str, Any] | None = None
    #: delete_goal only: the goal, by id or by event name / page path.
    goal_id: int | None = None
    goal: GoalSpec | None = None
    #: The account (Plausible team or key) the job runs under.
    account: str = DEFAULT_ACCOUNT
    #: Where to POST the job once it is done (``worker.webhooks``); None: the account's
    #: ``webhook_url``, if any. Left out of the stored request (and its fingerprint) when None.
    callback_url: str | None = None
    #: The desired-state set (``provision apply``) the job works for: the inventory records it
    #: beside what the job creates. Left out of the stored request when None.
    managed_set: str | None = None


class SiteRecord(BaseModel):
    """The site as Plausible returned it: its normalised domain is the ``site_id`` from then on."""

    domain: str
    timezone: str
    #: True when the create found the domain taken and the site turned out to be ours already.
    adopted: bool = False
    #: Adopted, and no create of this job can have made it: it was in the account before.
    existed: bool = False


class GoalRecord(BaseModel):
    id: int
    goal_type: str
    event_name: str | None = None
    page_path: str | None = None
    display_name: str
    #: As Plausible answered them: part of what makes a goal unique there.
    custom_props: dict[str, str] = PydanticField(default_factory=dict)


class Progress(BaseModel):
    """A job's checkpoints: what is done already, so a later attempt resumes after it.

    Written by the pipeline after each step, read by every view of the job. Stored as JSON with
    default values left out, so a fresh job's progress is ``{}``.
    """

    model_config = ConfigDict(extra="ignore")

    #: provision_site: the site, then each goal (by natural key) and shared link (name -> URL).
    site: SiteRecord | None = None
    goals: dict[str, GoalRecord] = PydanticField(default_factory=dict)
    shared_links: dict[str, str] = PydanticField(default_factory=dict)
    #: provision_site: the custom properties allowed, and each guest's role as Plausible holds
    #: it (an existing guest keeps its role: the invite does not change it).
    custom_props: list[str] = PydanticField(default_factory=list)
    guests: dict[str, str] = PydanticField(default_factory=dict)
    #: set_tracker, and provision_site with a tracker configuration: the configuration as
    #: Plausible answered it (its ``id`` left out).
    tracker: dict[str, Any] | None = None
    #: delete_goal: the goal's id and where it was found.
    goal_id: int | None = None
    goal_id_source: Literal["request", "history", "list"] | None = None
    #: provision_site: a create was sent (recorded before it went out).
    create_sent: bool = False
    #: Deletes: a delete was sent and no definite answer says it did nothing (recorded before it
    #: goes out), so a later 404 means our delete went through.
    delete_outcome_unknown: bool = False
    deleted: bool | None = None
    #: The delete found nothing, after a try whose outcome was unknown: counted as done.
    already_gone: bool = False


def calls_needed(request: JobRequest, progress: Progress) -> int:
    """The requests a job still makes on the happy path (retries and adoption GETs aside)."""
    if request.operation is Operation.provision_site:
        site = 0 if progress.site is not None else 1
        goals = sum(1 for goal in request.goals if goal.natural_key not in progress.goals)
        links = sum(1 for name in request.shared_links if name not in progress.shared_links)
        props = sum(1 for prop in request.custom_props if prop not in progress.custom_props)
        guests = sum(1 for guest in request.guests if guest.email not in progress.guests)
        # Sent with the create; a site already there takes a call of its own.
        tracker = int(
            request.tracker_script_configuration is not None
            and progress.site is not None
            and progress.tracker is None
        )
        return max(1, site + goals + links + props + guests + tracker)
    if request.operation is Operation.delete_goal:
        known = request.goal_id is not None or progress.goal_id is not None
        return 1 if known else 2  # a look at the goals list first, when our records lack the id
    return 1

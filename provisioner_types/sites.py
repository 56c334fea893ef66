"""The inventory: a site the provisioner knows it owns in Plausible, with its goals, shared
links, custom properties and guests, as the jobs that made them recorded them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from provisioner_types.jobs import Timestamp
from provisioner_types.model import Model


class SiteGoal(Model):
    natural_key: str = Field(description="`event:Signup` or `page:/pricing`: unique per site.")
    id: int = Field(description="Plausible's goal id.")
    goal_type: str
    event_name: str | None
    page_path: str | None
    display_name: str
    custom_props: dict[str, str] = Field(
        default_factory=dict,
        description="Its custom properties as Plausible answered the job that ensured it.",
    )
    confirmed_at: Timestamp = Field(description="When a job last saw it in Plausible.")


class SiteLink(Model):
    name: str
    url: str
    confirmed_at: Timestamp


class SiteGuest(Model):
    email: str
    role: str = Field(description="As Plausible holds it: an invitation never changes a role.")
    confirmed_at: Timestamp


class Site(Model):
    """A site of the inventory (``worker.jobs.view.site_view``)."""

    account: str
    domain: str = Field(description="As Plausible normalised it: its `site_id`.")
    timezone: str
    origin: Literal["created", "adopted", "existed"] = Field(
        description="`created` by a job; `adopted`: a create whose answer was lost, found ours; "
        "`existed`: in the account before any job of ours."
    )
    job_id: str = Field(description="The job that created or adopted it.")
    recorded_at: Timestamp
    confirmed_at: Timestamp = Field(description="When a job last saw it in Plausible.")
    goals: list[SiteGoal]
    shared_links: list[SiteLink]
    custom_props: list[str] = Field(default_factory=list, description="Custom properties allowed.")
    guests: list[SiteGuest] = Field(default_factory=list)
    managed_set: str | None = Field(
        default=None, description="The desired-state set that created it, if any."
    )
    tracker_script_configuration: dict[str, Any] | None = Field(
        default=None,
        description="Its tracker script settings as Plausible answered the last job of ours "
        "that set them; null if none did.",
    )


class SitePage(Model):
    sites: list[Site]
    next_cursor: str | None = Field(
        description="Pass back as `cursor` for the next page; null on the last page."
    )

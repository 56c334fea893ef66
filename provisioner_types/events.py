"""A signup event: the body of ``POST /jobs``, for the OpenAPI document.

The service validates the body with ``producers.events.parse_event``, whose errors name the field
at fault; this model documents its shape only."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from provisioner_types.model import Model
from provisioner_types.states import Priority


class SignupGoal(Model):
    goal_type: Literal["event", "page"]
    event_name: str | None = Field(
        default=None, description="Event goals: at most 120 characters, not `engagement`."
    )
    page_path: str | None = Field(default=None, description="Page goals: `/pricing/*`.")
    display_name: str | None = Field(
        default=None,
        description="Unique per site; defaults to the event name or `Visit <page_path>`.",
    )
    custom_props: dict[str, str] | None = None


class SignupGuest(Model):
    email: str
    role: Literal["viewer", "editor"]


class TrackerSettings(Model):
    """Tracker script settings to change; Plausible merges them into the site's (§10)."""

    installation_type: Literal["manual", "wordpress", "gtm", "npm"] | None = None
    track_404_pages: bool | None = None
    hash_based_routing: bool | None = None
    outbound_links: bool | None = None
    file_downloads: bool | None = None
    revenue_tracking: bool | None = None
    tagged_events: bool | None = None
    form_submissions: bool | None = None
    pageview_props: bool | None = None


class SignupEvent(Model):
    """A signup event (README, "Signup events"). Every string must be valid Unicode without NUL
    characters; an event nests at most 8 levels."""

    id: str | int | None = Field(
        default=None,
        description='The idempotency key (trimmed, at most 255 characters; 42 and "42" are one '
        "key); without one it is derived from the request. Or the `Idempotency-Key` header.",
    )
    type: Literal[
        "site.provision",
        "site.delete",
        "goal.delete",
        "custom_prop.delete",
        "guest.delete",
        "tracker.set",
    ] = "site.provision"
    domain: str = Field(description="Normalised as Plausible does.")
    timezone: str | None = Field(default=None, description="IANA name; `Etc/UTC` if omitted.")
    goals: list[SignupGoal] | None = None
    shared_links: list[str] | None = Field(default=None, description="Shared-link names.")
    custom_props: list[str] | None = Field(
        default=None, description="Custom properties to allow (names, 1 to 300 characters)."
    )
    guests: list[SignupGuest] | None = Field(
        default=None, description="Guests to invite; Plausible emails each new one."
    )
    tracker_script_configuration: TrackerSettings | None = Field(
        default=None,
        description="`tracker.set`: the settings to change (at least one); `site.provision`: "
        "the settings to create the site with.",
    )
    property: str | None = Field(
        default=None, description="`custom_prop.delete`: the custom property."
    )
    email: str | None = Field(default=None, description="`guest.delete`: the guest's email.")
    goal_id: int | None = Field(default=None, ge=1, description="`goal.delete`: the goal's id.")
    event_name: str | None = Field(default=None, description="`goal.delete`: by event name.")
    page_path: str | None = Field(default=None, description="`goal.delete`: by page path.")
    callback_url: str | None = Field(
        default=None,
        description="Completion webhook: POSTed the job once it is done (http/https).",
    )
    account: str | None = Field(default=None, description="`default` if omitted.")
    priority: Priority | None = Field(
        default=None, description="`interactive` if omitted (HTTP requests are interactive)."
    )


SIGNUP_EVENT_EXAMPLE: dict[str, Any] = {
    "id": "evt_123",
    "type": "site.provision",
    "domain": "shop.example.com",
    "timezone": "Europe/Berlin",
    "goals": [
        {"goal_type": "event", "event_name": "Signup"},
        {"goal_type": "page", "page_path": "/pricing/*"},
    ],
    "shared_links": ["WordPress"],
}

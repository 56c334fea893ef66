"""Signup-event validation at the edge: whatever the input, a clear error naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from producers.events import MAX_GOALS, MAX_SHARED_LINKS, parse_event
from worker.errors import InvalidRequestError
from worker.jobs.states import Operation

DOMAIN = "shop.example.com"


def goal(kind: str, value: str, **extra: Any) -> dict[str, Any]:
    return {"goal_type": kind, ("event_name" if kind == "event" else "page_path"): value, **extra}


BAD = [
    ({"type": [], "domain": DOMAIN}, "type"),
    ({"type": {}, "domain": DOMAIN}, "type"),
    ({"id": "evt_\ud800", "domain": DOMAIN}, "id"),
    ({"id": "evt_\x00", "domain": DOMAIN}, "id"),
    ({"domain": "shop\x00.example.com"}, "domain"),
    ({"domain": "shop\udc80.example.com"}, "domain"),
    ({"domain": DOMAIN, "timezone": "Europe/Berlin\x00"}, "timezone"),
    ({"domain": DOMAIN, "goals": [goal("event", "Sign\x00up")]}, "goals[0].event_name"),
    ({"domain": DOMAIN, "goals": [goal("event", "Sign\ud800up")]}, "goals[0].event_name"),
    ({"domain": DOMAIN, "goals": [goal("page", "/a\x00")]}, "goals[0].page_path"),
    ({"domain": DOMAIN, "goals": [goal("page", "/\ud800")]}, "goals[0].page_path"),
    (
        {"domain": DOMAIN, "goals": [goal("event", "A", display_name="x\ud800")]},
        "goals[0].display_name",
    ),
    (
        {"domain": DOMAIN, "goals": [goal("event", "A", custom_props={"k": "v\x00"})]},
        "goals[0].custom_props.k",
    ),
    (
        {"domain": DOMAIN, "goals": [goal("event", "A", custom_props={"k\ud800": "v"})]},
        "goals[0].custom_props",
    ),
    ({"domain": DOMAIN, "shared_links": ["Docs\x00"]}, "shared_links[0]"),
    ({"domain": DOMAIN, "shared_links": ["Docs", "\ud800"]}, "shared_links[1]"),
    ({"type": "goal.delete", "domain": DOMAIN, "event_name": "A\x00"}, "event_name"),
    ({"type": "goal.delete", "domain": DOMAIN, "goal_id": 0}, "goal_id"),
    ({"type": "goal.delete", "domain": DOMAIN, "goal_id": -5}, "goal_id"),
    ({"type": "goal.delete", "domain": DOMAIN, "goal_id": "0"}, "goal_id"),
    ({"type": "goal.delete", "domain": DOMAIN, "goal_id": "9" * 5000}, "goal_id"),
    ({"type": "goal.delete", "domain": DOMAIN, "goal_id": 2**64}, "goal_id"),
    ({"domain": DOMAIN, "shared_links": [" WordPress - Shared Dashboard "]}, "shared_links[0]"),
    (
        {"domain": DOMAIN, "goals": [goal("event", "Visit /x"), goal("page", "/x")]},
        "goals[1].display_name",
    ),
    (
        {
            "domain": DOMAIN,
            "goals": [goal("event", "A", display_name="Z"), goal("page", "/b", display_name="Z")],
        },
        "goals[1].display_name",
    ),
    (
        {
            "domain": DOMAIN,
            "goals": [goal("event", "Signup"), goal("page", "/b", display_name="Signup")],
        },
        "goals[1].display_name",
    ),
    ({"domain": DOMAIN, "extra": [[[[[[[[[[1]]]]]]]]]]}, "extra[0][0][0][0][0][0][0]"),
    ({"domain": DOMAIN, "goals": [goal("event", f"E{n}") for n in range(MAX_GOALS + 1)]}, "goals"),
    (
        {"domain": DOMAIN, "shared_links": [f"L{n}" for n in range(MAX_SHARED_LINKS + 1)]},
        "shared_links",
    ),
]


def test_an_event_may_hold_up_to_the_documented_numbers_of_goals_and_links() -> None:
    data = {
        "domain": DOMAIN,
        "goals": [goal("event", f"E{n}") for n in range(MAX_GOALS)],
        "shared_links": [f"L{n}" for n in range(MAX_SHARED_LINKS)],
    }
    request = parse_event(data).request
    assert (len(request.goals), len(request.shared_links)) == (MAX_GOALS, MAX_SHARED_LINKS)


@pytest.mark.parametrize(("data", "field"), BAD)
def test_bad_input_is_an_error_naming_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_event(data)
    assert caught.value.field == field
    assert caught.value.message


def test_shared_link_names_are_stored_stripped() -> None:
    event = parse_event({"domain": DOMAIN, "shared_links": [" Docs ", "Docs", "Team "]})
    assert event.request.shared_links == ("Docs", "Team")


def test_goal_ids_may_be_decimal_strings() -> None:
    event = parse_event({"type": "goal.delete", "domain": DOMAIN, "goal_id": " 12 "})
    assert event.request.goal_id == 12


def test_the_same_goal_twice_is_no_display_name_clash() -> None:
    event = parse_event(
        {"domain": DOMAIN, "goals": [goal("page", "/x"), goal("page", "x"), goal("event", "X")]}
    )
    assert [g.page_path or g.event_name for g in event.request.goals] == ["/x", "X"]


def test_csv_cells_carry_custom_props_and_guests() -> None:
    from producers.rows import CellError, csv_event

    row = csv_event(
        {
            "domain": "shop.example.com",
            "custom_props": "plan|author",
            "guests": "owner@shop.example.com:viewer|dev@shop.example.com:editor",
        }
    )
    request = parse_event(row).request
    assert request.custom_props == ("plan", "author")
    assert [(g.email, g.role) for g in request.guests] == [
        ("owner@shop.example.com", "viewer"),
        ("dev@shop.example.com", "editor"),
    ]
    deleted = parse_event(
        csv_event({"type": "guest.delete", "domain": "a.com", "email": "x@a.com"})
    )
    assert deleted.request.email == "x@a.com"
    with pytest.raises(CellError) as caught:
        csv_event({"domain": "a.com", "guests": "no-role"})
    assert caught.value.field == "guests"


TRACKER = "tracker_script_configuration"


def test_tracker_set_takes_the_settings_to_change_in_plausibles_order() -> None:
    event = parse_event(
        {
            "type": "tracker.set",
            "domain": "https://www.Shop.example.com/",
            TRACKER: {
                "outbound_links": True,
                "installation_type": "manual",
                "tagged_events": False,
            },
        }
    )
    request = event.request
    assert (request.operation, request.domain) == (Operation.set_tracker, DOMAIN)
    assert list((request.tracker_script_configuration or {}).items()) == [
        ("installation_type", "manual"),
        ("outbound_links", True),
        ("tagged_events", False),
    ]
    # A null installation type is a setting too (Plausible's default).
    cleared = parse_event(
        {"type": "tracker.set", "domain": DOMAIN, TRACKER: {"installation_type": None}}
    )
    assert cleared.request.tracker_script_configuration == {"installation_type": None}
    # site.provision may carry it, to create the site with; without it, nothing is stored.
    made = parse_event({"domain": DOMAIN, TRACKER: {"file_downloads": True}})
    assert made.request.tracker_script_configuration == {"file_downloads": True}
    assert parse_event({"domain": DOMAIN}).request.tracker_script_configuration is None


@pytest.mark.parametrize(
    ("settings", "field", "message"),
    [
        (None, TRACKER, "tracker.set needs tracker_script_configuration"),
        ({}, TRACKER, "must be an object naming at least one setting"),
        (["outbound_links"], TRACKER, "must be an object naming at least one setting"),
        (
            {"id": "pa-x"},
            f"{TRACKER}.id",
            "unknown setting 'id'; expected one of installation_type",
        ),
        (
            {"installation_type": "shopify"},
            f"{TRACKER}.installation_type",
            "expected null or one of manual, wordpress, gtm, npm",
        ),
        ({"outbound_links": "true"}, f"{TRACKER}.outbound_links", "must be true or false"),
        ({"outbound_links": 1}, f"{TRACKER}.outbound_links", "must be true or false"),
    ],
)
def test_bad_tracker_settings_are_refused_naming_the_setting(
    settings: object, field: str, message: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_event({"type": "tracker.set", "domain": DOMAIN, TRACKER: settings})
    assert caught.value.field == field
    assert message in caught.value.message


def test_csv_cells_carry_tracker_settings() -> None:
    from producers.rows import CellError, csv_event

    row = csv_event(
        {
            "type": "tracker.set",
            "domain": DOMAIN,
            TRACKER: "installation_type=manual|outbound_links=true|tagged_events=false",
        }
    )
    assert parse_event(row).request.tracker_script_configuration == {
        "installation_type": "manual",
        "outbound_links": True,
        "tagged_events": False,
    }
    cleared = csv_event(
        {"type": "tracker.set", "domain": DOMAIN, TRACKER: "installation_type=null"}
    )
    assert cleared[TRACKER] == {"installation_type": None}
    as_json = csv_event({"domain": DOMAIN, TRACKER: '{"file_downloads": true}'})
    assert parse_event(as_json).request.tracker_script_configuration == {"file_downloads": True}
    with pytest.raises(CellError) as caught:
        csv_event({"domain": DOMAIN, TRACKER: "outbound_links"})
    assert caught.value.field == TRACKER

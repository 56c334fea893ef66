"""Fuzzing events (hypothesis): every event is accepted or refused with an
``InvalidRequestError`` naming the field.

No junk input crashes a process or costs a neighbouring valid input. How runs are derandomized
and scaled: ``testkit.strategies``; a falsifying example found stays as an ``@example``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import event as tally
from hypothesis import example, given
from hypothesis import strategies as st

from producers.events import Event, parse_event
from testkit.events import event
from testkit.strategies import (
    EVENT_LIKE,
    JSONISH,
    KEYS,
    fuzz,
)
from worker.errors import InvalidRequestError
from worker.jobs.intake import derive_key, fingerprint
from worker.jobs.states import Priority

# -- strategies --------------------------------------------------------------------------------


DOMAINS = st.one_of(
    st.sampled_from(["shop.example.com", "https://www.Shop.Example.com/", "blog.example.org"]),
    # (no leading "www.": it is stripped)
    st.from_regex(r"[a-vx-z0-9][a-z0-9-]{0,20}(\.[a-z]{2,8}){1,2}", fullmatch=True),
)
VALID_GOALS = st.lists(
    st.one_of(
        st.sampled_from(["Signup", "Purchase", " Trial "]).map(
            lambda name: {"goal_type": "event", "event_name": name}
        ),
        st.sampled_from(["/pricing/*", "blog", "/"]).map(
            lambda path: {"goal_type": "page", "page_path": path}
        ),
    ),
    max_size=4,
)
COMMON = {
    "id": st.one_of(
        st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=40),
        st.integers(0, 10**30),
    ),
    "account": st.just("default"),
    "priority": st.sampled_from(["interactive", "bulk"]),
}
#: Events that are valid by the rules of docs/events.md: each must be accepted.
VALID_EVENTS = st.one_of(
    st.fixed_dictionaries(
        {"domain": DOMAINS},
        optional={
            **COMMON,
            "type": st.just("site.provision"),
            "timezone": st.sampled_from(["Europe/Berlin", "Etc/UTC", "America/New_York"]),
            "goals": VALID_GOALS,
            "shared_links": st.lists(st.sampled_from(["WordPress", "Docs", " Team "]), max_size=3),
        },
    ),
    st.fixed_dictionaries({"type": st.just("site.delete"), "domain": DOMAINS}, optional=COMMON),
    st.fixed_dictionaries(
        {
            "type": st.just("goal.delete"),
            "domain": DOMAINS,
            "goal_id": st.one_of(st.integers(1, 2**63 - 1), st.integers(1, 2**63 - 1).map(str)),
        },
        optional=COMMON,
    ),
    st.fixed_dictionaries(
        {"type": st.just("goal.delete"), "domain": DOMAINS, "event_name": st.just("Signup")},
        optional=COMMON,
    ),
)
#: A valid event with one field (known or not) replaced by anything.
NEAR_VALID = st.tuples(VALID_EVENTS, KEYS, JSONISH).map(lambda t: {**t[0], t[1]: t[2]})


def _check_accepted(parsed: Event) -> None:
    """What an accepted event promises: it builds a job the store can fingerprint."""
    assert isinstance(parsed, Event)
    assert parsed.key is None or 0 < len(parsed.key) <= 255
    job = parsed.job(Priority.bulk)
    assert job.priority in (Priority.bulk, Priority.interactive)
    assert derive_key(parsed.request).startswith("req-")
    assert len(fingerprint(parsed.request)) == 64


# -- events ------------------------------------------------------------------------------------


@fuzz(500)
@given(data=st.one_of(JSONISH, EVENT_LIKE, NEAR_VALID, VALID_EVENTS))
@example(data={"type": [], "domain": "a.example.com"})  # an unhashable type
@example(data={"domain": "a.example.com", "priority": 10**5000})  # found: repr() raised
@example(data={"goal_id": "١٢", "type": "goal.delete", "domain": "a.example.com"})
@example(data={"domain": "a.example.com", "goals": [{"goal_type": "event", "event_name": "a"}] * 2})
def test_parse_event_returns_an_event_or_raises_invalid_request(data: object) -> None:
    outcome = _parse(data)
    if isinstance(outcome, Event):
        tally("accepted")
        _check_accepted(outcome)
        return
    tally(f"refused: {(outcome.field or '(event)').split('.')[0].split('[')[0]}")
    assert isinstance(outcome.message, str)
    assert outcome.message
    # A field is a path such as goals[0].event_name; "" only for a key that is itself "".
    assert outcome.field is None or isinstance(outcome.field, str)
    if not isinstance(data, Mapping):
        assert outcome.field is None


def _parse(data: object) -> Event | InvalidRequestError:
    """parse_event's answer; any exception but InvalidRequestError propagates (and fails)."""
    try:
        return parse_event(data)
    except InvalidRequestError as exc:
        return exc


@fuzz(200)
@given(data=VALID_EVENTS)
def test_every_valid_event_is_accepted(data: dict[str, Any]) -> None:
    outcome = _parse(data)
    assert isinstance(outcome, Event), (outcome, data)
    _check_accepted(outcome)
    assert outcome.request.domain == data["domain"].lower().removeprefix("https://www.").strip("/")
    tally(outcome.request.operation.value)


MUTABLE_FIELDS = ("id", "type", "domain", "timezone", "goals", "shared_links", "account")


@fuzz(300)
@given(name=st.sampled_from(MUTABLE_FIELDS), value=JSONISH)
@example(name="goals", value=[{"goal_type": "event", "event_name": "x", "custom_props": {"": ""}}])
@example(name="id", value=10**5000)  # found: str() of an int over 4300 digits raised ValueError
@example(name="type", value=10**5000)  # found: so did repr() in the error message
@example(name="timezone", value=[10**5000])
@example(name="goals", value=[{"goal_type": 10**5000}])
def test_a_bad_field_is_named_in_the_error(name: str, value: object) -> None:
    """One field of a valid event replaced by anything: refused, the error names that field (or
    one inside it), or accepted as a valid event."""
    data = event(1)
    data[name] = value
    outcome = _parse(data)
    if isinstance(outcome, Event):
        _check_accepted(outcome)
        return
    assert outcome.field is not None, outcome.message
    # A type switched to goal.delete is refused for the goal it then needs.
    allowed = (name, "goal_id") if name == "type" else (name,)
    assert outcome.field.split(".")[0].split("[")[0] in allowed, (outcome.field, outcome.message)

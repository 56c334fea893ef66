"""Hypothesis settings and strategies for the fuzz tests: junk JSON, event-like dictionaries and
tricky tokens to splice into otherwise valid values.

Under ``CI`` the runs are derandomized (the same examples every run); ``FUZZ_SCALE=10``
multiplies every example budget, for a longer local hunt.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from producers.events import EVENT_TYPES
from producers.rows import CSV_COLUMNS

CI = bool(os.environ.get("CI"))


SCALE = max(1, int(os.environ.get("FUZZ_SCALE", "1")))


def fuzz(max_examples: int) -> Callable[[Any], Any]:
    """Hypothesis settings for a fuzz test: no deadline (SQLite and CSV timings vary), no example
    database in the work tree, deterministic under CI."""
    return settings(
        max_examples=max_examples * SCALE,
        deadline=None,
        derandomize=CI,
        database=None,
        print_blob=True,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
    )


EVENT_KEYS = (*CSV_COLUMNS, "goal_type", "display_name", "custom_props")


#: Any character, lone surrogates and NUL included.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)


TEXT = st.one_of(
    ANY_TEXT,
    st.sampled_from(["", " ", "\x00", "\ud800", "Europe/Berlin", "site.provision", "bulk"]),
)


BIG_INTS = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([0, -1, 2**63 - 1, 2**63, 10**19, 10**300]),
)


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    BIG_INTS,
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
)


KEYS = st.one_of(st.sampled_from(EVENT_KEYS), TEXT)


#: Any JSON-ish value (Python side: NaN, infinities, lone surrogates and NULs included).
JSONISH = st.recursive(
    SCALARS,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4),
        st.tuples(kids, kids),
        st.dictionaries(KEYS, kids, max_size=5),
    ),
    max_leaves=20,
)


GOALS_LIKE = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "goal_type": st.one_of(st.sampled_from(["event", "page", "visit"]), JSONISH),
            "event_name": st.one_of(
                st.sampled_from(["Signup", " ", "engagement", "x" * 121]), JSONISH
            ),
            "page_path": st.one_of(st.sampled_from(["/pricing/*", "blog", " "]), JSONISH),
            "display_name": st.one_of(st.sampled_from(["Signup", "", "Visit /blog"]), JSONISH),
            "custom_props": st.one_of(st.dictionaries(TEXT, TEXT, max_size=4), JSONISH),
        },
    ),
    max_size=5,
)


#: Mostly-plausible events: the known fields, each valid or junk.
EVENT_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.sampled_from(["evt_1", " evt_2 ", 42, "x" * 256]), JSONISH),
        "type": st.one_of(st.sampled_from([*EVENT_TYPES, "site.other"]), JSONISH),
        "domain": st.one_of(
            st.sampled_from(
                ["shop.example.com", "https://www.Shop.Example.com/", "a@b", "x" * 256, ""]
            ),
            JSONISH,
        ),
        "timezone": st.one_of(st.sampled_from(["Europe/Berlin", "Mars/Olympus"]), JSONISH),
        "goals": st.one_of(GOALS_LIKE, JSONISH),
        "shared_links": st.one_of(
            st.lists(st.sampled_from(["WordPress", "WordPress - Shared Dashboard", " "])),
            JSONISH,
        ),
        "goal_id": st.one_of(st.sampled_from([1, "7", "0", "99999999999999999999"]), JSONISH),
        "event_name": st.one_of(st.sampled_from(["Signup", "engagement"]), JSONISH),
        "page_path": st.one_of(st.sampled_from(["/a", " "]), JSONISH),
        "account": st.one_of(st.sampled_from(["default", "agency", " "]), JSONISH),
        "priority": st.one_of(st.sampled_from(["interactive", "bulk", "urgent"]), JSONISH),
    },
)


#: Tricky tokens to splice into otherwise valid values (a fuzzing dictionary): digits that
#: ``str.isdigit`` accepts but ``int``/``float`` refuse, other digits, signs, blanks, NUL.
TRICKY = st.sampled_from(
    ["\u00b2", "\u00b3", "\u00b9", "\u0661", "\uff11", "-", "+", " ", "\x00", "e9"]
)


TRICKY_LATIN1 = TRICKY.filter(lambda t: t <= "\u00ff")


@st.composite
def spliced(draw: st.DrawFn, base: str, alphabet: st.SearchStrategy[str] = TRICKY) -> str:
    """``base`` with a tricky token inserted or substituted somewhere (or in place of it)."""
    at = draw(st.integers(0, len(base)))
    cut = draw(st.integers(0, 1))
    return base[:at] + draw(alphabet) + base[at + cut :]


def deep_json(depth: int, opener: str) -> str:
    """A JSON value nested ``depth`` levels deep: ``[[1]]`` or ``{"a": {"a": 1}}``."""
    if opener == "[":
        return "[" * depth + "1" + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth

"""Plausible's own validation rules, as pure functions. A leaf: imports nothing of ours.

The sandbox applies them to answer exactly as Plausible does, and the producers reuse them to
refuse bad input before it is queued. Source: the Sites API reference, §8 (domains), §7.3
(timezones), §9 (goals) and §10 (the tracker script configuration).
"""

from __future__ import annotations

import functools
import zoneinfo

#: Longer domains do not fit Plausible's varchar(255) column: the API answers 500, not 400.
MAX_DOMAIN_LENGTH = 255
#: Goal event names are capped by the goal changeset.
MAX_EVENT_NAME_LENGTH = 120
#: Names the UI keeps for its own shared links.
RESERVED_SHARED_LINK_NAMES = frozenset({"WordPress - Shared Dashboard"})
#: Event names Plausible keeps for its own events.
RESERVED_EVENT_NAMES = frozenset({"engagement", "__journey_end__"})
#: A site's tracker script configuration (§10): ``installation_type`` (one of these, or null)
#: and switches, each a boolean defaulting to false, in the order Plausible casts them.
INSTALLATION_TYPES = ("manual", "wordpress", "gtm", "npm")
TRACKER_BOOLEANS = (
    "track_404_pages",
    "hash_based_routing",
    "outbound_links",
    "file_downloads",
    "revenue_tracking",
    "tagged_events",
    "form_submissions",
    "pageview_props",
)

RESERVED_CHARACTERS = ":?#[]@!$&'()*+,;="
BLANK_MESSAGE = "domain: can't be blank"
FORMAT_MESSAGE = "domain: only letters, numbers, slashes, underscores and period allowed"
RESERVED_MESSAGE = f"domain: must not contain URI reserved characters {RESERVED_CHARACTERS}"
# Plausible builds this from an Elixir heredoc, hence the trailing newline.
DOMAIN_TAKEN_MESSAGE = (
    "domain: This domain cannot be registered. Perhaps one of your colleagues registered it? "
    "If that's not the case, please contact support@plausible.io\n"
)
_EXTRA_DOMAIN_CHARACTERS = frozenset("-.\\/_:")


def normalise_domain(raw: str) -> str:
    """Clean a domain the way Plausible does before storing it.

    Lowercase, trim whitespace, strip a leading ``http://`` then ``https://``, trim ``/`` at both
    ends, strip a leading ``www.``: ``https://www.Example.com/`` becomes ``example.com``.
    IDNs stay as they are (no punycode).
    """
    domain = raw.lower().strip()
    domain = domain.removeprefix("http://").removeprefix("https://")
    return domain.strip("/").removeprefix("www.")


def domain_error(domain: str) -> str | None:
    """The ``domain: …`` message Plausible gives for a normalised domain, or None if it is valid.

    The reserved-characters check runs after the format check and Plausible reports the last
    error added, so a domain failing both gets the reserved-characters message.
    Length is not checked here: see ``MAX_DOMAIN_LENGTH``.
    """
    if domain == "":
        return BLANK_MESSAGE
    if any(ch in RESERVED_CHARACTERS for ch in domain):
        return RESERVED_MESSAGE
    if not all(ch.isalpha() or ch.isdecimal() or ch in _EXTRA_DOMAIN_CHARACTERS for ch in domain):
        return FORMAT_MESSAGE
    return None


@functools.cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def is_valid_timezone(name: object) -> bool:
    """Whether ``name`` is an IANA timezone name such as ``Europe/Berlin`` or ``Etc/UTC``."""
    return isinstance(name, str) and name in _timezones()


def normalise_page_path(raw: str) -> str:
    """Trim a goal's page path and give it a leading ``/``."""
    path = raw.strip()
    return path if path.startswith("/") else "/" + path


def normalise_event_name(raw: str) -> str:
    """Trim a goal's event name (its length is then checked against ``MAX_EVENT_NAME_LENGTH``)."""
    return raw.strip()


def default_display_name(*, event_name: str | None, page_path: str | None) -> str:
    """A goal's display name when none is given: the event name, or ``Visit <page_path>``."""
    if event_name is not None:
        return event_name
    return f"Visit {page_path}"

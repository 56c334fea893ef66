"""A typed, synchronous client for Plausible's Sites API (``/api/v1/sites…``).

This package is the only part of the project that imports httpx to talk to Plausible: everything
else sees typed results (frozen dataclasses) and the error tree of :mod:`worker.errors`. The
authority for routes, statuses and messages is ``shared/plausible-sites-api.md`` (section numbers
in the code refer to it). It imports only ``worker.errors`` and ``worker.metrics`` of ours.

- ``results``: the typed results (``Site``, ``SiteSummary``, ``Goal``, ``SharedLink``, ``Team``,
  ``Guest``).
- ``responses``: reading responses: :func:`error_from_response` and parsing 200 bodies.
- ``wire``: one request on the wire: the gate, the body deadline, metrics, logs, redaction.
- ``client``: ``PlausibleClient``, one method per route.

Usage::

    with PlausibleClient(base_url="https://plausible.io", api_key=key) as client:
        site = client.create_site("example.com", timezone="Europe/London")
        client.ensure_goal(site.domain, goal_type="event", event_name="Signup")

Design points:

- One call is one HTTP request. Retry policy belongs to the pipeline, which decides from
  ``PlausibleError.retryable`` and, for 429s, ``RateLimitedError.reset_at``.
- A client bound to a ``RequestGate`` (``client.using(gate)``) asks the gate before every
  request it sends, list pages included, and tells it every outcome: that is where quota
  permits are taken (``worker.quota.permits``).
- Every non-200 response goes through :func:`error_from_response`, the single mapping from a
  response to the error tree; network failures become ``PlausibleConnectionError``.
- Every request is counted and timed in ``worker.metrics``, labelled with its route template
  (``GET /api/v1/sites/:site_id``) and status, never with a domain.
- The API key travels only in the ``Authorization`` header. It is kept out of reprs, log records,
  error messages and exception chains (httpx exceptions hold the request, headers included, so
  they are never chained onto ours).
"""

from worker.plausible.client import MAX_PAGE_SIZE, PlausibleClient
from worker.plausible.responses import error_from_response
from worker.plausible.results import Goal, Guest, SharedLink, Site, SiteSummary, Team
from worker.plausible.wire import RequestGate

__all__ = [
    "MAX_PAGE_SIZE",
    "Goal",
    "Guest",
    "PlausibleClient",
    "RequestGate",
    "SharedLink",
    "Site",
    "SiteSummary",
    "Team",
    "error_from_response",
]

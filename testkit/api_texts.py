"""The Sites API reference's exact texts (``shared/plausible-sites-api.md``), written out here
rather than imported from ``plausible_rules`` so that the tests check the sandbox and the
client against the reference, not against the code under test."""

from __future__ import annotations

DOMAIN_TAKEN = (
    "domain: This domain cannot be registered. Perhaps one of your colleagues registered it? "
    "If that's not the case, please contact support@plausible.io\n"
)
INVALID_KEY = (
    "Invalid API key. Please make sure you're using a valid API key with access to the resource "
    "you've requested."
)
MISSING_KEY = "Missing API key. Please use a valid Plausible API key as a Bearer Token."
MISSING_SITE_ID = (
    "Missing site ID. Please provide the required site_id parameter with your request."
)
NO_SITES_API = (
    "The account that owns this API key does not have access to Sites API. Please make sure "
    "you're using the API key of a subscriber account and that the subscription plan includes "
    "Sites API"
)
LOCKED = (
    "This Plausible site is locked due to missing active subscription. In order to access it, "
    "the site owner should subscribe to a suitable plan"
)
NO_PROPS = "Your current subscription plan does not include Custom Properties"
CONSOLIDATED = "This operation is unavailable for a consolidated view"
SITE_NOT_FOUND = "Site could not be found"

"""Tests against the sandbox (``provision sandbox``, the fake Plausible) over real HTTP: the API
client, the pipeline, pauses, metrics, the inventory. Imports the product and ``testkit``."""

"""Every way a job gets in: signup files, the Redis stream, the Python API (Django included),
desired-state files planned against the inventory (``producers.plans``), and the typed SDK of
the HTTP service (``producers.client``).

Imports ``worker`` and the leaf packages only. The SDK imports neither SQLAlchemy nor ``worker``,
so a remote web app can install and import it alone.
"""

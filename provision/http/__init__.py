"""``provision serve``: the HTTP service (FastAPI) and the dashboard it mounts at ``/ui``.

``app`` (``create_app``: puts the parts together), ``gate`` (the bearer token and the body's
limits, before any route), ``errors`` (the one error body), ``openapi`` (the document's error
answers and what FastAPI cannot infer), ``deps`` (what routes work on, as dependencies),
``routes`` (jobs, batches, quota, metrics) and ``health`` (``/healthz``, ``/readyz``).
"""

from provision.http.app import create_app

__all__ = ["create_app"]

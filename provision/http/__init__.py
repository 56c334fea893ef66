"""``provision serve``: the HTTP service (FastAPI) and the dashboard it mounts at ``/ui``."""

from provision.http.app import create_app

__all__ = ["create_app"]

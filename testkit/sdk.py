"""What the typed client's tests share: the service's token and retries without pauses."""

from __future__ import annotations

from producers.client import Retries

TOKEN = "client-s3cret-token"
#: Retries without pauses worth waiting for.
FAST = Retries(attempts=5, total_seconds=30, backoff_initial=0.01, backoff_max=0.05)

"""The Celery application as a ``celery -A`` target, for Celery's own tools::

    celery -A worker.celery_app inspect ping        # or: inspect active, inspect stats, report
    celery -A worker.celery_app events              # task events, live
    celery -A worker.celery_app flower              # with the flower package installed

Built from the environment (``PROVISIONER_BROKER_URL``...). Importing it connects to nothing,
starts nothing and needs no API key. Start workers with ``provision worker``, which checks the
configuration (accounts, keys, the database) before it starts one.
"""

from __future__ import annotations

from worker.app import create_app
from worker.settings import get_settings

app = create_app(get_settings())

"""A minimal Django project whose signups enqueue a Plausible site, in one transaction.

SQLite (``db.sqlite3``, or ``SQLITE_PATH``) by default; PostgreSQL when ``PGDATABASE`` is set.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "example-only-not-a-secret"
DEBUG = True
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "signup_site.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "signups",
    "producers.django",  # the provisioner: its system check, migrations and `provisioner`
]

if os.environ.get("PGDATABASE"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ["PGDATABASE"],
            "USER": os.environ.get("PGUSER", "postgres"),
            "PASSWORD": os.environ.get("PGPASSWORD", ""),
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("SQLITE_PATH", BASE_DIR / "db.sqlite3"),
        }
    }

# The status table lives in DATABASES["default"], beside the signups; the workers poll it
# (PROVISIONER_DATABASE_URL of the workers names this same database).
PLAUSIBLE_PROVISIONER = {
    "ACCOUNTS_FILE": os.environ.get("PROVISIONER_ACCOUNTS_FILE"),  # None: the default account
}

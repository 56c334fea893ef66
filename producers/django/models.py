"""No Django models: the status table belongs to the provisioner's Alembic migrations.

The module exists so that ``manage.py migrate`` sends this app ``post_migrate``, on which the
status table is upgraded too (``PLAUSIBLE_PROVISIONER["MIGRATE"]``).
"""

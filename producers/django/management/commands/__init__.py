"""``manage.py provisioner_migrate``: see ``producers.django``."""

"""Django integration: enqueue provisioning jobs inside ``transaction.atomic()``.

Add ``"producers.django"`` to ``INSTALLED_APPS`` (``pip install 'plausible-provisioner[django]'``);
the status table lives in ``DATABASES["default"]`` (or the alias ``PLAUSIBLE_PROVISIONER["DATABASE"]``
names), beside your own tables::

    from django.db import connection, transaction
    from producers.django import provisioner

    with transaction.atomic():
        signup = Signup.objects.create(domain=domain)
        provisioner.enqueue(connection, {"id": f"signup-{signup.pk}", "domain": domain})

The job row is written in your transaction: it exists if and only if the block commits, and the
workers' scheduler dispatches it from there. Settings (all optional) in ``settings.py``::

    PLAUSIBLE_PROVISIONER = {
        "DATABASE": "default",           # the alias whose database holds the status table
        "ACCOUNTS_FILE": BASE_DIR / "accounts.toml",  # as PROVISIONER_ACCOUNTS_FILE
        "MIGRATE": True,                 # `manage.py migrate` also upgrades the status table
    }

Every other setting comes from the ``PROVISIONER_*`` environment, as for the ``provision``
command. ``manage.py provisioner_migrate`` creates or upgrades the status table on its own; the
system check ``plausible_provisioner.E001``/``E002`` stops ``runserver`` (and every command that
runs checks, except ``migrate``) while the table is missing or behind this version.

Django is imported by this package only: the rest of the provisioner does not need it.
"""

from __future__ import annotations

from producers.django.provisioner import DjangoProvisioner, provisioner

__all__ = ["DjangoProvisioner", "provisioner"]

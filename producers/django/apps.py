"""The Django app of the provisioner: ``INSTALLED_APPS = [..., "producers.django"]``."""

from __future__ import annotations

from django.apps import AppConfig
from django.core.signals import setting_changed
from django.db.models.signals import post_migrate


class ProvisionerConfig(AppConfig):
    name = "producers.django"
    label = "plausible_provisioner"
    verbose_name = "Plausible provisioner"
    default = True

    def ready(self) -> None:
        from producers.django import checks, schema
        from producers.django.provisioner import provisioner

        checks.register()
        # The app has a (model-less) models module, so migrate sends it post_migrate once.
        post_migrate.connect(
            schema.upgrade_after_migrate, sender=self, dispatch_uid="plausible_provisioner"
        )
        setting_changed.connect(provisioner.setting_changed, dispatch_uid="plausible_provisioner")

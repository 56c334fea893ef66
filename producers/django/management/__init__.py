"""Django's management commands of ``producers.django``."""

"""``python manage.py test``: the test database gets the status table too (via ``migrate``)."""

from django.db import connection
from django.test import TestCase

from signups.models import Signup


class SignupTests(TestCase):
    def test_a_signup_enqueues_its_site_in_the_same_transaction(self) -> None:
        response = self.client.post(
            "/signups", {"email": "a@example.com", "domain": "a.example.com"}, "application/json"
        )
        assert response.status_code == 201
        key = f"signup-{response.json()['signup']}"
        with connection.cursor() as cursor:
            cursor.execute("SELECT status FROM provisioning_jobs WHERE idempotency_key = %s", [key])
            assert cursor.fetchall() == [("queued",)]

    def test_an_invalid_domain_saves_nothing(self) -> None:
        response = self.client.post(
            "/signups", {"email": "b@example.com", "domain": "not a domain"}, "application/json"
        )
        assert response.status_code == 422
        assert response.json()["field"] == "domain"
        assert not Signup.objects.exists()

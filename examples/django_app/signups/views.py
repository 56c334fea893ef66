"""``POST /signups`` {"email", "domain"}: save the signup and enqueue its site, atomically."""

import json

from django.db import connection, transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from producers.django import provisioner
from signups.models import Signup
from worker.errors import InvalidRequestError


@csrf_exempt
@require_POST
def signup(request: HttpRequest) -> JsonResponse:
    data = json.loads(request.body)
    try:
        with transaction.atomic():  # the signup and its job commit together, or neither does
            signup = Signup.objects.create(email=data["email"], domain=data["domain"])
            job_id = provisioner.enqueue(
                connection, {"id": f"signup-{signup.pk}", "domain": signup.domain}
            )
    except InvalidRequestError as exc:  # rolled back: no signup without its site
        return JsonResponse({"error": str(exc), "field": exc.field}, status=422)
    return JsonResponse({"signup": signup.pk, "job": job_id}, status=201)

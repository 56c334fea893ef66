"""What ``provision serve`` promises its clients: the OpenAPI document, response models equal
to the views, the one error shape for every refusal and crash, and the metrics exposition."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from producers.events import parse_event
from provision.http.app import create_app
from provision.http.gate import MAX_BODY_BYTES
from provisioner_types import Job, Quota
from testkit.events import event
from testkit.service_api import (
    AUTH,
    JSON_AUTH,
    TOKEN,
    assert_error,
    fail,
)
from worker import metrics
from worker.accounts import load_accounts
from worker.jobs import view
from worker.jobs.specs import GoalRecord, Progress, SiteRecord
from worker.jobs.store import JobStore
from worker.quota.limiter import Limiter
from worker.quota.report import Reporter
from worker.settings import Settings


def test_openapi_documents_the_models_the_bearer_scheme_and_the_errors(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    components = schema["components"]
    assert components["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A token of the accounts file, or `PROVISIONER_API_TOKEN`",
    }
    models = components["schemas"]
    for name in ("Job", "JobPage", "Batch", "Quota", "Changed", "Health", "ErrorBody"):
        assert name in models
    assert set(models["Batch"]["properties"]) >= {
        "counts",
        "failures_by_code",
        "failures_truncated",
        "expected_completion",
        "failures",
    }
    assert set(models["JobPage"]["properties"]) == {"jobs", "next_cursor"}
    assert set(models["ErrorBody"]["properties"]) == {"error"}
    assert set(models["SignupEvent"]["properties"]) == {
        "id",
        "type",
        "domain",
        "timezone",
        "goals",
        "shared_links",
        "custom_props",
        "guests",
        "tracker_script_configuration",
        "goal_id",
        "event_name",
        "page_path",
        "property",
        "email",
        "account",
        "priority",
        "callback_url",
    }
    assert "HTTPValidationError" not in json.dumps(schema)  # FastAPI's own 422 body is not ours

    def ref(path: str, method: str, status: str) -> str:
        content = schema["paths"][path][method]["responses"][status]["content"]
        return str(content["application/json"]["schema"]["$ref"]).rsplit("/", 1)[-1]

    post = schema["paths"]["/jobs"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/SignupEvent"
    )
    assert ref("/jobs", "post", "202") == "Job"
    assert ref("/jobs", "get", "200") == "JobPage"
    assert ref("/batches/{batch_id}", "get", "200") == "Batch"
    assert ref("/jobs/retry", "post", "202") == "Changed"
    assert ref("/readyz", "get", "200") == "Health"
    quota = schema["paths"]["/quota"]["get"]["responses"]["200"]["content"]
    assert quota["application/json"]["schema"]["items"]["$ref"].endswith("/Quota")
    for path, method, status in [
        ("/jobs", "post", "401"),
        ("/jobs", "post", "409"),
        ("/jobs", "post", "413"),
        ("/jobs", "post", "422"),
        ("/jobs", "get", "422"),
        ("/jobs/{ref}", "get", "404"),
        ("/jobs/{ref}/retry", "post", "404"),
        ("/jobs/{ref}/retry", "post", "409"),
        ("/jobs/{ref}/cancel", "post", "409"),
        ("/jobs/cancel", "post", "422"),
        ("/metrics", "get", "401"),
        ("/readyz", "get", "503"),
    ]:
        assert ref(path, method, status) == "ErrorBody", (path, method, status)


def progressed_job(store: JobStore) -> str:
    """A failed job with every part of a view filled in: site, goals, shared links, an error."""
    job = store.enqueue(parse_event(event(1)).request, key="evt_1", batch="b1").job
    progress = Progress(
        site=SiteRecord(domain="site1.example.com", timezone="Europe/Berlin", adopted=True),
        goals={
            "event:Signup": GoalRecord(
                id=7, goal_type="event", event_name="Signup", display_name="Signup"
            )
        },
        shared_links={"WordPress": "https://plausible.example/share/site1?auth=x"},
    )
    fail(store, job.id, progress=progress)
    return job.id


def reporter_for(store: JobStore) -> Reporter:
    settings = Settings(hourly_limit=600, burst_limit=60, burst_seconds=10)
    return Reporter(store, Limiter(store.engine), load_accounts(settings))


def test_the_response_models_carry_the_views_unchanged(store: JobStore) -> None:
    job_id = progressed_job(store)
    store.enqueue(parse_event(event(2)).request, key="evt_2", batch="b1")
    reporter = reporter_for(store)
    job = store.get(job_id)
    assert job is not None
    shown = view.job_view(job)
    assert shown.goals
    assert shown.shared_links
    assert shown.error
    batch = view.batch_view(store.batch_summary("b1"), reporter.batch_eta("b1")).model_dump(
        mode="json"
    )
    assert batch["failures"]
    assert batch["expected_completion"] is not None
    quotas = reporter.quotas()
    assert [Quota.model_validate(q).model_dump(mode="json") for q in quotas] == quotas

    client = TestClient(create_app(store, token=SecretStr(TOKEN), reporter=reporter))
    served_job = client.get(f"/jobs/{job_id}", headers=AUTH)
    assert served_job.json() == shown.model_dump(mode="json")
    assert Job.model_validate_json(served_job.content) == shown
    served = client.get("/batches/b1", headers=AUTH).json()
    assert {k: v for k, v in served.items() if k != "expected_completion"} == {
        k: v for k, v in batch.items() if k != "expected_completion"
    }
    assert served["expected_completion"] is not None
    assert client.get("/quota", headers=AUTH).json() == reporter.quotas()


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code", "field"),
    [
        ("GET", "/jobs", {}, 401, "unauthorized", None),
        ("GET", "/no/such/route", {"headers": AUTH}, 404, "not_found", None),
        ("GET", "/jobs/nope", {"headers": AUTH}, 404, "not_found", None),
        ("GET", "/batches/nope", {"headers": AUTH}, 404, "not_found", None),
        ("GET", "/quota", {"headers": AUTH}, 404, "not_found", None),
        ("POST", "/jobs/nope/retry", {"headers": AUTH}, 404, "not_found", None),
        ("DELETE", "/jobs", {"headers": AUTH}, 405, "method_not_allowed", None),
        (
            "GET",
            "/jobs",
            {"headers": AUTH, "params": {"limit": 0}},
            422,
            "validation_error",
            "limit",
        ),
        (
            "GET",
            "/jobs",
            {"headers": AUTH, "params": {"limit": "many"}},
            422,
            "validation_error",
            "limit",
        ),
        (
            "GET",
            "/jobs",
            {"headers": AUTH, "params": {"status": "lost"}},
            422,
            "validation_error",
            "status",
        ),
        (
            "GET",
            "/jobs",
            {"headers": AUTH, "params": {"domain": "a b"}},
            422,
            "validation_error",
            "domain",
        ),
        (
            "GET",
            "/jobs",
            {"headers": AUTH, "params": {"cursor": "zz"}},
            422,
            "bad_cursor",
            "cursor",
        ),
        (
            "POST",
            "/jobs",
            {"headers": AUTH, "content": b"{not json"},
            422,
            "validation_error",
            None,
        ),
        ("POST", "/jobs", {"headers": AUTH, "json": [1, 2]}, 422, "validation_error", None),
        (
            "POST",
            "/jobs",
            {"headers": AUTH, "json": {"domain": 5}},
            422,
            "validation_error",
            "domain",
        ),
        (
            "POST",
            "/jobs",
            {"headers": {**AUTH, "Idempotency-Key": "k"}, "json": event(1)},
            422,
            "key_mismatch",
            "id",
        ),
        ("POST", "/jobs/retry", {"headers": AUTH, "json": {}}, 422, "empty_filter", None),
        (
            "POST",
            "/jobs/retry",
            {"headers": AUTH, "json": {"stauts": "failed"}},
            422,
            "validation_error",
            "stauts",
        ),
        (
            "POST",
            "/jobs/cancel",
            {"headers": AUTH, "json": {"status": "lost"}},
            422,
            "validation_error",
            "status",
        ),
        (
            "POST",
            "/jobs/cancel",
            {"headers": JSON_AUTH, "content": b"{not json"},
            422,
            "validation_error",
            None,
        ),
        (
            "POST",
            "/jobs",
            {"headers": AUTH, "content": b" " * (MAX_BODY_BYTES + 1)},
            413,
            "body_too_large",
            None,
        ),
    ],
)
def test_every_error_answers_the_one_shape(
    client: TestClient,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    code: str,
    field: str | None,
) -> None:
    response = client.request(method, path, **kwargs)
    assert_error(response, status, code, field)
    if status == 405:
        assert "Allow" in response.headers


def test_a_reused_key_and_a_wrong_status_are_409_in_the_one_shape(client: TestClient) -> None:
    assert client.post("/jobs", json=event(1), headers=AUTH).status_code == 202
    clash = client.post("/jobs", json=event(1, domain="other.example.com"), headers=AUTH)
    assert_error(clash, 409, "idempotency_key_reused", "id")
    assert_error(client.post("/jobs/evt_1/retry", headers=AUTH), 409, "wrong_status")


def test_a_crash_is_a_500_in_the_one_shape_without_its_details(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(ref: str) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(store, "poll", broken)
    client = TestClient(create_app(store, token=SecretStr(TOKEN)), raise_server_exceptions=False)
    response = client.get("/jobs/x", headers=AUTH)
    assert_error(response, 500, "internal_error")
    assert "secret" not in response.text


def test_metrics_serve_the_exposition_with_its_content_type(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        metrics,
        "exposition",
        lambda: (b"provisioner_up 1\n", "text/plain; version=0.0.4; charset=utf-8"),
    )
    response = client.get("/metrics", headers=AUTH)
    assert response.status_code == 200
    assert response.content == b"provisioner_up 1\n"
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"

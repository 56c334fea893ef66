"""Tokens per tenant over real HTTP: a real ``provision serve`` with an accounts file naming four
tokens. Every route of the OpenAPI document is tried with every token: the scope its operation
names (``x-scope``) lets exactly the tokens that hold it through, so a new route cannot be
forgotten. A token sees nothing of another account, not even by id; the old single token still
works as an admin."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from provision.tokens import token_hash
from testkit.databases import migrated_engine
from testkit.inventory import record_site
from testkit.private_services import free_port
from testkit.sandbox_process import REPO_ROOT
from testkit.waiting import wait_for
from worker.jobs.specs import JobRequest, Progress
from worker.jobs.states import Operation
from worker.jobs.store import JobStore

LEGACY = "legacy-admin-token-0123456789"
TOKENS = {
    "writer": ("writer-token-0123456789abcdef", ["agency"], ["jobs:write"]),
    "reader": ("reader-token-0123456789abcdef", ["agency"], ["jobs:read"]),
    "operator": ("operator-token-0123456789abcd", ["agency"], ["jobs:read", "jobs:operate"]),
    "admin": ("admin-token-0123456789abcdefgh", ["*"], ["admin"]),
}
ACCOUNTS_FILE = """
[accounts.agency]
api_key_env = "AGENCY_KEY"

[accounts.other]
api_key_env = "OTHER_KEY"
"""
PUBLIC = {"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/openapi.json"}


@dataclass(frozen=True)
class Served:
    base: str
    agency_job: str
    other_job: str


def failed(store: JobStore, domain: str, account: str, batch: str) -> str:
    request = JobRequest(operation=Operation.provision_site, domain=domain, account=account)
    job_id = store.enqueue(request, batch=batch).job.id
    assert job_id in store.admit({job_id: {}})
    claim = store.claim(job_id, lease_seconds=60)
    assert claim is not None
    store.fail(claim, code="domain_taken", message="taken", http_status=400, progress=Progress())
    return job_id


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("tenants")
    database_url = f"sqlite:///{tmp / 'serve.db'}"
    store = JobStore(migrated_engine(database_url))
    agency_job = failed(store, "agency.example.com", "agency", "mixed")
    other_job = failed(store, "other.example.com", "other", "mixed")
    failed(store, "alone.example.com", "other", "theirs")
    record_site(store, "agency-site.example.com", account="agency")
    record_site(store, "other-site.example.com", account="other")
    store.engine.dispose()
    accounts = tmp / "accounts.toml"
    entries = [ACCOUNTS_FILE]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PROVISIONER_", "PLAUSIBLE_"))},
        "PROVISIONER_DATABASE_URL": database_url,
        "PROVISIONER_ACCOUNTS_FILE": str(accounts),
        "PROVISIONER_API_TOKEN": LEGACY,
        "PROVISIONER_BROKER_URL": "memory://",  # no worker: jobs only wait
        "PLAUSIBLE_API_KEY": "k",
        "AGENCY_KEY": "k",
        "OTHER_KEY": "k",
    }
    for name, (token, seen, scopes) in TOKENS.items():
        variable = f"{name.upper()}_TOKEN_HASH"
        env[variable] = token_hash(token)
        entries.append(
            f'[tokens.{name}]\nhash_env = "{variable}"\naccounts = {seen!r}\nscopes = {scopes!r}\n'
        )
    accounts.write_text("\n".join(entries).replace("'", '"'))
    port = free_port()
    log = (tmp / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "provision", "serve", "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/healthz").status_code == 200
        except httpx.TransportError:
            return proc.poll() is not None  # ended: the assertion below says why

    try:
        wait_for(up, timeout=30, describe="provision serve to answer")
        assert proc.poll() is None, (tmp / "serve.log").read_text()
        yield Served(base, agency_job, other_job)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def call(served: Served, method: str, path: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # Routes that change jobs are aimed at nothing, so the data stays as the fixture made it.
    bodies: dict[str, Any] = {
        "/jobs": {"domain": "new.example.com", "account": "agency"},
        "/jobs/retry": {"code": "no_such_code"},
        "/jobs/cancel": {"code": "no_such_code"},
    }
    ref = served.agency_job if method == "get" else "no-such-job"
    concrete = (
        path.replace("{ref}", ref)
        .replace("{batch_id}", "mixed")
        .replace("{domain}", "agency-site.example.com")
    )
    body = bodies.get(path) if method == "post" else None
    return httpx.request(method, served.base + concrete, headers=headers, json=body)


def operations(served: Served) -> list[tuple[str, str, str]]:
    schema = httpx.get(f"{served.base}/openapi.json").json()
    found = []
    for path, methods in schema["paths"].items():
        if path in PUBLIC:
            continue
        for method, operation in methods.items():
            assert "x-scope" in operation, f"{method.upper()} {path} names no scope"
            found.append((method, path, operation["x-scope"]))
    return found


def test_every_route_lets_through_exactly_the_tokens_that_hold_its_scope(served: Served) -> None:
    found = operations(served)
    assert len(found) >= 12  # every data route, read from the document
    for method, path, scope in found:
        assert call(served, method, path, None).status_code == 401, (method, path)
        assert call(served, method, path, "not-a-token-of-ours").status_code == 401
        for name, (token, _, scopes) in TOKENS.items():
            answer = call(served, method, path, token)
            allowed = scope in scopes or "admin" in scopes
            if allowed:
                assert answer.status_code not in (401, 403), (name, method, path, answer.text)
            else:
                assert answer.status_code == 403, (name, method, path, answer.status_code)
                assert answer.json()["error"]["code"] == "forbidden"


def test_a_token_sees_nothing_of_another_account_not_even_by_id(served: Served) -> None:
    reader = TOKENS["reader"][0]

    def get(path: str) -> httpx.Response:
        return httpx.get(served.base + path, headers={"Authorization": f"Bearer {reader}"})

    assert get(f"/jobs/{served.agency_job}").status_code == 200
    assert get(f"/jobs/{served.other_job}").status_code == 404
    listed = get("/jobs?limit=500").json()["jobs"]
    assert served.agency_job in {job["id"] for job in listed}
    assert served.other_job not in {job["id"] for job in listed}
    assert {job["domain"] for job in listed} <= {
        "agency.example.com",
        "agency-site.example.com",
        "new.example.com",
    }
    assert get("/jobs?account=other").json()["jobs"] == []
    assert get("/batches/theirs").status_code == 404
    mixed = get("/batches/mixed").json()  # a batch of both: only its agency part
    assert (mixed["total"], mixed["failures_by_code"]) == (1, {"domain_taken": 1})
    assert [s["domain"] for s in get("/sites").json()["sites"]] == ["agency-site.example.com"]
    assert get("/sites/other-site.example.com").status_code == 404
    operator = {"Authorization": f"Bearer {TOKENS['operator'][0]}"}
    retried = httpx.post(f"{served.base}/jobs/{served.other_job}/retry", headers=operator)
    assert retried.status_code == 404
    writer = {"Authorization": f"Bearer {TOKENS['writer'][0]}"}
    other = {"domain": "sneaky.example.com", "account": "other"}
    refused = httpx.post(f"{served.base}/jobs", headers=writer, json=other)
    assert (refused.status_code, refused.json()["error"]["field"]) == (422, "account")


def test_the_single_token_of_earlier_versions_is_still_an_admin(served: Served) -> None:
    legacy = {"Authorization": f"Bearer {LEGACY}"}
    assert httpx.get(f"{served.base}/jobs/{served.other_job}", headers=legacy).status_code == 200
    assert httpx.get(f"{served.base}/metrics", headers=legacy).status_code == 200
    listed = httpx.get(f"{served.base}/jobs?limit=500", headers=legacy).json()["jobs"]
    assert {served.agency_job, served.other_job} <= {job["id"] for job in listed}

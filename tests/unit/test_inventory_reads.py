"""The inventory through the HTTP service (``GET /sites``, ``GET /sites/{domain}``) and the
Python API (``Provisioner.sites()``, ``.site()``): the same ``provisioner_types.Site``."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from producers.api import Provisioner
from provision.http import create_app
from provisioner_types import Site
from testkit.databases import migrated_engine
from testkit.inventory import record_site
from testkit.service_api import AUTH, TOKEN
from worker.jobs.store import JobStore


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    store = JobStore(migrated_engine(f"sqlite:///{tmp_path / 'jobs.db'}"))
    record_site(store, "shop.example.com", goals={"Signup": 11}, links={"Dash": "https://p/s?a=1"})
    record_site(store, "blog.example.com", account="agency")
    record_site(store, "app.example.com")
    return store


def test_the_sites_are_served_a_page_at_a_time_by_domain(store: JobStore) -> None:
    client = TestClient(create_app(store, token=SecretStr(TOKEN)))
    assert client.get("/sites").status_code == 401
    first = client.get("/sites?limit=2", headers=AUTH).json()
    assert [s["domain"] for s in first["sites"]] == ["app.example.com", "blog.example.com"]
    rest = client.get(f"/sites?limit=2&cursor={first['next_cursor']}", headers=AUTH).json()
    assert [s["domain"] for s in rest["sites"]] == ["shop.example.com"]
    assert rest["next_cursor"] is None
    shop = rest["sites"][0]
    assert Site.model_validate(shop).goals[0].id == 11
    assert shop["shared_links"] == [
        {"name": "Dash", "url": "https://p/s?a=1", "confirmed_at": shop["confirmed_at"]}
    ]
    agency = client.get("/sites?account=agency", headers=AUTH).json()
    assert [s["domain"] for s in agency["sites"]] == ["blog.example.com"]
    bad = client.get("/sites?cursor=bogus", headers=AUTH)
    assert (bad.status_code, bad.json()["error"]["code"]) == (422, "bad_cursor")


def test_one_site_in_any_spelling_or_404(store: JobStore) -> None:
    client = TestClient(create_app(store, token=SecretStr(TOKEN)))
    [shop] = client.get("/sites/WWW.Shop.Example.com", headers=AUTH).json()
    assert (shop["domain"], shop["account"], shop["origin"]) == (
        "shop.example.com",
        "default",
        "created",
    )
    missing = client.get("/sites/nowhere.example.com", headers=AUTH)
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    schema = client.get("/openapi.json").json()
    assert {"/sites", "/sites/{domain}"} <= set(schema["paths"])
    assert "Site" in schema["components"]["schemas"]


def test_the_python_api_reads_the_same_sites(store: JobStore) -> None:
    provisioner = Provisioner(store)
    sites = list(provisioner.sites())
    assert [s.domain for s in sites] == ["app.example.com", "blog.example.com", "shop.example.com"]
    assert [s.domain for s in provisioner.sites("agency")] == ["blog.example.com"]
    [shop] = provisioner.site("WWW.Shop.Example.com")
    assert shop == sites[2]
    assert provisioner.site("nowhere.example.com") == []

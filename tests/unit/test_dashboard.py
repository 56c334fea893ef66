"""The dashboard (``/ui`` of ``provision serve``) without a browser: sign-in and its cookie, the
CSRF and same-origin checks on every POST, that no secret reaches a page, the pages' contents,
and the keyset pages of its queries. The browser tests are in ``tests/acceptance/browser``."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from producers.events import parse_event
from provision.dashboard import pages
from provision.dashboard.auth import COOKIE, SESSION_SECONDS, Sessions
from provision.dashboard.cache import Recent
from provision.dashboard.paths import safe_next
from provision.dashboard.queries import Queries
from provision.dashboard.steps import shown_request
from provision.http.app import create_app
from provision.tokens import LEGACY, Tokens, token_hash
from testkit.databases import migrated_engine
from testkit.events import event
from worker.accounts import load_accounts
from worker.jobs.filters import JobFilter
from worker.jobs.intake import NewJob
from worker.jobs.specs import GoalRecord, Progress, SiteRecord
from worker.jobs.states import JobStatus, Priority
from worker.jobs.store import JobStore
from worker.quota.limiter import Limiter
from worker.quota.report import Reporter
from worker.settings import Settings

TOKEN = "dashboard-s3cret-token"
ORIGIN = {"Origin": "http://testserver"}


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(migrated_engine(f"sqlite:///{tmp_path / 'dash.db'}"))


def reporter_for(store: JobStore) -> Reporter:
    settings = Settings(hourly_limit=600, burst_limit=60, burst_seconds=10)
    return Reporter(store, Limiter(store.engine), load_accounts(settings))


@pytest.fixture
def client(store: JobStore) -> TestClient:
    app = create_app(store, token=SecretStr(TOKEN), reporter=reporter_for(store))
    return TestClient(app, follow_redirects=False)


def sign_in(client: TestClient) -> str:
    response = client.post("/ui/login", data={"token": TOKEN, "next": "/ui"}, headers=ORIGIN)
    assert response.status_code == 303, response.text
    return str(client.cookies[COOKIE])


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def failed(store: JobStore, n: int, *, code: str = "domain_taken", batch: str = "b1") -> str:
    job = store.enqueue(parse_event(event(n)).request, key=f"evt_{n}", batch=batch).job
    assert job.id in store.admit({job.id: {}})
    claim = store.claim(job.id, lease_seconds=60)
    assert claim is not None
    progress = Progress(
        site=SiteRecord(domain=job.domain, timezone="Europe/Berlin"),
        goals={
            "event:Signup": GoalRecord(
                id=70 + n,
                goal_type="event",
                event_name="Signup",
                display_name="Signup",
                custom_props={"plan": "<pro>"},
            )
        },
        shared_links={"WordPress": f"https://plausible.example/share/{job.domain}?auth=x{n}"},
    )
    store.fail(
        claim, code=code, message="This domain has already been taken", http_status=400,
        progress=progress,
    )  # fmt: skip
    return job.id


# -- sign-in and the cookie --------------------------------------------------------------------


def test_without_a_cookie_every_page_leads_to_the_sign_in_page(client: TestClient) -> None:
    for path in ("/ui", "/ui/batches/b1", "/ui/search?q=x", "/ui/jobs/x", "/ui/quota"):
        response = client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/ui/login?next="), path
    page = client.get("/ui/login")
    assert page.status_code == 200
    assert 'name="token"' in page.text
    assert 'type="password"' in page.text
    assert "Sign out" not in page.text
    for fragment in ("/ui/fragments/batches", "/ui/fragments/quota", "/ui/fragments/jobs/x"):
        response = client.get(fragment)
        assert response.status_code == 401, fragment
        assert response.headers["X-Signin"] == "/ui/login"


def test_signing_in_sets_a_signed_http_only_strict_cookie_not_the_token(
    client: TestClient,
) -> None:
    wrong = client.post("/ui/login", data={"token": "nope"}, headers=ORIGIN)
    assert wrong.status_code == 401
    assert "set-cookie" not in wrong.headers
    assert "not a token of this service" in wrong.text

    response = client.post("/ui/login", data={"token": TOKEN, "next": "/ui/quota"}, headers=ORIGIN)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/quota"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    attributes = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/ui", f"max-age={SESSION_SECONDS}"} <= attributes
    assert "secure" not in attributes  # plain http: a Secure cookie would never come back
    assert TOKEN not in cookie
    assert client.get("/ui").status_code == 200
    assert client.get("/ui/login").status_code == 303  # signed in already


def test_over_https_the_cookie_is_secure(store: JobStore) -> None:
    app = create_app(store, token=SecretStr(TOKEN))
    client = TestClient(app, base_url="https://dash.example", follow_redirects=False)
    response = client.post(
        "/ui/login", data={"token": TOKEN}, headers={"Origin": "https://dash.example"}
    )
    assert response.status_code == 303
    assert "secure" in {p.strip().lower() for p in response.headers["set-cookie"].split(";")}


def test_a_tampered_expired_revoked_or_orphaned_session_is_no_session(store: JobStore) -> None:
    now = [1_000_000.0]
    tokens = Tokens({token_hash(TOKEN): LEGACY})
    sessions = Sessions(store.engine, tokens, clock=lambda: now[0])
    value = sessions.start(LEGACY, "127.0.0.1", "pytest")
    found = sessions.session(value)
    assert found is not None
    assert found.principal == LEGACY
    assert sessions.session(value[:-2] + "AA") is None
    assert sessions.session(TOKEN) is None
    assert sessions.session("") is None
    # The database holds the session's hash, never the cookie's value.
    [row] = sessions.listed(LEGACY)
    assert value not in row.id
    assert Sessions(store.engine, Tokens({}), clock=lambda: now[0]).session(value) is not None
    other = Tokens({token_hash("another-token"): LEGACY.__class__("other", LEGACY.scopes, None)})
    assert Sessions(store.engine, other, clock=lambda: now[0]).session(value) is None  # gone
    later = sessions.start(LEGACY, "127.0.0.1", "pytest")
    assert sessions.revoke(LEGACY, row.id[:12]) is not None
    assert sessions.session(value) is None
    assert sessions.session(later) is not None
    now[0] += SESSION_SECONDS + 1
    assert sessions.session(later) is None


def test_the_api_still_needs_the_bearer_token_with_a_dashboard_cookie(
    client: TestClient,
) -> None:
    cookie = sign_in(client)
    for path in ("/jobs", "/quota", "/batches/b1"):
        response = client.get(path, headers={"Cookie": f"{COOKIE}={cookie}"})
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "unauthorized"
    assert client.get("/jobs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_signing_out_ends_the_cookie_and_needs_the_csrf_token(client: TestClient) -> None:
    sign_in(client)
    page = client.get("/ui")
    refused = client.post("/ui/logout", data={}, headers=ORIGIN)
    assert refused.status_code == 403
    response = client.post("/ui/logout", data={"csrf": csrf_of(page.text)}, headers=ORIGIN)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login"
    assert "max-age=0" in response.headers["set-cookie"].lower()
    assert client.get("/ui").status_code == 303


def test_after_sign_in_only_dashboard_paths_are_followed() -> None:
    assert safe_next("/ui/batches/b1?x=1") == "/ui/batches/b1?x=1"
    for hostile in ("https://evil.example/ui", "//evil.example/ui", "/uix", "/ui\\..", "/jobs"):
        assert safe_next(hostile) == "/ui", hostile


def test_development_mode_needs_no_sign_in(store: JobStore) -> None:
    client = TestClient(create_app(store, token=SecretStr(""), dev_mode=True))
    page = client.get("/ui")
    assert page.status_code == 200
    assert "Sign out" not in page.text
    store.enqueue(parse_event(event(1)).request, key="evt_1")
    assert client.get("/ui/search?q=evt_1").status_code == 200


# -- CSRF --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "form"),
    [
        (ORIGIN, {}),  # no CSRF token
        (ORIGIN, {"csrf": "forged"}),  # a wrong one
        ({"Origin": "https://evil.example"}, "csrf"),  # the right token from another site
        ({"Referer": "https://evil.example/page"}, "csrf"),  # ... said by its Referer
        ({}, "csrf"),  # neither Origin nor Referer
        ({**ORIGIN, "Sec-Fetch-Site": "cross-site"}, "csrf"),
        ({"Origin": "null"}, "csrf"),
    ],
    ids=["no-token", "wrong-token", "foreign-origin", "foreign-referer", "no-origin",
         "cross-site-fetch", "null-origin"],
)  # fmt: skip
def test_a_forged_post_is_refused_and_changes_nothing(
    client: TestClient, store: JobStore, headers: dict[str, str], form: Any
) -> None:
    job_id = failed(store, 1)
    sign_in(client)
    page = client.get("/ui/confirm?action=retry&batch_id=b1&status=failed")
    fields: dict[str, str] = {"batch_id": "b1", "status": "failed", "next": "/ui"}
    fields.update({"csrf": csrf_of(page.text)} if form == "csrf" else form)
    response = client.post("/ui/actions/retry", data=fields, headers=headers)
    assert response.status_code == 403
    assert "refused" in response.text.lower()
    job = store.get(job_id)
    assert job is not None
    assert job.status == JobStatus.failed


def test_the_sign_in_form_is_refused_from_another_origin(client: TestClient) -> None:
    response = client.post(
        "/ui/login", data={"token": TOKEN}, headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 403
    assert "set-cookie" not in response.headers


def test_a_csrf_token_is_per_session(client: TestClient, store: JobStore) -> None:
    job_id = failed(store, 1)
    sign_in(client)
    mine = csrf_of(client.get("/ui").text)
    client.cookies.clear()
    sign_in(client)  # a new session
    fields = {"job": job_id, "csrf": mine, "next": "/ui"}
    assert client.post("/ui/actions/retry", data=fields, headers=ORIGIN).status_code == 403
    fields["csrf"] = csrf_of(client.get("/ui").text)
    assert client.post("/ui/actions/retry", data=fields, headers=ORIGIN).status_code == 303


# -- actions -----------------------------------------------------------------------------------


def test_retrying_a_group_after_its_confirmation_requeues_exactly_it(
    client: TestClient, store: JobStore
) -> None:
    taken = [failed(store, n) for n in (1, 2, 3)]
    other = failed(store, 4, code="invalid_domain")
    sign_in(client)
    batch = client.get("/ui/batches/b1")
    assert batch.status_code == 200
    assert 'data-code="domain_taken"' in batch.text
    assert 'data-code="invalid_domain"' in batch.text
    confirm = client.get(
        "/ui/confirm?action=retry&batch_id=b1&status=failed&code=domain_taken&next=/ui/batches/b1"
    )
    assert confirm.status_code == 200
    assert re.search(r"data-confirm-count>3<", confirm.text)
    fields = {
        "csrf": csrf_of(confirm.text),
        "batch_id": "b1",
        "status": "failed",
        "code": "domain_taken",
        "next": "/ui/batches/b1",
    }
    done = client.post("/ui/actions/retry", data=fields, headers=ORIGIN)
    assert done.status_code == 303
    assert done.headers["location"] == "/ui/batches/b1?done=retry&n=3"
    assert {store.get(i).status for i in taken} == {JobStatus.queued}  # type: ignore[union-attr]
    assert store.get(other).status == JobStatus.failed  # type: ignore[union-attr]
    assert "3 jobs queued again." in client.get(done.headers["location"]).text


def test_cancel_by_filter_and_an_empty_filter_is_refused(
    client: TestClient, store: JobStore
) -> None:
    queued = [store.enqueue(parse_event(event(n)).request, key=f"q{n}", batch="b2").job.id
              for n in (1, 2)]  # fmt: skip
    sign_in(client)
    empty = client.get("/ui/confirm?action=cancel")
    assert empty.status_code == 422
    csrf = csrf_of(client.get("/ui").text)
    refused = client.post("/ui/actions/cancel", data={"csrf": csrf}, headers=ORIGIN)
    assert refused.status_code == 422
    confirm = client.get("/ui/confirm?action=cancel&batch_id=b2")
    assert re.search(r"data-confirm-count>2<", confirm.text)
    fields = {"csrf": csrf, "batch_id": "b2", "next": "/ui/batches/b2"}
    assert client.post("/ui/actions/cancel", data=fields, headers=ORIGIN).status_code == 303
    assert {store.get(i).status for i in queued} == {JobStatus.cancelled}  # type: ignore[union-attr]


def test_an_action_on_one_job_in_the_wrong_status_says_so_and_changes_nothing(
    client: TestClient, store: JobStore
) -> None:
    queued = store.enqueue(parse_event(event(1)).request, key="q1").job.id
    sign_in(client)
    csrf = csrf_of(client.get("/ui").text)
    fields = {"csrf": csrf, "job": queued, "next": f"/ui/jobs/{queued}"}
    wrong = client.post("/ui/actions/retry", data=fields, headers=ORIGIN)
    assert wrong.status_code == 409
    # provision.actions.WrongStatusError's words, as the CLI and the HTTP service say them
    assert f"Job {queued} is queued; only a failed job can be retried." in wrong.text
    assert store.get(queued).status == JobStatus.queued  # type: ignore[union-attr]
    missing = client.post("/ui/actions/cancel", data={**fields, "job": "nope"}, headers=ORIGIN)
    assert missing.status_code == 404
    assert "There is no job &#39;nope&#39;." in missing.text
    done = client.post("/ui/actions/cancel", data={**fields, "job": "q1"}, headers=ORIGIN)
    assert done.status_code == 303
    assert done.headers["location"] == f"/ui/jobs/{queued}?done=cancel&n=1"
    assert store.get(queued).status == JobStatus.cancelled  # type: ignore[union-attr]


# -- pages -------------------------------------------------------------------------------------


def test_a_cursor_the_service_did_not_make_is_refused_not_read_as_the_first_page(
    client: TestClient, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "BATCHES_PER_PAGE", 1)
    monkeypatch.setattr(pages, "JOBS_PER_PAGE", 1)
    for n in (1, 2):
        store.enqueue(parse_event(event(n)).request, key=f"evt_{n}", batch=f"b{n}")
    forged = base64.urlsafe_b64encode(b"yesterday|x").decode()
    assert client.get("/ui?cursor=bogus").status_code == 303  # signed out: sign in first
    sign_in(client)
    for path in ("/ui?cursor=bogus", f"/ui?cursor={forged}", "/ui/search?status=queued&cursor=x"):
        page = client.get(path)
        assert page.status_code == 422, path
        assert "Cursor is not one this service returned." in page.text, path
        assert "data-batch=" not in page.text, path
        assert "data-job=" not in page.text, path
    fragment = client.get("/ui/fragments/batches?cursor=bogus")
    assert fragment.status_code == 422
    assert "data-batch=" not in fragment.text

    # The cursors it makes lead to the next pages.
    first = client.get("/ui").text
    assert 'data-batch="b2"' in first
    older = re.search(r'class="more" href="([^"]+)"', first)
    assert older, "no link to older batches"
    second = client.get(html.unescape(older.group(1)))
    assert second.status_code == 200
    assert 'data-batch="b1"' in second.text
    assert 'data-batch="b2"' not in second.text
    assert client.get("/ui/fragments/batches", params=dict(second.url.params)).status_code == 200
    listed = client.get("/ui/search?status=queued").text
    more = re.search(r'class="more" href="([^"]+)"', listed)
    assert more, "no link to older jobs"
    following = client.get(html.unescape(more.group(1)))
    assert following.status_code == 200
    assert "site1.example.com" in following.text
    assert "site2.example.com" not in following.text


def test_the_dashboard_cache_is_bounded_and_forgets_in_time() -> None:
    now = [0.0]
    cache = Recent[str, str | None](2, seconds=10, clock=lambda: now[0])
    assert cache.get_or_make("a", lambda: "A") == "A"
    assert cache.get_or_make("b", lambda: None) is None
    assert cache.get_or_make("b", lambda: "again") is None  # None is a value, kept
    assert cache.get("a") == "A"  # a is the most recently used now ...
    cache.put("c", "C")  # ... so b goes
    assert len(cache) == 2
    assert cache.get_or_make("b", lambda: "B") == "B"
    assert cache.get("a") is None  # pushed out by b
    now[0] = 9.5
    assert cache.get("c") == "C"
    now[0] = 10.0
    assert cache.get("c") is None  # kept 10 seconds at most
    assert cache.get_or_make("c", lambda: "C2") == "C2"


def test_no_secret_reaches_any_page(client: TestClient, store: JobStore) -> None:
    job_id = failed(store, 1)
    sign_in(client)
    pages = [
        "/ui", "/ui/fragments/batches", "/ui/batches/b1", "/ui/fragments/batches/b1",
        "/ui/search?q=site1.example.com", f"/ui/jobs/{job_id}", f"/ui/fragments/jobs/{job_id}",
        "/ui/quota", "/ui/fragments/quota", "/ui/confirm?action=retry&batch_id=b1",
        "/ui/login", "/ui/static/dashboard.js",
    ]  # fmt: skip
    for path in pages:
        response = client.get(path, follow_redirects=True)
        assert response.status_code == 200, path
        assert TOKEN not in response.text, path
        assert client.cookies[COOKIE] not in response.text, path


def test_a_callback_url_is_shown_without_its_query() -> None:
    shown = shown_request(
        {"domain": "a.example", "callback_url": "https://u:pw@hooks.example:8443/in?sig=SECRET#x"}
    )
    assert shown["callback_url"] == "https://hooks.example:8443/in?…"
    assert shown_request({"domain": "a.example"}) == {"domain": "a.example"}


def test_pages_carry_a_strict_content_security_policy(client: TestClient) -> None:
    sign_in(client)
    headers = client.get("/ui").headers
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Cache-Control"] == "no-store"
    assert client.get("/ui/static/dashboard.css").status_code == 200
    assert client.get("/ui/static/nope.js").status_code == 404


def test_a_job_page_shows_its_request_steps_checkpoints_and_error(
    client: TestClient, store: JobStore
) -> None:
    job_id = failed(store, 1)
    sign_in(client)
    page = client.get(f"/ui/jobs/{job_id}").text
    assert "goal id 71" in page
    assert 'data-copy="https://plausible.example/share/site1.example.com?auth=x1"' in page
    assert "domain_taken" in page
    assert "HTTP 400" in page
    assert "&#34;timezone&#34;: &#34;Europe/Berlin&#34;" in page  # the request, escaped
    assert "Retry…" in page
    by_key = client.get("/ui/jobs/evt_1")
    assert by_key.status_code == 200
    assert client.get("/ui/jobs/nope").status_code == 404


def test_search_by_domain_key_or_id_with_filters(client: TestClient, store: JobStore) -> None:
    job_id = failed(store, 1)
    store.enqueue(parse_event(event(2)).request, key="evt_2")
    sign_in(client)
    for q in ("site1.example.com", "SITE1.example.com", "evt_1", job_id):
        page = client.get("/ui/search", params={"q": q}).text
        assert f'data-job="{job_id}"' in page, q
        assert "site2.example.com" not in page, q
    assert f'data-job="{job_id}"' not in client.get("/ui/search?q=evt_1&status=queued").text
    listed = client.get("/ui/search?status=queued").text
    assert "site2.example.com" in listed
    assert "site1.example.com" not in listed
    bogus = client.get("/ui/search?status=bogus")
    assert bogus.status_code == 200
    assert "Status &#39;bogus&#39; is not one of queued" in bogus.text  # provision.filters' words


def test_the_batches_page_counts_each_status(client: TestClient, store: JobStore) -> None:
    failed(store, 1)
    store.enqueue(parse_event(event(2)).request, key="evt_2", batch="b1")
    sign_in(client)
    page = client.get("/ui").text
    assert 'data-batch="b1"' in page
    assert '<b data-count="failed">1</b>' in page
    assert '<b data-count="queued">1</b>' in page
    assert "1 / 2" in page


# -- queries -----------------------------------------------------------------------------------


def test_batch_stats_follow_a_retry_of_a_done_batch(store: JobStore) -> None:
    job_id = failed(store, 1)
    queries = Queries(store)
    [done] = queries.batch_stats(["b1"]).values()
    assert done.done
    assert done.finished is not None
    assert (done.name, done.source) == ("b1", "api")
    assert done.counts["failed"] == 1
    assert done.total == 1
    assert done.recent == 1
    assert store.retry(job_id)
    [again] = queries.batch_stats(["b1"]).values()
    assert not again.done
    assert again.finished is None
    assert again.counts["queued"] == 1
    assert again.counts["failed"] == 0
    assert queries.batch_stats(["nope"]) == {}


def test_pages_of_jobs_are_newest_first_and_complete(store: JobStore) -> None:
    items = [
        NewJob(f"k{n}", parse_event(event(n)).request, Priority.bulk if n % 2 else Priority.interactive)
        for n in range(37)
    ]  # fmt: skip
    store.enqueue_many(items[:20], batch="older")
    store.enqueue_many(items[20:], batch="newer")
    for job in store.list_jobs(JobFilter(), limit=100)[::3]:
        store.cancel(job.id)
    queries = Queries(store)
    everything = sorted(
        store.list_jobs(JobFilter(), limit=100), key=lambda j: (j.created_at, j.id), reverse=True
    )
    for where in (JobFilter(), JobFilter(status=JobStatus.cancelled), JobFilter(batch_id="newer")):
        seen: list[str] = []
        cursor = None
        while True:
            page, cursor = queries.recent_jobs(where, limit=5, before=cursor)
            seen += [job.id for job in page]
            if cursor is None:
                break
        expected = [
            j.id
            for j in everything
            if (where.status is None or j.status == where.status)
            and (where.batch_id is None or j.batch_id == where.batch_id)
        ]
        assert seen == expected, where
    ids, following = queries.batch_page(limit=1)
    assert ids == ["newer"]
    assert following is not None
    assert queries.batch_page(limit=1, after=following) == (["older"], None)


# -- the inventory -----------------------------------------------------------------------------


def test_the_sites_pages_show_the_inventory_a_page_at_a_time(
    client: TestClient, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed(store, 1)  # a failed job's finished steps are recorded too: the site exists
    failed(store, 2)
    assert client.get("/ui/sites").status_code == 303  # signed out: sign in first
    sign_in(client)
    listed = client.get("/ui/sites").text
    assert 'data-site="site1.example.com"' in listed
    assert 'data-site="site2.example.com"' in listed
    monkeypatch.setattr(pages, "SITES_PER_PAGE", 1)
    first = client.get("/ui/sites").text
    assert 'data-site="site1.example.com"' in first
    assert 'data-site="site2.example.com"' not in first
    following = re.search(r'href="(/ui/sites\?cursor=[^"]+)"', first)
    assert following is not None
    second = client.get(html.unescape(following.group(1))).text
    assert 'data-site="site2.example.com"' in second
    assert 'data-site="site1.example.com"' not in second
    assert client.get("/ui/sites?cursor=bogus").status_code == 422

    site = client.get("/ui/sites/site1.example.com").text
    assert 'data-goal="event:Signup"' in site
    assert "<td>71</td>" in site
    assert "<code>plan=&lt;pro&gt;</code>" in site  # the goal's custom properties, escaped
    assert "https://plausible.example/share/site1.example.com?auth=x1" in site
    assert client.get("/ui/sites/nowhere.example.com").status_code == 404
    found = client.get("/ui/sites?domain=https://www.Site2.example.com/", follow_redirects=False)
    assert found.status_code == 303
    assert found.headers["location"] == "/ui/sites/site2.example.com"
    bad = client.get("/ui/sites?domain=a%20b")
    assert bad.status_code == 200
    assert 'role="alert"' in bad.text


def test_the_workers_page_lists_the_live_processes_for_admins_only(store: JobStore) -> None:
    from provision.tokens import Principal

    reader = "dashboard-reader-token"
    tokens = Tokens(
        {
            token_hash(TOKEN): LEGACY,
            token_hash(reader): Principal("reader", frozenset({"jobs:read"}), None),
        }
    )
    app = create_app(store, token=SecretStr(""), reporter=reporter_for(store), tokens=tokens)
    job = store.enqueue(parse_event(event("busy.example.com")).request).job
    store.register("host-a:4242:x", host="worker-host-a", pid=4242)
    store.register("host-b:7:y", host="worker-host-b", pid=7)
    assert store.claim(job.id, lease_seconds=60, owner="host-a:4242:x") is not None

    admin = TestClient(app, follow_redirects=False)
    sign_in(admin)
    page = admin.get("/ui/workers")
    assert page.status_code == 200
    rows = re.findall(r'<tr data-process="([^"]+)">(.*?)</tr>', page.text, re.S)
    cells = {pid: re.findall(r"<td>(?:<small>)?(.*?)(?:</small>)?</td>", row) for pid, row in rows}
    assert cells["host-a:4242:x"][:2] == ["worker-host-a", "4242"]
    assert cells["host-a:4242:x"][-1] == "1"
    assert cells["host-b:7:y"][-1] == "0"
    assert 'href="/ui/workers"' in page.text

    other = TestClient(app, follow_redirects=False)
    response = other.post("/ui/login", data={"token": reader, "next": "/ui"}, headers=ORIGIN)
    assert response.status_code == 303
    assert other.get("/ui/workers").status_code == 403
    assert 'href="/ui/workers"' not in other.get("/ui").text

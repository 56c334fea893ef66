"""The dashboard in Chromium, against a real ``provision serve``, worker and sandbox: sign in and
watch a batch's progress move, a failure group appear and be retried after its confirmation,
search by domain, the quota gauge change, the sign-in page without a cookie, and a forged
cross-site POST refused. The tests save the screenshots docs/dashboard.md shows in ``docs/screenshots``."""

from __future__ import annotations

import re
import uuid
from typing import Any

from testkit.private_services import free_port
from testkit.waiting import wait_for
from testkit.workers import provision_request
from tests.acceptance.browser.conftest import (
    LAPTOP,
    LIMITS,
    PHONE,
    TOKEN,
    Dashboard,
    screenshot,
    sign_in,
)
from worker.jobs.intake import NewJob
from worker.jobs.specs import Progress
from worker.jobs.states import JobStatus, Priority


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def enqueue_batch(dashboard: Dashboard, domains: list[str]) -> tuple[str, list[str]]:
    """A batch of bulk provisioning jobs, as ``provision import`` writes them."""
    batch_id = f"onboarding-{uuid.uuid4().hex[:8]}"
    items = [NewJob(f"signup-{d}", provision_request(d), Priority.bulk) for d in domains]
    result = dashboard.stack.store.enqueue_many(items, batch=batch_id)
    return batch_id, list(result.created.values())


def test_sign_in_and_watch_a_batch_progress_as_its_jobs_run(
    dashboard: Dashboard, context: Any
) -> None:
    stack = dashboard.stack
    stack.sandbox.configure(latency_ms=200)  # slow enough to see it move
    domains = [f"shop{n}.example.com" for n in range(16)]
    batch_id, ids = enqueue_batch(dashboard, domains)
    page = context.new_page()
    sign_in(page, dashboard)
    card = page.locator(f'[data-batch="{batch_id}"]')
    progress = card.locator("[data-progress]")
    expect(progress).to_have_text("0 / 16")
    page.evaluate("window.sameDocument = true")  # gone if the page reloads
    phone = context.new_page()  # same profile: signed in
    phone.set_viewport_size(PHONE)
    phone.goto(dashboard.url(f"/ui/batches/{batch_id}"))
    expect(phone.locator("[data-progress]")).to_have_text("0 / 16")

    stack.start_worker(concurrency=2, **LIMITS)
    seen: list[str] = []
    etas: list[str] = []

    def finished() -> bool:
        text = progress.inner_text()
        if not seen or seen[-1] != text:
            seen.append(text)
            if text not in ("0 / 16", "16 / 16") and len(seen) == 2:  # under way: the docs'
                screenshot(page, "batches")
                screenshot(phone, "phone")
        etas.append(card.locator("[data-eta]").inner_text())
        return text == "16 / 16"

    wait_for(finished, timeout=90, interval=0.2, describe=lambda: f"the batch done: {seen}")
    assert page.evaluate("window.sameDocument === true"), "the page reloaded"
    moving = [text for text in seen if text not in ("0 / 16", "16 / 16")]
    assert moving, f"no progress between start and done was shown: {seen}"
    assert any("UTC" in eta for eta in etas), f"no expected completion shown: {set(etas)}"
    stack.wait_done(ids)
    expect(card.locator("[data-finished]")).to_contain_text("UTC")
    expect(card.locator('[data-count="succeeded"]')).to_have_text("16")
    expect(phone.locator("[data-progress]")).to_have_text("16 / 16")


def test_a_failure_group_appears_and_retrying_it_requeues_it(
    dashboard: Dashboard, context: Any
) -> None:
    stack, sandbox = dashboard.stack, dashboard.stack.sandbox
    assert sandbox.other_team_api_key is not None
    with sandbox.client(sandbox.other_team_api_key) as other:  # another team has the domain
        other.post("/api/v1/sites", json={"domain": "taken.example.com"}).raise_for_status()
    domains = ["taken.example.com", "free1.example.com", "free2.example.com"]
    batch_id, _ = enqueue_batch(dashboard, domains)
    page = context.new_page()
    sign_in(page, dashboard, f"/ui/batches/{batch_id}")
    expect(page.locator("[data-progress]")).to_have_text("0 / 3")
    group = page.locator('[data-code="domain_taken"]')
    expect(group).to_have_count(0)

    stack.start_worker(concurrency=2, **LIMITS)
    expect(group).to_be_visible(timeout=60_000)  # appears without a reload
    expect(group.locator("[data-group-count]")).to_have_text("1")
    expect(group).to_contain_text("taken.example.com")
    expect(group.locator(".message")).not_to_be_empty()
    expect(page.locator("[data-progress]")).to_have_text("3 / 3", timeout=30_000)
    screenshot(page, "batch")

    with sandbox.client(sandbox.other_team_api_key) as other:  # ... and gives it up
        other.delete("/api/v1/sites/taken.example.com").raise_for_status()
    taken = stack.store.get_by_key("signup-taken.example.com")
    assert taken is not None
    assert taken.status == JobStatus.failed
    group.locator('a[data-action="retry"]').click()
    page.wait_for_url("**/ui/confirm?**")
    expect(page.locator("[data-confirm-count]")).to_have_text("1")
    screenshot(page, "confirm")
    page.click("[data-confirm-button]")
    page.wait_for_url(re.compile(rf"/ui/batches/{batch_id}\?done=retry&n=1$"))
    expect(page.locator(".notice")).to_have_text("1 job queued again.")
    retried = stack.store.get(taken.id)
    assert retried is not None
    assert retried.status != JobStatus.failed
    (done,) = stack.wait_done([taken.id])
    assert done.status == JobStatus.succeeded, (done.error_code, done.error_message)
    expect(group).to_have_count(0, timeout=15_000)  # the group is gone, live
    expect(page.locator('[data-count="succeeded"]')).to_have_text("3")


def test_search_by_domain_opens_the_job_with_its_checkpoints(
    dashboard: Dashboard, context: Any
) -> None:
    stack = dashboard.stack
    ids = stack.submit_sites(["findme.example.com", "other.example.com"])
    stack.start_worker(concurrency=2, **LIMITS)
    stack.wait_done(ids)
    page = context.new_page()
    sign_in(page, dashboard)
    page.fill("header input[name=q]", "FindMe.Example.com")
    page.press("header input[name=q]", "Enter")
    page.wait_for_url("**/ui/search?q=**")
    rows = page.locator("table.jobs tbody tr")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("findme.example.com")
    rows.locator("a").first.click()
    page.wait_for_url("**/ui/jobs/**")
    expect(page.locator("[data-status]")).to_have_attribute("data-status", "succeeded")
    expect(page.locator(".steps li.done")).to_have_count(4)  # site, two goals, a shared link
    expect(page.locator(".steps")).to_contain_text("created")
    expect(page.locator(".steps")).to_contain_text("goal id")
    job = stack.store.get_by_key("signup-findme.example.com")
    assert job is not None
    [url] = job.progress.shared_links.values()
    copy = page.locator(f'button[data-copy="{url}"]')
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=dashboard.base_url)
    copy.click()
    expect(copy).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == url
    screenshot(page, "job")


def test_the_quota_gauge_changes_as_jobs_run(dashboard: Dashboard, context: Any) -> None:
    stack = dashboard.stack
    page = context.new_page()
    sign_in(page, dashboard, "/ui/quota")
    hour = page.locator('[data-quota="default"] [data-window="hour"]')
    expect(hour.locator("[data-used]")).to_have_text("0")
    expect(hour.locator("[data-remaining]")).to_have_text(f"{LIMITS['hourly_limit']:,}")

    ids = stack.submit_sites([f"gauge{n}.example.com" for n in range(3)])
    stack.start_worker(concurrency=2, **LIMITS)
    stack.wait_done(ids)

    def moved() -> tuple[int, int] | None:  # read from one refreshed fragment
        used, remaining = (
            int(hour.locator(f"[data-{name}]").inner_text().replace(",", ""))
            for name in ("used", "remaining")
        )
        return (used, remaining) if used > 0 else None

    used, remaining = wait_for(moved, timeout=15, describe="the hourly gauge to move")
    assert used >= 3 * 4  # a site, two goals and a shared link each, at least
    assert remaining == LIMITS["hourly_limit"] - used
    expect(page.locator('[data-account="default"] [data-waiting="interactive"]')).to_have_text("0")
    screenshot(page, "quota")


def test_without_a_cookie_the_sign_in_page_and_the_api_still_needs_its_token(
    dashboard: Dashboard, context: Any
) -> None:
    page = context.new_page()
    for path in ("/ui", "/ui/quota", "/ui/search?q=x", "/ui/jobs/nope"):
        page.goto(dashboard.url(path))
        expect(page).to_have_url(re.compile(r"/ui/login\?next="))
        expect(page.locator("input[name=token]")).to_be_visible()
    fragment = page.request.get(dashboard.url("/ui/fragments/batches"))
    assert fragment.status == 401
    screenshot(page, "sign-in")

    page.fill("input[name=token]", "not-the-token")
    page.click("form button[type=submit]")
    expect(page.locator(".error")).to_contain_text("not a token of this service")
    assert not context.cookies()

    sign_in(page, dashboard)
    [cookie] = context.cookies()
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/ui"
    assert TOKEN not in cookie["value"]
    assert TOKEN not in page.content()
    assert page.evaluate("document.cookie") == ""  # HttpOnly: no script can read it
    api = page.goto(dashboard.url("/jobs"))
    assert api is not None
    assert api.status == 401
    assert api.json()["error"]["code"] == "unauthorized"
    bearer = page.request.get(dashboard.url("/jobs"), headers={"Authorization": f"Bearer {TOKEN}"})
    assert bearer.status == 200


EVIL_PAGE = """<!doctype html><html><body><h1>You won a prize</h1>
<form method="post" action="{action}">
  <input name="batch_id" value="{batch_id}"><input name="status" value="failed">
  <input name="csrf" value="{csrf}"><input name="next" value="/ui">
</form><script>document.forms[0].submit()</script></body></html>"""


def _serving(body: str) -> Any:
    """A Playwright route handler that answers with the HTML ``body``."""

    def handle(route: Any) -> None:
        route.fulfill(status=200, content_type="text/html", body=body)

    return handle


def test_a_forged_cross_site_post_is_refused_and_changes_nothing(
    dashboard: Dashboard, context: Any
) -> None:
    stack = dashboard.stack
    batch_id, [job_id] = enqueue_batch(dashboard, ["victim.example.com"])
    assert job_id in stack.store.admit({job_id: {}})
    claim = stack.store.claim(job_id, lease_seconds=60)
    assert claim is not None
    stack.store.fail(
        claim, code="domain_taken", message="taken", http_status=400, progress=Progress()
    )
    page = context.new_page()
    sign_in(page, dashboard)
    page.goto(dashboard.url(f"/ui/confirm?action=retry&batch_id={batch_id}&status=failed"))
    real_csrf = page.locator("main input[name=csrf]").get_attribute("value")
    assert real_csrf

    evil = f"http://localhost:{free_port()}"  # another site (localhost is not 127.0.0.1)
    action = dashboard.url("/ui/actions/retry")
    for csrf in ("forged", real_csrf):  # even a leaked token is no use from another origin
        body = EVIL_PAGE.format(action=action, batch_id=batch_id, csrf=csrf)
        context.route(f"{evil}/prize", _serving(body))
        with page.expect_response(action) as answer:
            page.goto(f"{evil}/prize")
        assert answer.value.status == 403
        expect(page.locator("body")).to_contain_text("refused")
        context.unroute(f"{evil}/prize")
        job = stack.store.get(job_id)
        assert job is not None
        assert job.status == JobStatus.failed

    # From the dashboard's own origin, but without the session's CSRF token: refused too.
    same_origin = page.request.post(
        action,
        form={"batch_id": batch_id, "status": "failed", "next": "/ui"},
        headers={"Origin": dashboard.base_url},
    )
    assert same_origin.status == 403
    job = stack.store.get(job_id)
    assert job is not None
    assert job.status == JobStatus.failed
    assert page.viewport_size == LAPTOP


def test_refused_sign_ins_are_throttled_per_client(dashboard: Dashboard, context: Any) -> None:
    """Five refused sign-ins from one browser, then even the right token waits (429), with
    the wait said on the page."""
    page = context.new_page()
    page.goto(dashboard.url("/ui/login"))
    for attempt in range(5):
        page.fill("input[name=token]", f"wrong-token-{attempt}")
        page.click("form button[type=submit]")
        expect(page.locator("p.error")).to_contain_text("not a token of this service")
    page.fill("input[name=token]", TOKEN)
    with page.expect_response(lambda r: r.url.endswith("/ui/login")) as answer:
        page.click("form button[type=submit]")
    assert answer.value.status == 429
    assert int(answer.value.headers["retry-after"]) > 0
    expect(page.locator("p.error")).to_contain_text("Too many refused sign-ins")
    assert not [c for c in context.cookies() if c["name"] == "provisioner_ui"]


def test_a_revoked_session_is_signed_out_at_its_next_request(
    dashboard: Dashboard, browser: Any
) -> None:
    """Two browsers signed in with the token; the first revokes the second's session from the
    sessions list; the second's next page is the sign-in page. The trail records both."""
    first, second = browser.new_context(viewport=LAPTOP), browser.new_context(viewport=LAPTOP)
    try:
        mine, theirs = first.new_page(), second.new_page()
        sign_in(mine, dashboard)
        sign_in(theirs, dashboard)
        mine.goto(dashboard.url("/ui/sessions"))
        rows = mine.locator("table.sessions tbody tr")
        expect(rows).to_have_count(2)
        other = mine.locator("table.sessions tbody tr:not(:has(.pill))")
        other.locator("button[data-action=revoke]").click()
        expect(mine.locator("table.sessions tbody tr")).to_have_count(1)
        theirs.goto(dashboard.url("/ui"))
        theirs.wait_for_url("**/ui/login**")
        mine.goto(dashboard.url("/ui/audit"))
        actions = mine.locator("table.audit tbody td:nth-child(3)").all_inner_texts()
        assert "session-revoked" in actions
        assert actions.count("sign-in") == 2
    finally:
        first.close()
        second.close()

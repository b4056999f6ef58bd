"""The dashboard in a real browser: headless Chromium (Debian's), driven by Playwright.

A real uvicorn server runs the API on a free port, on PostgreSQL populated by
``admin_support.populate`` (posts in every state, failed ones with attempts, a
credential expiring soon). The browser signs in through the form, reads the
counts, filters and pages through the table, opens a post's attempts, retries
the failed post and cancels another, checks the chart and the expiring
credentials, saves a screenshot, and signs out. A second test, on the same data
plus Pages in every state (``admin_support.add_page_health``), opens the
credentials page from the navigation and follows its links to the posts.

Playwright only drives the browser the machine has (``/usr/bin/chromium``);
nothing is downloaded. Without it the test skips locally and fails under CI.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from offpost.models.migrate import upgrade_to_head
from tests.integration.admin_support import (
    EXPECTED_STATS,
    TOTAL_POSTS,
    PageHealthPopulation,
    Population,
    add_page_health,
    make_admin_settings,
    populate,
)
from tests.integration.api_support import running_api

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]


@pytest.fixture
def dashboard(postgres_url: str, redis_url: str) -> Iterator[tuple[str, Population]]:
    settings = make_admin_settings(postgres_url, redis_url)
    upgrade_to_head(settings.database_url)
    population = populate(settings)
    with running_api(settings) as url:
        yield url, population


def test_sign_in_look_around_act_and_sign_out(
    browser_context: Any, dashboard: tuple[str, Population], tmp_path: Path
) -> None:
    url, pop = dashboard
    page = browser_context.new_page()
    visited: list[str] = []
    page.on("request", lambda request: visited.append(request.url))

    # Signed out, the dashboard sends the browser to the sign-in form.
    page.goto(f"{url}/admin")
    assert page.url == f"{url}/admin/login"

    # A wrong key gets the form again, with the reason.
    page.fill("#key", "opk_wrong")
    page.click("button[type=submit]")
    assert page.inner_text("#login-error") == "That key is not valid."

    page.fill("#key", pop.admin_key)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/admin")
    assert "signed in as" in page.inner_text("header")

    # The session is an HttpOnly, SameSite=Strict cookie that page scripts cannot read.
    (cookie,) = [c for c in browser_context.cookies() if c["name"] == "offpost_admin"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/admin"
    assert pop.admin_key not in cookie["value"]
    assert page.evaluate("document.cookie") == ""

    # Counts by status.
    for status, count in EXPECTED_STATS["posts"].items():
        assert page.inner_text(f"#count-{status} b") == str(count), status
    assert page.inner_text("#due-not-dispatched b") == str(EXPECTED_STATS["due_not_dispatched"])

    # The chart and the credentials expiring soon.
    assert page.locator("#chart svg rect.published").count() == 1
    assert page.locator("#chart svg rect.failed").count() == 2
    assert pop.expiring_credential in page.inner_text("#expiring")

    # Filter the table: the failed posts only.
    page.select_option("#filter-status", "failed")
    page.click("#jobs button[type=submit]")
    page.wait_for_url("**/admin?status=failed*")
    rows = page.locator("#posts tbody tr[data-post-id]")
    assert rows.count() == EXPECTED_STATS["posts"]["failed"]
    assert set(rows.evaluate_all("rows => rows.map(r => r.dataset.status)")) == {"failed"}

    # Page through everything, ten at a time.
    page.select_option("#filter-status", "")
    page.select_option("#filter-limit", "10")
    page.click("#jobs button[type=submit]")
    page.wait_for_url("**/admin?*limit=10*")
    seen = rows.evaluate_all("rows => rows.map(r => r.dataset.postId)")
    while page.locator("#next-page").count():
        page.click("#next-page")
        page.wait_for_load_state()
        seen += rows.evaluate_all("rows => rows.map(r => r.dataset.postId)")
    assert len(seen) == len(set(seen)) == TOTAL_POSTS
    assert page.locator("#first-page").count() == 1

    # Screenshot of the dashboard as an operator first sees it.
    page.goto(f"{url}/admin")
    screenshot = tmp_path / "dashboard.png"
    page.screenshot(path=str(screenshot), full_page=True)

    # A failed post: its attempts, then retry it.
    page.goto(f"{url}/admin?status=failed")
    page.click(f"a[href='/admin/posts/{pop.failed_post}']")
    page.wait_for_url(f"{url}/admin/posts/{pop.failed_post}")
    attempts = page.locator("#attempts tbody tr")
    assert attempts.count() == 2
    assert "368" in attempts.nth(0).inner_text()
    assert page.inner_text("#post-status") == "failed"
    page.screenshot(path=str(tmp_path / "post.png"), full_page=True)
    page.click("#retry")
    page.wait_for_url(f"{url}/admin/posts/{pop.failed_post}?done=retried")
    assert page.inner_text("#post-status") == "scheduled"
    assert "Retried" in page.inner_text("#notice")
    assert page.locator("#retry").count() == 0

    # Cancel a scheduled post.
    page.goto(f"{url}/admin/posts/{pop.scheduled_post}")
    page.click("#cancel")
    page.wait_for_url(f"{url}/admin/posts/{pop.scheduled_post}?done=canceled")
    assert page.inner_text("#post-status") == "canceled"

    # The counts moved with them.
    page.goto(f"{url}/admin")
    assert page.inner_text("#count-failed b") == str(EXPECTED_STATS["posts"]["failed"] - 1)
    assert page.inner_text("#count-canceled b") == "1"

    # Sign out: the cookie is gone and the dashboard asks for the key again.
    page.click("header button[type=submit]")
    page.wait_for_url(f"{url}/admin/login")
    assert not [c for c in browser_context.cookies() if c["name"] == "offpost_admin"]
    page.goto(f"{url}/admin")
    assert page.url == f"{url}/admin/login"

    # The key never travelled in a URL.
    assert visited
    assert not [u for u in visited if pop.admin_key in u]

    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 20_000, "the screenshot looks empty"


@pytest.fixture
def health_dashboard(
    postgres_url: str, redis_url: str
) -> Iterator[tuple[str, Population, PageHealthPopulation]]:
    settings = make_admin_settings(postgres_url, redis_url)
    upgrade_to_head(settings.database_url)
    population = populate(settings)
    health = add_page_health(settings, population.now)
    with running_api(settings) as url:
        yield url, population, health


def test_credentials_page_shows_health_and_leads_to_the_waiting_posts(
    browser_context: Any,
    health_dashboard: tuple[str, Population, PageHealthPopulation],
    tmp_path: Path,
) -> None:
    url, pop, health = health_dashboard
    page = browser_context.new_page()
    page.goto(f"{url}/admin")
    page.fill("#key", pop.admin_key)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/admin")

    # From the navigation, not a typed URL.
    page.click("#nav-credentials")
    page.wait_for_url(f"{url}/admin/credentials")
    assert page.get_attribute("#nav-credentials", "aria-current") == "page"
    assert page.locator("#credentials article").count() == 6

    reauth = page.locator(f"#credential-{health.reauth_credential}")
    assert reauth.locator("[data-field=status]").inner_text() == "needs reauth"
    assert "Have the user log in again" in reauth.locator("[data-field=advice]").inner_text()
    assert reauth.locator("[data-field=dead-pages]").inner_text() == "1 dead Page"
    dead = reauth.locator(f"tr[data-page-id='{health.dead_page}']")
    assert dead.locator(".badge").inner_text() == "dead"
    assert dead.get_attribute("data-can-post") == "no"
    # A dead Page stands out: its row is tinted.
    tint = dead.locator("td").first.evaluate("td => getComputedStyle(td).backgroundColor")
    assert tint not in ("rgba(0, 0, 0, 0)", "transparent")
    assert reauth.locator("[data-field=waiting-total]").inner_text() == "1"

    expired = page.locator(f"#credential-{health.expired_credential}")
    assert expired.locator("[data-field=status]").inner_text() == "user token expired"
    assert "error" in (expired.locator("[data-field=expires-at]").get_attribute("class") or "")
    # The Page tokens outlive the user token: its Page can still post.
    assert expired.locator("tr[data-page-id]").get_attribute("data-can-post") == "yes"

    page.screenshot(path=str(tmp_path / "credentials.png"), full_page=True)
    assert not [t for t in health.tokens if t in page.content()]

    # The parked post, through the credential's "needs reauth" link.
    reauth.locator("a.posts-by-status[data-status=needs_reauth]").click()
    page.wait_for_url(f"**/admin?credential={health.reauth_credential}&status=needs_reauth")
    rows = page.locator("#posts tbody tr[data-post-id]")
    assert rows.evaluate_all("rows => rows.map(r => r.dataset.postId)") == [health.parked_post]
    assert page.input_value("#filter-credential") == health.reauth_credential
    assert page.get_attribute("#nav-posts", "aria-current") == "page"

    # Back on the credentials page, every post of the active credential.
    page.click("#nav-credentials")
    page.wait_for_url(f"{url}/admin/credentials")
    active = page.locator(f"#credential-{health.active_credential}")
    waiting = int(active.locator("[data-field=waiting-total]").inner_text())
    assert waiting == sum(health.waiting[health.active_credential].values())
    active.locator("a.posts-link").click()
    page.wait_for_url(f"**/admin?credential={health.active_credential}")
    statuses = rows.evaluate_all("rows => rows.map(r => r.dataset.status)")
    assert len([s for s in statuses if s in ("scheduled", "queued", "publishing")]) == waiting
    assert "published" in statuses  # all its posts, not only the waiting ones

    # The filter form keeps the credential while narrowing further.
    page.select_option("#filter-status", "queued")
    page.click("#jobs button[type=submit]")
    page.wait_for_url("**/admin?status=queued*")
    assert rows.count() == 1
    assert page.input_value("#filter-credential") == health.active_credential

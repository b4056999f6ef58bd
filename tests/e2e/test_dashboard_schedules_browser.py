"""The schedules pages in a real browser: headless Chromium (Debian's), driven by Playwright.

As in ``test_dashboard_browser.py`` (the Chromium of ``conftest.py``): a
real uvicorn server runs the API on PostgreSQL, populated by
``admin_support.populate`` and ``add_page_health``, plus the schedules of
``dashboard_schedules_support.add_schedules`` made relative to the current hour.
The browser signs in, opens Schedules from the navigation, reads a rule in
words and its next runs, opens a schedule, presses Pause and sees it paused
(and its pending posts canceled), presses Resume and sees it active again.

Playwright only drives the browser the machine has; nothing is downloaded.
Without it the test skips locally and fails under CI.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from offpost.models.migrate import upgrade_to_head
from tests.integration.admin_support import (
    Population,
    add_page_health,
    make_admin_settings,
    populate,
)
from tests.integration.api_support import running_api
from tests.integration.dashboard_schedules_support import Schedules, add_schedules

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]


@pytest.fixture
def dashboard(postgres_url: str, redis_url: str) -> Iterator[tuple[str, Population, Schedules]]:
    settings = make_admin_settings(postgres_url, redis_url)
    upgrade_to_head(settings.database_url)
    population = populate(settings)
    add_page_health(settings, population.now)
    schedules = add_schedules(
        settings, datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    )
    with running_api(settings) as url:
        yield url, population, schedules


def test_pause_and_resume_a_schedule(
    browser_context: Any, dashboard: tuple[str, Population, Schedules], tmp_path: Path
) -> None:
    url, pop, sched = dashboard
    page = browser_context.new_page()
    complaints: list[str] = []
    # A style or form the Content-Security-Policy refused would show here, as would a
    # page that failed (the browser's own favicon request aside: the dashboard has none).
    page.on(
        "console",
        lambda m: (
            complaints.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on(
        "response",
        lambda r: (
            complaints.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico")
            else None
        ),
    )

    page.goto(f"{url}/admin")
    page.fill("#key", pop.admin_key)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/admin")

    # From the navigation, not a typed URL.
    page.click("#nav-schedules")
    page.wait_for_url(f"{url}/admin/schedules")
    assert page.get_attribute("#nav-schedules", "aria-current") == "page"
    rows = page.locator("#schedules tbody tr[data-schedule-id]")
    assert rows.evaluate_all("rows => rows.map(r => r.dataset.scheduleId)") == [
        sched.hourly,
        sched.paused,
        sched.weekly,
    ]
    weekly = page.locator(f"tr[data-schedule-id='{sched.weekly}']")
    assert weekly.locator("[data-field=words]").inner_text() == (
        "every Monday and Wednesday at 09:00"
    )
    assert weekly.locator("[data-field=timezone]").inner_text() == "Europe/Berlin"
    assert weekly.locator("[data-run]").count() == 5
    paused = page.locator(f"tr[data-schedule-id='{sched.paused}']")
    assert paused.locator("[data-field=status]").inner_text() == "paused"
    page.screenshot(path=str(tmp_path / "schedules.png"), full_page=True)

    # Open the hourly one: active, its runs and their posts.
    page.click(f"a[href='/admin/schedules/{sched.hourly}']")
    page.wait_for_url(f"{url}/admin/schedules/{sched.hourly}")
    assert page.inner_text("#schedule-status") == "active"
    assert page.inner_text("#rule-words") == "every hour at :00"
    assert page.locator("#upcoming [data-run]").count() == 5
    shown = page.locator("#runs tbody tr[data-post-id]")
    runs = {sched.due_run, sched.failed_run, sched.published_run, sched.skipped_run}
    assert runs <= set(shown.evaluate_all("rows => rows.map(r => r.dataset.postId)"))
    assert page.locator("#resume").count() == 0

    # Pause: the schedule is paused, its pending posts canceled, the history says so.
    page.click("#pause")
    page.wait_for_url(f"{url}/admin/schedules/{sched.hourly}?done=paused")
    assert page.inner_text("#schedule-status") == "paused"
    assert "Paused" in page.inner_text("#notice")
    assert page.locator("#upcoming [data-run]").count() == 0
    assert page.inner_text("#ahead [data-ahead=canceled]") == f"{len(sched.ahead)} canceled"
    assert page.locator("#history tbody tr").first.get_attribute("data-kind") == "paused"
    assert page.locator("#pause").count() == 0
    page.screenshot(path=str(tmp_path / "schedule-paused.png"), full_page=True)

    # Resume: active again, its next posts made again.
    page.click("#resume")
    page.wait_for_url(f"{url}/admin/schedules/{sched.hourly}?done=resumed")
    assert page.inner_text("#schedule-status") == "active"
    assert "Resumed" in page.inner_text("#notice")
    assert page.locator("#upcoming [data-run]").count() == 5
    assert page.locator("#ahead [data-ahead=canceled]").count() == 0
    kinds = page.locator("#history tbody tr").evaluate_all("rows => rows.map(r => r.dataset.kind)")
    assert kinds[:2] == ["resumed", "paused"]

    # Back on the list, the schedule is active.
    page.click("#nav-schedules")
    page.wait_for_url(f"{url}/admin/schedules")
    hourly = page.locator(f"tr[data-schedule-id='{sched.hourly}']")
    assert hourly.locator("[data-field=status]").inner_text() == "active"
    assert not complaints, complaints

"""The Page insights page in a real browser: headless Chromium, driven by Playwright.

On ``admin_support.populate``'s data plus fetched insights for its published post,
the browser signs in, opens ``/admin/pages/{page}/insights``, reads the chart's
bar and the tables, and follows the post's link. Skips locally without Chromium,
fails under CI (as the other browser tests).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import uvicorn

from offpost.api import insights as insights_api
from offpost.api.app import create_app
from offpost.api.dashboard import insights as dashboard_insights
from offpost.models import Post
from offpost.models.insights import InsightStatus, PostInsight
from offpost.models.migrate import upgrade_to_head
from offpost.settings import Settings
from tests.conftest import free_port
from tests.integration.admin_support import (
    Population,
    make_admin_settings,
    populate,
    session_for,
)

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]


@contextlib.contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """The API under uvicorn with the insights routes (until app.py includes them)."""
    app = create_app(settings)
    paths = {getattr(route, "path", None) for route in app.routes}
    if "/admin/pages/{page_id}/insights" not in paths:
        app.include_router(dashboard_insights.router)
    if "/v1/posts/{post_id}/insights" not in paths:
        app.include_router(insights_api.router)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="uvicorn-insights", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "the API server did not start"
        assert time.monotonic() < deadline, "the API server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def dashboard(postgres_url: str, redis_url: str) -> Iterator[tuple[str, Population, str]]:
    settings = make_admin_settings(postgres_url, redis_url)
    upgrade_to_head(settings.database_url)
    pop = populate(settings)
    with session_for(settings) as session:
        post = session.get(Post, pop.published_post)
        assert post is not None
        assert post.published_at is not None
        for age, after, reactions in (
            ("1h", timedelta(hours=1), 7),
            ("24h", timedelta(days=1), 19),
        ):
            session.add(
                PostInsight(
                    post_id=post.id,
                    client_id=post.client_id,
                    target=post.target,
                    age=age,
                    due_at=post.published_at + after,
                    fetched_at=post.published_at + after,
                    status=InsightStatus.DONE,
                    reactions=reactions,
                    comments=3,
                    shares=1,
                    impressions=None,
                    reach=120,
                    errors={"post_media_view": "(#100) The value must be a valid insights metric"},
                )
            )
        target = post.target
    with serving(settings) as url:
        yield url, pop, target


def test_the_page_insights_page(
    browser_context: Any, dashboard: tuple[str, Population, str]
) -> None:
    url, pop, target = dashboard
    page = browser_context.new_page()
    page.goto(f"{url}/admin/pages/{target}/insights")
    assert page.url == f"{url}/admin/login"
    page.fill("#key", pop.admin_key)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/admin")

    page.goto(f"{url}/admin/pages/{target}/insights")
    assert page.locator("#insights-chart svg.chart").count() == 1
    # One day with posts: one bar, its three parts stacked (the latest fetch counts: 24 h).
    assert page.locator("#insights-chart g.day").count() == 1
    assert page.locator("#insights-chart g.day rect").count() == 3
    legend = page.inner_text("#insights-chart .legend")
    assert "reactions (19)" in legend
    assert "comments (3)" in legend
    assert "shares (1)" in legend
    row = page.locator(f"#insights-posts tr:has(a[href='/admin/posts/{pop.published_post}'])")
    cells = row.locator("td").all_inner_texts()
    assert cells[3:8] == ["19", "3", "1", "—", "120"]
    assert row.locator("td").nth(6).get_attribute("title") == (
        "(#100) The value must be a valid insights metric"
    )
    assert page.locator("#insights-days tbody tr").count() == 30
    assert page.evaluate("document.scripts.length") == 0

    page.click(f"a[href='/admin/posts/{pop.published_post}']")
    page.wait_for_url(f"{url}/admin/posts/{pop.published_post}")

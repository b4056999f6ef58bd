"""``/admin``, the operators' dashboard, over HTTP on a populated database.

Sign-in and its cookie, CSRF and origin checks on every action, the pages'
numbers against the rows of ``admin_support.populate``, the credentials page
against ``admin_support.add_page_health`` (and never a token on it), the clients
page's quotas and use against rows added to that population, the posts list's
message previews and Page names, the schedules pages and their Pause and Resume
buttons against ``dashboard_schedules_support.add_schedules``, the broker queue
under ``offpost up``, and the admin key kept out of every URL, redirect, page and
cookie. The browser drives the same pages in ``tests/e2e/test_dashboard_browser.py``
and ``tests/e2e/test_dashboard_schedules_browser.py``.
"""

from __future__ import annotations

import contextlib
import html as html_lib
import logging
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import event, select, update

from offpost.api.app import create_app
from offpost.api.deps import get_now
from offpost.api.limits import RedisRateLimiter
from offpost.cli.embedded import EMBEDDED_BROKER
from offpost.models import (
    Client,
    Credential,
    CredentialStatus,
    Post,
    PostStatus,
    PostStep,
    Schedule,
    ScheduleEvent,
    ScheduleEventKind,
    ScheduleStatus,
    StepKind,
    StepOutcome,
    hash_api_key,
    new_api_key,
)
from offpost.models.types import new_encryption_key
from offpost.settings import Settings
from offpost.views import ADVICE
from offpost.workers.app import make_celery, send_publish
from tests.integration.admin_support import (
    EXPECTED_STATS,
    TOTAL_POSTS,
    TRICKY_PAGE_NAME,
    PageHealthPopulation,
    Population,
    add_page_health,
    make_admin_settings,
    populate,
    session_for,
)
from tests.integration.api_support import api_client, bearer
from tests.integration.dashboard_schedules_support import (
    SCHEDULE_NOW,
    Schedules,
    add_schedules,
)

pytestmark = pytest.mark.postgres

COOKIE = "offpost_admin"


@pytest.fixture
def settings(postgres_url: str, redis_url: str) -> Settings:
    return make_admin_settings(postgres_url, redis_url)


@pytest.fixture
def pop(settings: Settings, api: TestClient) -> Population:
    return populate(settings)


def sign_in(api: TestClient, key: str) -> httpx.Response:
    return api.post("/admin/login", data={"key": key}, follow_redirects=False)


@pytest.fixture
def signed_in(api: TestClient, pop: Population) -> TestClient:
    response = sign_in(api, pop.admin_key)
    assert response.status_code == 303, response.text
    return api


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def status_of(settings: Settings, post_id: str) -> PostStatus:
    with session_for(settings) as session:
        status = session.scalar(select(Post.status).where(Post.id == post_id))
    assert status is not None
    return status


def set_cookie(response: httpx.Response) -> SimpleCookie:
    cookie: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        cookie.load(header)
    return cookie


def row_ids(html: str) -> list[str]:
    return re.findall(r'data-post-id="([^"]+)"', html)


# --- signing in ------------------------------------------------------------------------------


def test_signed_out_pages_redirect_to_the_sign_in_form(api: TestClient, pop: Population) -> None:
    for path in (
        "/admin",
        f"/admin/posts/{pop.failed_post}",
        "/admin?status=failed",
        "/admin/credentials",
        "/admin/credentials?status=needs_reauth",
        "/admin/clients",
        "/admin/schedules",
        "/admin/schedules?status=paused",
        "/admin/schedules/sched_00000000000000000000",
    ):
        response = api.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"] == "/admin/login"
    form = api.get("/admin/login")
    assert form.status_code == 200
    assert '<form method="post" action="/admin/login"' in form.text
    assert 'type="password"' in form.text


def test_a_wrong_key_gets_the_form_again_with_an_error(api: TestClient, pop: Population) -> None:
    response = sign_in(api, "opk_not-a-key")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("text/html")
    assert "That key is not valid." in response.text
    assert "opk_not-a-key" not in response.text
    assert "set-cookie" not in response.headers


def test_a_client_key_is_refused(api: TestClient, pop: Population) -> None:
    response = sign_in(api, pop.client_key)
    assert response.status_code == 403
    assert "needs an admin key" in response.text
    assert "set-cookie" not in response.headers
    assert api.get("/admin", follow_redirects=False).status_code == 303


def test_a_revoked_admin_key_is_refused(
    settings: Settings, api: TestClient, pop: Population
) -> None:
    with session_for(settings) as session:
        session.execute(
            update(Client).where(Client.name == "ops").values(revoked_at=datetime.now(UTC))
        )
    assert sign_in(api, pop.admin_key).status_code == 401


@pytest.fixture
def slow_limit(postgres_url: str, redis_url: str) -> Iterator[tuple[TestClient, Population]]:
    """An API that slows an address after 2 bad keys, with its limiter on a fixed clock.

    The clock sits in a minute of its own, far from now: no window ends half-way
    through the test, and no other test's failures are counted in it.
    """
    settings = make_admin_settings(postgres_url, redis_url, auth_failures_per_minute=2)
    counts = redis.Redis.from_url(settings.broker_url)
    minute = 60 * (10**9 + secrets.randbelow(10**6))
    try:
        with api_client(settings) as api:
            limiter = RedisRateLimiter(counts, clock=lambda: minute + 10.0)
            api.app.state.limiter = limiter  # type: ignore[attr-defined]
            yield api, populate(settings)
    finally:
        counts.close()


def test_repeated_failures_are_rate_limited(slow_limit: tuple[TestClient, Population]) -> None:
    api, _ = slow_limit
    statuses = [sign_in(api, "opk_wrong").status_code for _ in range(3)]
    assert statuses == [401, 401, 429]


def test_an_address_slowed_for_bad_keys_is_refused_even_the_right_key(
    slow_limit: tuple[TestClient, Population],
) -> None:
    api, pop = slow_limit
    for _ in range(2):
        assert sign_in(api, "opk_wrong").status_code == 401
    # The budget is spent: the right admin key is not even looked at, so a guesser
    # learns nothing until the minute ends (the window began 10 s ago).
    slowed = sign_in(api, pop.admin_key)
    assert slowed.status_code == 429
    assert slowed.headers["retry-after"] == "50"
    assert "Too many failed sign-ins" in slowed.text
    assert "set-cookie" not in slowed.headers
    assert sign_in(api, pop.client_key).status_code == 429


def test_the_session_cookie_is_httponly_strict_and_scoped(api: TestClient, pop: Population) -> None:
    response = sign_in(api, pop.admin_key)
    assert response.status_code == 303
    assert response.headers["location"] == "/admin"
    morsel = set_cookie(response)[COOKIE]
    assert morsel["httponly"] is True
    assert morsel["samesite"].lower() == "strict"
    assert morsel["path"] == "/admin"
    assert int(morsel["max-age"]) > 0
    assert not morsel["secure"]  # plain http: a Secure cookie would never come back
    # A signed token, not the key (nor anything derived from it alone).
    assert pop.admin_key not in morsel.value
    assert morsel.value.startswith("v1.cli_")


def test_over_https_the_cookie_is_secure(settings: Settings, pop: Population) -> None:
    with TestClient(create_app(settings), base_url="https://testserver") as api:
        morsel = set_cookie(sign_in(api, pop.admin_key))[COOKIE]
    assert morsel["secure"] is True


def test_the_key_never_appears_in_a_url_a_page_or_a_cookie(
    api: TestClient, pop: Population
) -> None:
    seen: list[str] = []
    response = sign_in(api, pop.admin_key)
    seen += [str(response.url), response.headers["location"], response.text]
    seen += response.headers.get_list("set-cookie")
    for path in (
        "/admin/credentials",
        "/admin",
        "/admin?status=failed",
        f"/admin/posts/{pop.failed_post}",
    ):
        page = api.get(path)
        assert page.status_code == 200
        seen += [str(page.url), page.text, *(str(r.url) for r in page.history)]
    logout = api.post("/admin/logout", data={"csrf": csrf_of(page.text)}, follow_redirects=False)
    seen += [logout.headers["location"], *logout.headers.get_list("set-cookie")]
    for text in seen:
        assert pop.admin_key not in text
        assert pop.admin_key.removeprefix("opk_") not in text


def test_a_tampered_cookie_is_no_session(signed_in: TestClient) -> None:
    token = signed_in.cookies[COOKIE]
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    signed_in.cookies.set(COOKIE, forged, path="/admin")
    assert signed_in.get("/admin", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("change", [{"revoked_at": datetime.now(UTC)}, {"is_admin": False}])
def test_revoking_or_demoting_the_admin_ends_its_sessions(
    settings: Settings, signed_in: TestClient, change: dict[str, object]
) -> None:
    assert signed_in.get("/admin", follow_redirects=False).status_code == 200
    with session_for(settings) as session:
        session.execute(update(Client).where(Client.name == "ops").values(**change))
    assert signed_in.get("/admin", follow_redirects=False).status_code == 303


def test_logout_clears_the_cookie(signed_in: TestClient) -> None:
    csrf = csrf_of(signed_in.get("/admin").text)
    response = signed_in.post("/admin/logout", data={"csrf": csrf}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/login"
    morsel = set_cookie(response)[COOKIE]
    assert morsel.value == ""
    assert morsel["max-age"] == "0"
    assert morsel["path"] == "/admin"
    assert COOKIE not in signed_in.cookies
    assert signed_in.get("/admin", follow_redirects=False).status_code == 303


def test_logout_needs_the_csrf_token(signed_in: TestClient) -> None:
    response = signed_in.post("/admin/logout", data={}, follow_redirects=False)
    assert response.status_code == 403
    assert signed_in.get("/admin", follow_redirects=False).status_code == 200


# --- the pages -------------------------------------------------------------------------------


def test_pages_carry_a_strict_policy_and_no_script(signed_in: TestClient, pop: Population) -> None:
    for path in (
        "/admin",
        f"/admin/posts/{pop.failed_post}",
        "/admin/credentials",
        "/admin/clients",
        "/admin/schedules",
        "/admin/login",
    ):
        response = signed_in.get(path)
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy
        assert "frame-ancestors 'none'" in policy
        assert response.headers["cache-control"] == "no-store"
        assert "<script" not in response.text


def test_the_dashboard_shows_the_stats(signed_in: TestClient, pop: Population) -> None:
    html = signed_in.get("/admin").text
    for status, count in EXPECTED_STATS["posts"].items():
        assert re.search(rf'id="count-{status}"[^>]*>\s*<b>{count}</b>', html), status
    due = EXPECTED_STATS["due_not_dispatched"]
    assert re.search(rf"due, not yet queued: <b>{due}</b>", html)
    for error in EXPECTED_STATS["top_errors"]:
        assert f'<td class="mono">{error["code"]}</td><td class="num">{error["count"]}</td>' in html
    assert "<b>10</b> published, <b>2</b> failed" in html
    assert "5.5 s / 9.55 s / 9.91 s" in html


def test_the_dashboard_lists_credentials_expiring_soon(
    signed_in: TestClient, pop: Population
) -> None:
    expiring = signed_in.get("/admin").text.split('id="expiring"')[1].split("</section>")[0]
    # Within the 72 h margin: u2 (5 h); the deleted u5 and the 10-day u1 are not listed.
    assert pop.expiring_credential in expiring
    assert ">u2<" in expiring
    assert ">u1<" not in expiring
    assert ">u5<" not in expiring


def test_the_chart_counts_the_last_hours(signed_in: TestClient, pop: Population) -> None:
    html = signed_in.get("/admin").text
    chart = html.split('id="chart"')[1].split("</section>")[0]
    assert "<svg" in chart
    # 10 published 10 minutes ago (one bar), 2 failed 20 minutes ago, 3 published
    # three hours ago (outside), 1 failed two hours ago (inside).
    assert "published (10)" in chart
    assert "failed (3)" in chart
    assert chart.count('<rect class="published"') == 1
    assert chart.count('<rect class="failed"') == 2
    assert ": 10 published, 0 failed" in chart


def test_the_table_shows_every_column(signed_in: TestClient, pop: Population) -> None:
    html = signed_in.get("/admin?status=failed&client=acme").text
    rows = row_ids(html)
    assert len(rows) == EXPECTED_STATS["posts"]["failed"]
    assert pop.failed_post in rows
    row = html.split(f'data-post-id="{pop.failed_post}"')[1].split("</tr>")[0]
    assert "page-acme" in row
    assert "1 / 5" in row
    assert '<span class="mono">368</span> blocked' in row
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", row)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=scheduled", EXPECTED_STATS["posts"]["scheduled"]),
        ("status=published", EXPECTED_STATS["posts"]["published"]),
        ("target=page-globex", 2),
        ("client=globex", 2),
        ("client=acme&status=scheduled", EXPECTED_STATS["posts"]["scheduled"] - 1),
    ],
)
def test_filters(signed_in: TestClient, pop: Population, query: str, expected: int) -> None:
    html = signed_in.get(f"/admin?{query}&limit=100").text
    assert len(row_ids(html)) == expected


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=lost", "no status"),
        ("client=nobody", "no client named"),
        ("cursor=garbage", "page link is broken"),
    ],
)
def test_bad_filters_say_so(signed_in: TestClient, query: str, message: str) -> None:
    response = signed_in.get(f"/admin?{query}")
    assert response.status_code == 200
    assert message in response.text
    assert row_ids(response.text) == []


def test_pages_follow_one_another(signed_in: TestClient, pop: Population) -> None:
    seen: list[str] = []
    url: str | None = "/admin?limit=7"
    pages = 0
    while url is not None:
        html = signed_in.get(url).text
        seen += row_ids(html)
        pages += 1
        found = re.search(r'id="next-page" href="([^"]+)"', html)
        url = found.group(1).replace("&amp;", "&") if found else None
        if pages > 1:
            assert 'id="first-page" href="/admin?limit=7"' in html
    assert pages == -(-TOTAL_POSTS // 7)
    assert len(seen) == len(set(seen)) == TOTAL_POSTS


def test_a_post_page_shows_its_attempts(signed_in: TestClient, pop: Population) -> None:
    html = signed_in.get(f"/admin/posts/{pop.failed_post}").text
    attempts = html.split('id="attempts"')[1].split("</table>")[0]
    assert attempts.count("<tr>") == 1 + 2  # the header and two attempts
    assert '<span class="mono">368</span> boom' in attempts
    assert 'id="retry"' in html
    assert 'id="cancel"' in html
    assert "blocked" in html.split('id="post-last-error"')[1]


def test_a_media_post_page_shows_its_media_and_steps(
    signed_in: TestClient, pop: Population, settings: Settings
) -> None:
    media = {"photos": [{"url": "https://cdn.example.com/1.jpg"}, {"media_id": "med_x"}]}
    with session_for(settings) as session:
        session.execute(
            update(Post).where(Post.id == pop.failed_post).values(media=media, media_kind="photos")
        )
        session.add_all(
            [
                PostStep(
                    post_id=pop.failed_post,
                    kind=StepKind.PHOTO,
                    item=0,
                    outcome=StepOutcome.DONE,
                    graph_id="9001",
                    started_at=pop.now,
                ),
                PostStep(
                    post_id=pop.failed_post,
                    kind=StepKind.REMOVE,
                    item=0,
                    outcome=StepOutcome.DONE,
                    graph_id="9001",
                    started_at=pop.now + timedelta(seconds=1),
                ),
            ]
        )
    html = signed_in.get(f"/admin/posts/{pop.failed_post}").text
    assert "photo 1: https://cdn.example.com/1.jpg" in html
    assert "photo 2: med_x" in html
    steps = html.split('id="steps"')[1].split("</table>")[0]
    assert steps.count("<tr>") == 1 + 2
    assert "photo 1" in steps
    assert "remove" in steps
    assert steps.count("9001") == 2


def test_a_published_post_has_no_buttons(signed_in: TestClient, pop: Population) -> None:
    html = signed_in.get(f"/admin/posts/{pop.published_post}").text
    assert 'id="retry"' not in html
    assert 'id="cancel"' not in html


def test_an_unknown_post_is_404(signed_in: TestClient) -> None:
    response = signed_in.get("/admin/posts/post_00000000000000000000")
    assert response.status_code == 404
    assert "No post" in response.text


# --- the credentials page --------------------------------------------------------------------


@pytest.fixture
def health(settings: Settings, pop: Population) -> PageHealthPopulation:
    return add_page_health(settings, pop.now)


def credential_ids(html: str) -> list[str]:
    return re.findall(r'data-credential-id="([^"]+)"', html)


def credential_block(html: str, credential_id: str) -> str:
    """The credential's card on the credentials page."""
    return html.split(f'data-credential-id="{credential_id}"')[1].split("</article>", maxsplit=1)[0]


def page_row(block: str, page_id: str) -> str:
    return block.split(f'data-page-id="{page_id}"')[1].split("</tr>", maxsplit=1)[0]


def links(block: str, css_class: str) -> list[str]:
    return [
        html_lib.unescape(href)
        for href in re.findall(rf'class="{css_class}"[^>]*href="([^"]+)"', block)
    ]


def when(value: datetime) -> str:
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"


def post_ids_of(settings: Settings, credential_id: str, **where: object) -> set[str]:
    query = select(Post.id).where(Post.credential_id == credential_id)
    for column, value in where.items():
        query = query.where(getattr(Post, column) == value)
    with session_for(settings) as session:
        return set(session.scalars(query))


def test_the_navigation_leads_to_the_credentials_page(signed_in: TestClient) -> None:
    posts = signed_in.get("/admin").text
    assert re.search(r'<a href="/admin/credentials" id="nav-credentials"\s*>Credentials</a>', posts)
    assert re.search(r'id="nav-posts"\s+aria-current="page"', posts)
    credentials = signed_in.get("/admin/credentials")
    assert credentials.status_code == 200
    assert re.search(r'id="nav-credentials"\s+aria-current="page"', credentials.text)
    assert 'id="all-credentials"' in posts


def test_the_credentials_page_shows_every_credential_and_its_health(
    signed_in: TestClient, pop: Population, health: PageHealthPopulation
) -> None:
    html = signed_in.get("/admin/credentials").text
    ids = credential_ids(html)
    assert len(ids) == len(set(ids)) == 6  # u1 ... u6, the deleted u5 too
    assert ids[0] == health.expired_credential  # newest first

    reauth = credential_block(html, health.reauth_credential)
    assert 'data-status="needs_reauth"' in reauth
    assert '<span class="badge needs_reauth" data-field="status">needs reauth</span>' in reauth
    assert html_lib.escape(ADVICE[CredentialStatus.NEEDS_REAUTH]) in reauth
    assert 'data-field="client">acme</b>' in reauth
    assert 'data-field="fb-user">u3</span>' in reauth
    assert 'data-field="dead-pages">1 dead Page</span>' in reauth
    dead = page_row(reauth, health.dead_page)
    assert 'data-token="dead" data-can-post="no"' in dead
    assert '<span class="badge dead">dead</span>' in dead
    blog = page_row(reauth, "page-acme-blog")
    assert 'data-token="valid" data-can-post="yes"' in blog
    # A Page's name is text, never markup.
    assert html_lib.escape(TRICKY_PAGE_NAME) in blog
    assert TRICKY_PAGE_NAME not in html

    active = credential_block(html, health.active_credential)
    assert '<span class="badge active" data-field="status">active</span>' in active
    assert html_lib.escape(ADVICE[CredentialStatus.ACTIVE]) in active
    assert 'data-field="dead-pages"' not in active
    assert "CREATE_CONTENT, MODERATE" in page_row(active, "page-acme")
    shop = page_row(active, "page-acme-shop")  # a role without CREATE_CONTENT
    assert 'data-token="valid" data-can-post="no"' in shop
    assert "ANALYZE" in shop
    assert when(pop.now + timedelta(days=10)) in active

    unknown = page_row(credential_block(html, health.globex_credential), "page-globex")
    assert "not known yet" in unknown
    assert 'data-can-post="yes"' in unknown

    expired = credential_block(html, health.expired_credential)
    assert 'data-field="status">user token expired</span>' in expired
    assert html_lib.escape(ADVICE[CredentialStatus.USER_TOKEN_EXPIRED]) in expired
    two_days_ago = when(pop.now - timedelta(days=2))
    assert f'class="mono error" data-field="expires-at">{two_days_ago}<' in expired
    assert f'class="mono error" data-field="user-token-expired-at">{two_days_ago}<' in expired
    assert f'data-field="data-access-expires-at">{when(pop.now + timedelta(days=30))}<' in expired
    assert f'data-field="last-checked-at">{when(pop.now - timedelta(hours=1))}<' in expired
    assert 'data-can-post="yes"' in page_row(expired, "page-globex-news")

    expiring = credential_block(html, pop.expiring_credential)
    assert 'data-field="status">expiring</span>' in expiring
    assert 'class="mono" data-field="expires-at">' in expiring  # not ended yet
    assert 'data-field="user-token-expired-at">—<' in expiring
    assert "No Pages." in expiring

    assert re.search(r'id="count-needs_reauth"[^>]*>\s*<b>1</b>', html)
    assert re.search(r'id="count-user_token_expired"[^>]*>\s*<b>1</b>', html)
    assert re.search(r'id="count-active"[^>]*>\s*<b>2</b>', html)


def test_the_credentials_page_never_shows_a_token(
    signed_in: TestClient, health: PageHealthPopulation
) -> None:
    assert len(health.tokens) == 4 + 5  # four user tokens, five live Page tokens
    for path in ("/admin/credentials", "/admin/credentials?status=needs_reauth&limit=1"):
        html = signed_in.get(path).text
        for token in health.tokens:
            assert token not in html
        assert "EAAG" not in html
        assert "gAAAAA" not in html  # nor a token as stored (Fernet)


def test_the_credentials_page_decrypts_nothing(
    postgres_url: str, redis_url: str, api: TestClient, settings: Settings
) -> None:
    """Served by an API that holds other encryption keys, so any token read would fail."""
    pop = populate(settings)
    health = add_page_health(settings, pop.now)
    other = make_admin_settings(postgres_url, redis_url, encryption_keys=new_encryption_key())
    with api_client(other) as stranger:
        assert sign_in(stranger, pop.admin_key).status_code == 303
        response = stranger.get("/admin/credentials")
        assert response.status_code == 200
        assert len(credential_ids(response.text)) == 6
        filtered = stranger.get(f"/admin?credential={health.reauth_credential}")
        assert row_ids(filtered.text) == [health.parked_post]


def test_the_credentials_page_counts_and_links_the_posts_waiting(
    settings: Settings, signed_in: TestClient, health: PageHealthPopulation
) -> None:
    html = signed_in.get("/admin/credentials").text
    for credential_id, waiting in health.waiting.items():
        block = credential_block(html, credential_id)
        total = sum(waiting.values())
        assert f'data-waiting="{total}"' in block, credential_id
        assert f'data-field="waiting-total">{total}</b>' in block, credential_id
        by_status = links(block, "posts-by-status")
        assert by_status == [
            f"/admin?credential={credential_id}&status={status}" for status in waiting
        ]
        for href, status in zip(by_status, waiting, strict=True):
            shown = row_ids(signed_in.get(href).text)
            assert len(shown) == waiting[status]
            assert set(shown) == post_ids_of(settings, credential_id, status=PostStatus(status))
        (every,) = links(block, "posts-link")
        assert every == f"/admin?credential={credential_id}"
        shown = row_ids(signed_in.get(f"{every}&limit=200").text)
        assert set(shown) == post_ids_of(settings, credential_id)

    # Each Page: its own waiting posts, and a link to its posts under this credential.
    reauth = credential_block(html, health.reauth_credential)
    dead = page_row(reauth, health.dead_page)
    assert 'data-field="page-waiting">1</b>' in dead
    assert "1 needs reauth" in dead
    (href,) = links(dead, "page-posts")
    assert href == f"/admin?credential={health.reauth_credential}&target={health.dead_page}"
    assert row_ids(signed_in.get(href).text) == [health.parked_post]
    assert 'data-field="page-waiting">0</b>' in page_row(reauth, "page-acme-blog")
    active = credential_block(html, health.active_credential)
    assert 'data-field="page-waiting">7</b>' in page_row(active, "page-acme")
    assert 'data-field="page-waiting">0</b>' in page_row(active, "page-acme-shop")


def test_a_post_page_links_the_posts_of_its_credential(
    signed_in: TestClient, health: PageHealthPopulation
) -> None:
    html = signed_in.get(f"/admin/posts/{health.parked_post}").text
    found = re.search(r'id="credential-posts" href="([^"]+)"', html)
    assert found
    assert html_lib.unescape(found.group(1)) == f"/admin?credential={health.reauth_credential}"


@contextlib.contextmanager
def recorded_statements(client: TestClient) -> Iterator[list[str]]:
    """Every SQL statement the app runs inside the block (cleared at will by the caller)."""
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    engine = client.app.state.engine  # type: ignore[attr-defined]
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_the_credentials_page_costs_the_same_queries_for_one_or_many(
    signed_in: TestClient, health: PageHealthPopulation
) -> None:
    """Counts and Pages are read for the whole page at once: no query per credential."""
    with recorded_statements(signed_in) as statements:
        queries = []
        for limit in (1, 200):
            statements.clear()
            html = signed_in.get(f"/admin/credentials?limit={limit}").text
            assert len(credential_ids(html)) == min(limit, 6)
            queries.append(len(statements))
            grouped = [q for q in statements if "FROM posts" in q and "GROUP BY" in q]
            assert len(grouped) == 1, grouped  # the dependent posts, all at once
            assert not [q for q in statements if re.search(r"\b(user|page)_token\b", q)]
    assert queries[0] == queries[1]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=needs_reauth", ["reauth_credential"]),
        ("status=user_token_expired", ["expired_credential"]),
        ("client=globex&status=active", ["globex_credential"]),
        ("client=acme&status=active", ["active_credential"]),
    ],
)
def test_the_credentials_page_filters(
    signed_in: TestClient, health: PageHealthPopulation, query: str, expected: list[str]
) -> None:
    html = signed_in.get(f"/admin/credentials?{query}").text
    assert credential_ids(html) == [getattr(health, name) for name in expected]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=lost", "no status"),
        ("client=nobody", "no client named"),
        ("cursor=garbage", "page link is broken"),
    ],
)
def test_the_credentials_page_says_what_is_wrong_with_a_filter(
    signed_in: TestClient, query: str, message: str
) -> None:
    response = signed_in.get(f"/admin/credentials?{query}")
    assert response.status_code == 200
    assert message in response.text
    assert credential_ids(response.text) == []


def test_the_credentials_page_pages(signed_in: TestClient, health: PageHealthPopulation) -> None:
    seen: list[str] = []
    url: str | None = "/admin/credentials?limit=4"
    pages = 0
    while url is not None:
        html = signed_in.get(url).text
        seen += credential_ids(html)
        pages += 1
        found = re.search(r'id="next-page" href="([^"]+)"', html)
        url = html_lib.unescape(found.group(1)) if found else None
        if pages > 1:
            assert 'id="first-page" href="/admin/credentials?limit=4"' in html
    assert pages == 2
    assert len(seen) == len(set(seen)) == 6


@pytest.mark.parametrize(
    ("credential", "query", "expected"),
    [
        ("globex_credential", "", 2),
        ("globex_credential", "&status=scheduled", 1),
        ("reauth_credential", "&status=needs_reauth", 1),
        ("reauth_credential", "&target=page-acme-blog", 0),
        ("active_credential", "&client=globex", 0),
        ("active_credential", "&status=failed&client=acme", EXPECTED_STATS["posts"]["failed"]),
        ("expired_credential", "", 0),
    ],
)
def test_the_posts_list_filters_by_credential(
    settings: Settings,
    signed_in: TestClient,
    health: PageHealthPopulation,
    credential: str,
    query: str,
    expected: int,
) -> None:
    credential_id = getattr(health, credential)
    html = signed_in.get(f"/admin?credential={credential_id}{query}&limit=100").text
    shown = row_ids(html)
    assert len(shown) == expected
    assert set(shown) <= post_ids_of(settings, credential_id)
    assert f'id="filter-credential" value="{credential_id}"' in html
    if not expected:
        assert "No posts match these filters." in html


def test_the_posts_list_pages_within_a_credential(
    settings: Settings, signed_in: TestClient, health: PageHealthPopulation
) -> None:
    seen: list[str] = []
    url: str | None = f"/admin?credential={health.active_credential}&limit=5"
    while url is not None:
        html = signed_in.get(url).text
        seen += row_ids(html)
        found = re.search(r'id="next-page" href="([^"]+)"', html)
        url = html_lib.unescape(found.group(1)) if found else None
        if url:
            assert f"credential={health.active_credential}" in url
    assert len(seen) == len(set(seen))
    assert set(seen) == post_ids_of(settings, health.active_credential)


@pytest.mark.parametrize("credential", ["cred_00000000000000000000", "post_x", "nonsense"])
def test_an_unknown_credential_filter_says_so(signed_in: TestClient, credential: str) -> None:
    response = signed_in.get(f"/admin?credential={credential}")
    assert response.status_code == 200
    assert f"no credential &#39;{credential}&#39;" in response.text
    assert row_ids(response.text) == []


# --- the clients page ------------------------------------------------------------------------


@dataclass
class ClientUse:
    """What :func:`add_client_use` wrote on top of :func:`populate`."""

    #: A revoked client with nothing of its own.
    revoked_id: str
    #: The ids of globex's schedules, by status.
    schedules: dict[ScheduleStatus, list[str]]


def add_client_use(settings: Settings, now: datetime) -> ClientUse:
    """Give globex schedules, an occurrence and an old post, and add a revoked client.

    After it, globex has made 2 posts through the API in the last 24 hours
    (populate's two; the occurrence and the two-day-old post do not count), has 2
    pending (populate's scheduled one and the occurrence) and 2 active schedules
    (a paused one does not count). acme keeps populate's 23 posts of the day, 8 of
    them pending, and no schedule.
    """
    with session_for(settings) as s:
        globex = s.scalars(select(Client).where(Client.name == "globex")).one()
        credential_id = s.scalars(
            select(Credential.id).where(
                Credential.client_id == globex.id, Credential.status == CredentialStatus.ACTIVE
            )
        ).one()
        schedules: dict[ScheduleStatus, list[str]] = {}
        for status in (ScheduleStatus.ACTIVE, ScheduleStatus.ACTIVE, ScheduleStatus.PAUSED):
            schedule = Schedule(
                client_id=globex.id,
                credential_id=credential_id,
                target="page-globex",
                message="daily news",
                rrule="FREQ=DAILY",
                timezone="UTC",
                start_at=now,
                status=status,
            )
            s.add(schedule)
            s.flush()
            schedules.setdefault(status, []).append(schedule.id)
        occurrence_at = now + timedelta(days=1)
        s.add_all(
            [
                Post(
                    client_id=globex.id,
                    credential_id=credential_id,
                    target="page-globex",
                    message="an occurrence",
                    publish_at=occurrence_at,
                    due_at=occurrence_at,
                    status=PostStatus.SCHEDULED,
                    schedule_id=schedules[ScheduleStatus.ACTIVE][0],
                    occurrence_at=occurrence_at,
                ),
                Post(
                    client_id=globex.id,
                    credential_id=credential_id,
                    target="page-globex",
                    message="two days old",
                    publish_at=now - timedelta(days=2),
                    due_at=now - timedelta(days=2),
                    status=PostStatus.PUBLISHED,
                    published_at=now - timedelta(days=2),
                    created_at=now - timedelta(days=2),
                    updated_at=now - timedelta(days=2),
                ),
            ]
        )
        revoked = Client(
            name="initech", key_hash=hash_api_key(new_api_key()), revoked_at=now - timedelta(days=1)
        )
        s.add(revoked)
        s.flush()
        return ClientUse(revoked_id=revoked.id, schedules=schedules)


@pytest.fixture
def use(settings: Settings, pop: Population) -> ClientUse:
    return add_client_use(settings, pop.now)


def set_overrides(settings: Settings, client_id: str, **overrides: int) -> None:
    """Set quotas of one client on its row (``max_pending_posts=10`` …)."""
    with session_for(settings) as session:
        session.execute(update(Client).where(Client.id == client_id).values(**overrides))


def client_ids(html: str) -> list[str]:
    return re.findall(r'data-client-id="([^"]+)"', html)


def client_row(html: str, client_id: str) -> str:
    """The client's row on the clients page, from ``<tr`` to ``</tr>``."""
    found = re.search(rf'<tr class="[^"]*" data-client-id="{client_id}".*?</tr>', html, re.S)
    assert found, f"no row for {client_id}"
    return found.group(0)


@dataclass(frozen=True)
class Cell:
    """One quota cell of a client's row, as shown."""

    shown: str
    own: bool
    near: bool


def quota_cell(row: str, quota: str) -> Cell:
    found = re.search(
        rf'<td class="num( near)?" data-quota="{quota}"\s+data-own="(yes|no)"[^>]*>(.*?)</td>',
        row,
        re.S,
    )
    assert found, f"no {quota} cell"
    text = " ".join(re.sub(r"<[^>]+>", " ", found.group(3)).split())
    own = found.group(2) == "yes"
    assert text.endswith("(own)" if own else "default"), text
    return Cell(shown=text.rsplit(" ", 1)[0], own=own, near=found.group(1) is not None)


def ids_by_name(settings: Settings) -> dict[str, str]:
    with session_for(settings) as session:
        return {name: cid for cid, name in session.execute(select(Client.id, Client.name))}


def test_the_navigation_leads_to_the_clients_page(signed_in: TestClient) -> None:
    posts = signed_in.get("/admin").text
    nav = posts.split('<nav aria-label="Dashboard pages">')[1].split("</nav>")[0]
    assert re.search(
        r'id="nav-credentials"\s*>Credentials</a>\s*<a href="/admin/clients" id="nav-clients"\s*>'
        r"Clients</a>",
        nav,
    )
    clients = signed_in.get("/admin/clients")
    assert clients.status_code == 200
    assert re.search(r'id="nav-clients"\s+aria-current="page"', clients.text)
    assert not re.search(r'id="nav-credentials"\s+aria-current', clients.text)


def test_the_clients_page_lists_every_client_with_its_use(
    settings: Settings, signed_in: TestClient, pop: Population, use: ClientUse
) -> None:
    html = signed_in.get("/admin/clients").text
    ids = ids_by_name(settings)
    assert client_ids(html) == [ids["acme"], ids["globex"], ids["initech"], ids["ops"]]

    defaults = html.split('id="quota-defaults"')[1].split("</section>")[0]
    for quota, value in (
        ("posts_per_day", settings.quota_posts_per_day),
        ("pending_posts", settings.quota_pending_posts),
        ("active_schedules", settings.quota_active_schedules),
        ("requests_per_minute", settings.rate_limit_per_minute),
        ("occurrences_per_day", settings.quota_occurrences_per_day),
    ):
        assert f'data-default="{quota}">{value}</b>' in defaults

    acme = client_row(html, pop.acme_id)
    assert 'data-field="name">acme</b>' in acme
    assert f'<span class="mono muted">{pop.acme_id}</span>' in acme
    assert 'data-field="admin">no</td>' in acme
    assert 'data-field="revoked">no</td>' in acme
    assert quota_cell(acme, "posts_per_day") == Cell(
        f"23 / {settings.quota_posts_per_day}", own=False, near=False
    )
    assert quota_cell(acme, "pending_posts") == Cell(
        f"8 / {settings.quota_pending_posts}", own=False, near=False
    )
    assert quota_cell(acme, "active_schedules") == Cell(
        f"0 / {settings.quota_active_schedules}", own=False, near=False
    )
    assert quota_cell(acme, "requests_per_minute") == Cell(
        str(settings.rate_limit_per_minute), own=False, near=False
    )
    assert quota_cell(acme, "occurrences_per_day") == Cell(
        str(settings.quota_occurrences_per_day), own=False, near=False
    )
    (posts,) = links(acme, "client-posts")
    assert posts == f"/admin?client={pop.acme_id}"
    assert len(row_ids(signed_in.get(f"{posts}&limit=100").text)) == 23

    globex = client_row(html, pop.globex_id)
    assert 'data-field="name">globex</b>' in globex
    assert quota_cell(globex, "posts_per_day").shown == f"2 / {settings.quota_posts_per_day}"
    assert quota_cell(globex, "pending_posts").shown == f"2 / {settings.quota_pending_posts}"
    assert quota_cell(globex, "active_schedules").shown == (
        f"2 / {settings.quota_active_schedules}"
    )

    ops = client_row(html, ids["ops"])
    assert 'data-admin="yes"' in ops
    assert 'data-field="admin">yes</td>' in ops
    assert quota_cell(ops, "pending_posts").shown == f"0 / {settings.quota_pending_posts}"

    initech = client_row(html, use.revoked_id)
    assert initech.startswith('<tr class="client revoked"')
    assert 'data-revoked="yes"' in initech
    assert '<span class="error">revoked</span>' in initech
    assert 'data-revoked="no"' in acme
    assert acme.startswith('<tr class="client"')

    # No client has a quota of its own yet, and none is near one.
    assert "(own)" not in html
    assert 'data-own="yes"' not in html
    assert 'data-near="yes"' not in html


def test_the_clients_page_shows_a_clients_own_quotas_only_on_its_row(
    settings: Settings, signed_in: TestClient, pop: Population, use: ClientUse
) -> None:
    set_overrides(
        settings,
        pop.globex_id,
        max_posts_per_day=10,
        max_active_schedules=2,
        max_requests_per_minute=60,
        max_occurrences_per_day=24,
    )
    set_overrides(settings, pop.acme_id, max_pending_posts=10)
    html = signed_in.get("/admin/clients").text

    globex = client_row(html, pop.globex_id)
    assert quota_cell(globex, "posts_per_day") == Cell("2 / 10", own=True, near=False)
    # Its two active schedules fill its own quota of two: highlighted.
    assert quota_cell(globex, "active_schedules") == Cell("2 / 2", own=True, near=True)
    assert quota_cell(globex, "requests_per_minute") == Cell("60", own=True, near=False)
    assert quota_cell(globex, "occurrences_per_day") == Cell("24", own=True, near=False)
    assert quota_cell(globex, "pending_posts") == Cell(
        f"2 / {settings.quota_pending_posts}", own=False, near=False
    )

    acme = client_row(html, pop.acme_id)
    # 8 pending of its own 10: 80 %, highlighted.
    assert quota_cell(acme, "pending_posts") == Cell("8 / 10", own=True, near=True)
    assert quota_cell(acme, "posts_per_day") == Cell(
        f"23 / {settings.quota_posts_per_day}", own=False, near=False
    )
    assert quota_cell(acme, "active_schedules") == Cell(
        f"0 / {settings.quota_active_schedules}", own=False, near=False
    )
    assert quota_cell(acme, "requests_per_minute") == Cell(
        str(settings.rate_limit_per_minute), own=False, near=False
    )

    for other in (use.revoked_id, ids_by_name(settings)["ops"]):
        row = client_row(html, other)
        assert "(own)" not in row
        assert 'data-own="yes"' not in row
        assert 'data-near="yes"' not in row
    assert html.count("(own)") == 5
    assert html.count('class="num near"') == 2


def test_the_clients_page_is_for_signed_in_admins_only(
    settings: Settings, api: TestClient, pop: Population, use: ClientUse
) -> None:
    anonymous = api.get("/admin/clients", follow_redirects=False)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/admin/login"
    assert pop.acme_id not in anonymous.text
    # A client key gets no session, so the page still sends it to the sign-in form.
    assert sign_in(api, pop.client_key).status_code == 403
    refused = api.get("/admin/clients", follow_redirects=False)
    assert refused.status_code == 303
    assert refused.headers["location"] == "/admin/login"
    # An admin demoted while signed in loses the page with its session.
    assert sign_in(api, pop.admin_key).status_code == 303
    assert pop.acme_id in api.get("/admin/clients").text
    with session_for(settings) as session:
        session.execute(update(Client).where(Client.name == "ops").values(is_admin=False))
    demoted = api.get("/admin/clients", follow_redirects=False)
    assert demoted.status_code == 303
    assert demoted.headers["location"] == "/admin/login"
    assert pop.acme_id not in demoted.text


# --- the buttons -----------------------------------------------------------------------------


def test_retry_puts_a_failed_post_back(
    settings: Settings, signed_in: TestClient, pop: Population
) -> None:
    page = signed_in.get(f"/admin/posts/{pop.failed_post}").text
    response = signed_in.post(
        f"/admin/posts/{pop.failed_post}/retry",
        data={"csrf": csrf_of(page)},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"/admin/posts/{pop.failed_post}?done=retried"
    assert status_of(settings, pop.failed_post) is PostStatus.SCHEDULED
    after = signed_in.get(response.headers["location"]).text
    assert "Retried" in after
    assert 'id="post-status">scheduled' in after


def test_cancel_cancels(settings: Settings, signed_in: TestClient, pop: Population) -> None:
    page = signed_in.get(f"/admin/posts/{pop.scheduled_post}").text
    response = signed_in.post(
        f"/admin/posts/{pop.scheduled_post}/cancel", data={"csrf": csrf_of(page)}
    )
    assert response.status_code == 200
    assert "Canceled." in response.text
    assert status_of(settings, pop.scheduled_post) is PostStatus.CANCELED


@pytest.mark.parametrize(
    ("action", "post"), [("retry", "scheduled_post"), ("cancel", "published_post")]
)
def test_a_button_the_state_forbids_gets_409(
    settings: Settings, signed_in: TestClient, pop: Population, action: str, post: str
) -> None:
    post_id = getattr(pop, post)
    before = status_of(settings, post_id)
    csrf = csrf_of(signed_in.get("/admin").text)
    response = signed_in.post(f"/admin/posts/{post_id}/{action}", data={"csrf": csrf})
    assert response.status_code == 409
    assert f"post {post_id} is {before.value}" in response.text
    assert status_of(settings, post_id) is before


@pytest.mark.parametrize(
    "data", [{}, {"csrf": ""}, {"csrf": "forged"}], ids=["missing", "empty", "forged"]
)
@pytest.mark.parametrize("action", ["retry", "cancel"])
def test_a_button_without_the_csrf_token_is_refused(
    settings: Settings, signed_in: TestClient, pop: Population, action: str, data: dict[str, str]
) -> None:
    response = signed_in.post(f"/admin/posts/{pop.failed_post}/{action}", data=data)
    assert response.status_code == 403
    assert status_of(settings, pop.failed_post) is PostStatus.FAILED


def test_another_sessions_csrf_token_is_refused(
    settings: Settings, signed_in: TestClient, pop: Population
) -> None:
    old = csrf_of(signed_in.get("/admin").text)
    assert sign_in(signed_in, pop.admin_key).status_code == 303  # a new session, a new nonce
    response = signed_in.post(f"/admin/posts/{pop.failed_post}/retry", data={"csrf": old})
    assert response.status_code == 403
    assert status_of(settings, pop.failed_post) is PostStatus.FAILED


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Referer": "https://evil.example/page"},
    ],
)
def test_a_foreign_origin_is_refused_even_with_the_token(
    settings: Settings, signed_in: TestClient, pop: Population, headers: dict[str, str]
) -> None:
    csrf = csrf_of(signed_in.get("/admin").text)
    response = signed_in.post(
        f"/admin/posts/{pop.failed_post}/retry", data={"csrf": csrf}, headers=headers
    )
    assert response.status_code == 403
    assert status_of(settings, pop.failed_post) is PostStatus.FAILED


def test_our_own_origin_is_accepted(
    settings: Settings, signed_in: TestClient, pop: Population
) -> None:
    csrf = csrf_of(signed_in.get("/admin").text)
    response = signed_in.post(
        f"/admin/posts/{pop.failed_post}/retry",
        data={"csrf": csrf},
        headers={"Origin": "http://testserver"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert status_of(settings, pop.failed_post) is PostStatus.SCHEDULED


def test_a_button_when_signed_out_gets_401(
    settings: Settings, api: TestClient, pop: Population
) -> None:
    response = api.post(f"/admin/posts/{pop.failed_post}/retry", data={"csrf": "x"})
    assert response.status_code == 401
    assert "Sign in again" in response.text
    assert status_of(settings, pop.failed_post) is PostStatus.FAILED


def test_a_foreign_sign_in_form_is_refused(api: TestClient, pop: Population) -> None:
    response = api.post(
        "/admin/login",
        data={"key": pop.admin_key},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert "set-cookie" not in response.headers


# --- SQLite (what `offpost up` runs on) ------------------------------------------------------


def test_the_dashboard_works_on_sqlite(sqlite_url: str, redis_url: str) -> None:
    settings = make_admin_settings(sqlite_url, redis_url)
    with api_client(settings) as api:
        pop = populate(settings)
        assert sign_in(api, pop.admin_key).status_code == 303
        html = api.get("/admin").text
        assert re.search(r'id="count-published"[^>]*>\s*<b>13</b>', html)
        chart = html.split('id="chart"')[1].split("</section>")[0]
        assert "published (10)" in chart
        assert "failed (3)" in chart
        assert ": 10 published, 0 failed" in chart
        assert pop.expiring_credential in html
        page = api.get(f"/admin/posts/{pop.failed_post}").text
        response = api.post(f"/admin/posts/{pop.failed_post}/retry", data={"csrf": csrf_of(page)})
        assert response.status_code == 200
        assert 'id="post-status">scheduled' in response.text


def test_the_clients_page_works_on_sqlite(sqlite_url: str, redis_url: str) -> None:
    settings = make_admin_settings(sqlite_url, redis_url)
    with api_client(settings) as api:
        pop = populate(settings)
        add_client_use(settings, pop.now)
        set_overrides(settings, pop.globex_id, max_active_schedules=2)
        assert sign_in(api, pop.admin_key).status_code == 303
        html = api.get("/admin/clients").text
        assert len(client_ids(html)) == 4
        acme = client_row(html, pop.acme_id)
        assert quota_cell(acme, "pending_posts").shown == f"8 / {settings.quota_pending_posts}"
        globex = client_row(html, pop.globex_id)
        assert quota_cell(globex, "posts_per_day").shown == f"2 / {settings.quota_posts_per_day}"
        assert quota_cell(globex, "active_schedules") == Cell("2 / 2", own=True, near=True)


def test_the_credentials_page_works_on_sqlite(sqlite_url: str, redis_url: str) -> None:
    settings = make_admin_settings(sqlite_url, redis_url)
    with api_client(settings) as api:
        pop = populate(settings)
        health = add_page_health(settings, pop.now)
        assert sign_in(api, pop.admin_key).status_code == 303
        html = api.get("/admin/credentials").text
        assert len(credential_ids(html)) == 6
        reauth = credential_block(html, health.reauth_credential)
        assert 'data-token="dead" data-can-post="no"' in page_row(reauth, health.dead_page)
        assert 'data-field="waiting-total">7</b>' in credential_block(
            html, health.active_credential
        )
        expired = credential_block(html, health.expired_credential)
        assert f'data-field="expires-at">{when(pop.now - timedelta(days=2))}<' in expired
        (href,) = links(reauth, "posts-by-status")
        assert row_ids(api.get(href).text) == [health.parked_post]
        assert not [token for token in health.tokens if token in html]


# --- the posts list: what each post says and where it goes --------------------------------


def post_row(html: str, post_id: str) -> str:
    return html.split(f'data-post-id="{post_id}"')[1].split("</tr>", maxsplit=1)[0]


def add_post(settings: Settings, credential_id: str, target: str, **fields: object) -> str:
    """One scheduled post of acme's on ``target`` through ``credential_id``, due in a day."""
    due = datetime.now(UTC) + timedelta(days=1)
    with session_for(settings) as session:
        client_id = session.scalars(select(Client.id).where(Client.name == "acme")).one()
        post = Post(
            client_id=client_id,
            credential_id=credential_id,
            target=target,
            publish_at=due,
            due_at=due,
            status=PostStatus.SCHEDULED,
            **fields,
        )
        session.add(post)
        session.flush()
        return post.id


def test_the_posts_list_previews_each_message_escaped(
    settings: Settings, signed_in: TestClient, health: PageHealthPopulation
) -> None:
    long = add_post(
        settings,
        health.active_credential,
        "page-acme",
        message="Big <script>alert(1)</script> & news\n\n  spread   over lines " + "x" * 200,
    )
    short = add_post(settings, health.active_credential, "page-acme", message="Short & sweet")
    link = add_post(
        settings, health.active_credential, "page-acme", link="https://example.com/a?b=1&c=2"
    )
    html = signed_in.get("/admin?limit=100").text

    message = re.search(r'data-field="message">(.*?)</td>', post_row(html, long), re.S)
    assert message
    shown = html_lib.unescape(message.group(1))
    # One line, its first 80 characters, then an ellipsis.
    expected = ("Big <script>alert(1)</script> & news spread over lines " + "x" * 200)[:80]
    assert shown == expected + "…"
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; news" in message.group(1)
    assert 'data-field="message">Short &amp; sweet</td>' in post_row(html, short)
    assert "https://example.com/a?b=1&amp;c=2" in post_row(html, link)
    # populate's posts say what they are.
    assert 'data-field="message">needs_reauth post</td>' in post_row(html, health.parked_post)


def test_the_posts_list_names_each_page(
    settings: Settings, signed_in: TestClient, pop: Population, health: PageHealthPopulation
) -> None:
    blog = add_post(settings, health.reauth_credential, "page-acme-blog", message="blog")
    gone = add_post(settings, health.active_credential, "page-nobody-lists", message="gone")
    html = signed_in.get("/admin?limit=100").text
    # The name of the Page under the post's own credential, escaped.
    assert 'data-field="page-name">Acme</span>' in post_row(html, pop.failed_post)
    assert 'data-field="page-name">Acme</span>' in post_row(html, health.parked_post)
    tricky = html_lib.escape(TRICKY_PAGE_NAME, quote=False)
    assert f'data-field="page-name">{tricky}</span>' in post_row(html, blog)
    assert TRICKY_PAGE_NAME not in html
    # A Page its credential no longer lists: its id alone.
    assert "page-name" not in post_row(html, gone)
    assert '<span class="mono">page-nobody-lists</span>' in post_row(html, gone)
    for post_id in post_ids_of(settings, health.globex_credential):
        assert 'data-field="page-name">Globex</span>' in post_row(html, post_id)


def test_the_posts_list_reads_page_names_once_a_page_and_no_token(
    signed_in: TestClient, health: PageHealthPopulation
) -> None:
    with recorded_statements(signed_in) as statements:
        queries = []
        for limit in (1, 200):
            statements.clear()
            html = signed_in.get(f"/admin?limit={limit}").text
            assert len(row_ids(html)) == min(limit, TOTAL_POSTS)
            queries.append(len(statements))
            names = [q for q in statements if "FROM credential_pages" in q]
            assert len(names) == 1, names
            assert not [q for q in statements if re.search(r"\b(user|page)_token\b", q)]
    assert queries[0] == queries[1]
    for token in health.tokens:
        assert token not in html


# --- the schedules pages ---------------------------------------------------------------------


@pytest.fixture
def at_schedule_now(api: TestClient) -> Iterator[None]:
    """The API's clock at :data:`SCHEDULE_NOW`, for the pages and the buttons alike."""
    api.app.dependency_overrides[get_now] = lambda: SCHEDULE_NOW  # type: ignore[attr-defined]
    yield
    api.app.dependency_overrides.pop(get_now, None)  # type: ignore[attr-defined]


@pytest.fixture
def sched(settings: Settings, health: PageHealthPopulation, at_schedule_now: None) -> Schedules:
    return add_schedules(settings)


def schedule_ids(html: str) -> list[str]:
    return re.findall(r'data-schedule-id="([^"]+)"', html)


def schedule_line(html: str, schedule_id: str) -> str:
    return html.split(f'data-schedule-id="{schedule_id}"')[1].split("</tr>", maxsplit=1)[0]


def runs_shown(block: str) -> list[str]:
    return re.findall(r'data-run="([^"]+)"', block)


def field(block: str, name: str) -> str:
    found = re.search(rf'data-field="{name}"[^>]*>(.*?)</', block, re.S)
    assert found, f"no {name}"
    return html_lib.unescape(found.group(1)).strip()


def schedule_status(settings: Settings, schedule_id: str) -> ScheduleStatus:
    with session_for(settings) as session:
        status = session.scalar(select(Schedule.status).where(Schedule.id == schedule_id))
    assert status is not None
    return status


def statuses_of(settings: Settings, post_ids: list[str]) -> set[PostStatus]:
    with session_for(settings) as session:
        return set(session.scalars(select(Post.status).where(Post.id.in_(post_ids))))


def event_kinds(settings: Settings, schedule_id: str) -> list[ScheduleEventKind]:
    with session_for(settings) as session:
        return list(
            session.scalars(
                select(ScheduleEvent.kind)
                .where(ScheduleEvent.schedule_id == schedule_id)
                .order_by(ScheduleEvent.id)
            )
        )


def press(client: TestClient, schedule_id: str, action: str) -> httpx.Response:
    """The schedule page's Pause or Resume button, with the page's own CSRF token."""
    page = client.get(f"/admin/schedules/{schedule_id}").text
    assert f'id="{action}"' in page, f"no {action} button"
    return client.post(
        f"/admin/schedules/{schedule_id}/{action}",
        data={"csrf": csrf_of(page)},
        follow_redirects=False,
    )


def test_the_navigation_leads_to_the_schedules_page(signed_in: TestClient) -> None:
    posts = signed_in.get("/admin").text
    nav = posts.split('<nav aria-label="Dashboard pages">')[1].split("</nav>")[0]
    assert re.search(
        r'id="nav-clients"\s*>Clients</a>\s*<a href="/admin/schedules" id="nav-schedules"\s*>'
        r"Schedules</a>",
        nav,
    )
    page = signed_in.get("/admin/schedules")
    assert page.status_code == 200
    assert re.search(r'id="nav-schedules"\s+aria-current="page"', page.text)
    assert 'id="no-schedules"' in page.text


def test_the_schedules_page_shows_rule_words_zone_and_next_five_runs(
    signed_in: TestClient, pop: Population, sched: Schedules
) -> None:
    html = signed_in.get("/admin/schedules").text
    # Newest first; the deleted one only when asked for.
    assert schedule_ids(html) == [sched.hourly, sched.paused, sched.weekly]

    weekly = schedule_line(html, sched.weekly)
    assert field(weekly, "words") == "every Monday and Wednesday at 09:00"
    assert field(weekly, "rule") == "rrule: FREQ=WEEKLY;BYDAY=MO,WE;BYHOUR=9;BYMINUTE=0"
    assert field(weekly, "timezone") == "Europe/Berlin"
    assert runs_shown(weekly) == [
        "2026-12-02T09:00:00+01:00",
        "2026-12-07T09:00:00+01:00",
        "2026-12-09T09:00:00+01:00",
        "2026-12-14T09:00:00+01:00",
        "2026-12-16T09:00:00+01:00",
    ]
    assert "Wed 2026-12-02 09:00 +01:00" in weekly
    assert field(weekly, "client") == "acme"
    assert field(weekly, "misfire") == "skip"
    assert field(weekly, "status") == "active"
    assert field(weekly, "page-name") == "Acme"
    assert field(weekly, "target") == "page-acme"
    assert f'href="/admin/schedules/{sched.weekly}"' in weekly

    hourly = schedule_line(html, sched.hourly)
    assert field(hourly, "words") == "every hour at :00"
    assert field(hourly, "rule") == "cron: 0 * * * *"
    assert field(hourly, "timezone") == "UTC"
    assert runs_shown(hourly) == [f"2026-11-30T{h}:00:00+00:00" for h in range(13, 18)]

    paused = schedule_line(html, sched.paused)
    assert field(paused, "words") == "every 15 minutes"
    assert field(paused, "timezone") == "America/New_York"
    assert field(paused, "client") == "globex"
    assert field(paused, "status") == "paused"
    assert runs_shown(paused) == []
    assert field(paused, "page-name") == "Globex"

    # The same runs as the client sees through the API: one computation, not two.
    for schedule_id in (sched.weekly, sched.hourly):
        api_view = signed_in.get(f"/v1/schedules/{schedule_id}", headers=bearer(pop.client_key))
        assert api_view.status_code == 200, api_view.text
        assert runs_shown(schedule_line(html, schedule_id)) == api_view.json()["upcoming"]


def test_a_rule_without_words_shows_its_text(
    settings: Settings, signed_in: TestClient, sched: Schedules
) -> None:
    rule = "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1;BYHOUR=17;BYMINUTE=0"
    with session_for(settings) as session:
        session.execute(update(Schedule).where(Schedule.id == sched.weekly).values(rrule=rule))
    weekly = schedule_line(signed_in.get("/admin/schedules").text, sched.weekly)
    assert 'data-field="words"' not in weekly
    assert field(weekly, "rule") == f"rrule: {rule}"
    assert len(runs_shown(weekly)) == 5


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=active", ["hourly", "weekly"]),
        ("status=paused", ["paused"]),
        ("status=deleted", ["deleted"]),
        ("client=globex", ["paused"]),
        ("client=acme&status=active", ["hourly", "weekly"]),
        ("client=acme&status=paused", []),
    ],
)
def test_the_schedules_page_filters(
    signed_in: TestClient, sched: Schedules, query: str, expected: list[str]
) -> None:
    html = signed_in.get(f"/admin/schedules?{query}").text
    assert schedule_ids(html) == [getattr(sched, name) for name in expected]
    if not expected:
        assert "No schedules match these filters." in html


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=gone", "no status"),
        ("client=nobody", "no client named"),
        ("cursor=garbage", "page link is broken"),
    ],
)
def test_the_schedules_page_says_what_is_wrong_with_a_filter(
    signed_in: TestClient, sched: Schedules, query: str, message: str
) -> None:
    response = signed_in.get(f"/admin/schedules?{query}")
    assert response.status_code == 200
    assert message in response.text
    assert schedule_ids(response.text) == []


def test_the_schedules_page_pages(signed_in: TestClient, sched: Schedules) -> None:
    seen: list[str] = []
    url: str | None = "/admin/schedules?limit=1&status=active"
    while url is not None:
        html = signed_in.get(url).text
        seen += schedule_ids(html)
        found = re.search(r'id="next-page" href="([^"]+)"', html)
        url = html_lib.unescape(found.group(1)) if found else None
    assert seen == [sched.hourly, sched.weekly]


def test_the_schedules_page_costs_the_same_queries_for_one_or_many(
    signed_in: TestClient, sched: Schedules
) -> None:
    """Clients and Pages are read for the whole page at once, and never a token."""
    with recorded_statements(signed_in) as statements:
        queries = []
        for limit in (1, 200):
            statements.clear()
            html = signed_in.get(f"/admin/schedules?limit={limit}").text
            assert len(schedule_ids(html)) == min(limit, 3)
            queries.append(len(statements))
            assert not [q for q in statements if re.search(r"\b(user|page)_token\b", q)]
    assert queries[0] == queries[1]


def test_a_schedule_page_shows_its_history_and_last_runs(
    signed_in: TestClient, sched: Schedules
) -> None:
    html = signed_in.get(f"/admin/schedules/{sched.hourly}").text
    assert 'id="schedule-status">active' in html
    assert re.search(r'id="rule-words">every hour at :00<', html)
    assert 'id="timezone">UTC<' in html
    assert runs_shown(html.split('id="upcoming"')[1].split("</dd>")[0]) == [
        f"2026-11-30T{h}:00:00+00:00" for h in range(13, 18)
    ]
    assert "catch up" not in html.split('id="misfire"')[1].split("</dd>")[0]

    runs = html.split('id="runs"')[1].split("</table>")[0]
    # Newest first, each linked to its post.
    assert row_ids(runs) == [
        sched.due_run,
        sched.failed_run,
        sched.published_run,
        sched.skipped_run,
    ]
    for post_id in row_ids(runs):
        assert f'href="/admin/posts/{post_id}"' in runs
    assert re.search(rf'data-post-id="{sched.failed_run}" data-status="failed"', runs)
    assert "blocked" in post_row(runs, sched.failed_run)
    assert re.search(rf'data-post-id="{sched.published_run}" data-status="published"', runs)
    ahead = html.split('id="ahead"')[1].split("</p>")[0]
    assert field(ahead, "ahead-total") == str(len(sched.ahead)) == "21"
    assert 'data-ahead="scheduled">21 scheduled' in ahead

    history = html.split('id="history"')[1].split("</table>")[0]
    assert re.findall(r'data-kind="([^"]+)"', history) == ["skipped"]
    assert f'href="/admin/posts/{sched.skipped_run}"' in history
    assert "misfire" in history

    # All its posts, through the posts list.
    (href,) = re.findall(r'id="schedule-posts" href="([^"]+)"', html)
    listed = signed_in.get(html_lib.unescape(href) + "&limit=100").text
    assert len(row_ids(listed)) == 4 + 21
    assert f'id="filter-schedule" value="{sched.hourly}"' in listed

    # A post made by a schedule leads back to it.
    post = signed_in.get(f"/admin/posts/{sched.failed_run}").text
    assert f'id="post-schedule" href="/admin/schedules/{sched.hourly}"' in post


def test_an_unknown_schedule_is_404(signed_in: TestClient) -> None:
    for schedule_id in ("sched_00000000000000000000", "post_x"):
        response = signed_in.get(f"/admin/schedules/{schedule_id}")
        assert response.status_code == 404
        assert "No schedule" in response.text


def test_pause_cancels_the_pending_posts_and_records_it(
    settings: Settings,
    signed_in: TestClient,
    sched: Schedules,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="offpost.api.dashboard.routes"):
        response = press(signed_in, sched.hourly, "pause")
    assert response.status_code == 303
    assert response.headers["location"] == f"/admin/schedules/{sched.hourly}?done=paused"
    assert schedule_status(settings, sched.hourly) is ScheduleStatus.PAUSED
    # Every post not yet attempted: those made ahead and the one due now.
    assert statuses_of(settings, [*sched.ahead, sched.due_run]) == {PostStatus.CANCELED}
    assert statuses_of(settings, [sched.published_run]) == {PostStatus.PUBLISHED}
    assert statuses_of(settings, [sched.failed_run]) == {PostStatus.FAILED}
    assert event_kinds(settings, sched.hourly)[-1] is ScheduleEventKind.PAUSED

    (record,) = [r for r in caplog.records if getattr(r, "action", "") == "admin_schedule_paused"]
    assert record.admin_id == ids_by_name(settings)["ops"]  # type: ignore[attr-defined]
    assert record.schedule_id == sched.hourly  # type: ignore[attr-defined]

    page = signed_in.get(response.headers["location"]).text
    assert 'id="schedule-status">paused' in page
    assert "Paused" in page.split('id="notice"')[1]
    assert 'id="pause"' not in page
    assert 'id="resume"' in page
    assert "none while paused" in page.split('id="upcoming"')[1].split("</dd>")[0]
    history = page.split('id="history"')[1].split("</table>")[0]
    assert re.findall(r'data-kind="([^"]+)"', history) == ["paused", "skipped"]
    assert 'data-ahead="canceled">21 canceled' in page
    listed = signed_in.get("/admin/schedules?status=paused").text
    assert sched.hourly in schedule_ids(listed)


def test_resume_makes_the_posts_again(
    settings: Settings, api: TestClient, signed_in: TestClient, sched: Schedules
) -> None:
    assert press(signed_in, sched.hourly, "pause").status_code == 303
    later = SCHEDULE_NOW + timedelta(minutes=30)
    api.app.dependency_overrides[get_now] = lambda: later  # type: ignore[attr-defined]
    response = press(signed_in, sched.hourly, "resume")
    assert response.status_code == 303
    assert response.headers["location"] == f"/admin/schedules/{sched.hourly}?done=resumed"
    assert schedule_status(settings, sched.hourly) is ScheduleStatus.ACTIVE
    # The same posts as before the pause, scheduled again; the one due during it stays
    # canceled, as through the API.
    assert statuses_of(settings, sched.ahead) == {PostStatus.SCHEDULED}
    assert statuses_of(settings, [sched.due_run]) == {PostStatus.CANCELED}
    assert event_kinds(settings, sched.hourly)[-2:] == [
        ScheduleEventKind.PAUSED,
        ScheduleEventKind.RESUMED,
    ]
    page = signed_in.get(response.headers["location"]).text
    assert 'id="schedule-status">active' in page
    assert "Resumed" in page.split('id="notice"')[1]
    assert 'id="pause"' in page
    # 13:00 to 12:00 tomorrow: the 21 revived and three new ones.
    assert 'data-ahead="scheduled">24 scheduled' in page
    assert runs_shown(page.split('id="upcoming"')[1].split("</dd>")[0])[0] == (
        "2026-11-30T13:00:00+00:00"
    )


def test_resume_over_the_active_schedules_quota_says_so(
    settings: Settings, signed_in: TestClient, pop: Population, sched: Schedules
) -> None:
    set_overrides(settings, pop.acme_id, max_active_schedules=1)
    assert press(signed_in, sched.hourly, "pause").status_code == 303
    kinds = event_kinds(settings, sched.hourly)
    # acme's weekly schedule is active: resuming the hourly one would make two.
    response = press(signed_in, sched.hourly, "resume")
    assert response.status_code == 409
    assert response.headers["content-type"].startswith("text/html")
    error = html_lib.unescape(response.text.split('id="action-error">')[1].split("</p>")[0])
    assert error == (
        "Not resumed: this client has 1 active schedules; its active_schedules quota is 1: "
        "pause or delete one first"
    )
    assert 'id="schedule-status">paused' in response.text
    assert 'id="resume"' in response.text
    assert schedule_status(settings, sched.hourly) is ScheduleStatus.PAUSED
    assert statuses_of(settings, sched.ahead) == {PostStatus.CANCELED}
    assert event_kinds(settings, sched.hourly) == kinds


def test_a_deleted_schedule_has_no_buttons_and_cannot_be_resumed(
    settings: Settings, signed_in: TestClient, sched: Schedules
) -> None:
    page = signed_in.get(f"/admin/schedules/{sched.deleted}").text
    assert 'id="schedule-status">deleted' in page
    assert 'id="pause"' not in page
    assert 'id="resume"' not in page
    response = signed_in.post(
        f"/admin/schedules/{sched.deleted}/resume", data={"csrf": csrf_of(page)}
    )
    assert response.status_code == 409
    assert f"schedule {sched.deleted} is deleted" in response.text
    assert schedule_status(settings, sched.deleted) is ScheduleStatus.DELETED


@pytest.mark.parametrize(
    "data", [{}, {"csrf": ""}, {"csrf": "forged"}], ids=["missing", "empty", "forged"]
)
@pytest.mark.parametrize(("action", "which"), [("pause", "hourly"), ("resume", "paused")])
def test_a_schedule_button_without_the_csrf_token_is_refused(
    settings: Settings,
    signed_in: TestClient,
    sched: Schedules,
    action: str,
    which: str,
    data: dict[str, str],
) -> None:
    schedule_id = getattr(sched, which)
    before = schedule_status(settings, schedule_id)
    kinds = event_kinds(settings, schedule_id)
    response = signed_in.post(f"/admin/schedules/{schedule_id}/{action}", data=data)
    assert response.status_code == 403
    assert schedule_status(settings, schedule_id) is before
    assert event_kinds(settings, schedule_id) == kinds
    assert statuses_of(settings, sched.ahead) == {PostStatus.SCHEDULED}


def test_a_schedule_button_from_another_site_is_refused(
    settings: Settings, signed_in: TestClient, sched: Schedules
) -> None:
    csrf = csrf_of(signed_in.get(f"/admin/schedules/{sched.hourly}").text)
    response = signed_in.post(
        f"/admin/schedules/{sched.hourly}/pause",
        data={"csrf": csrf},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    assert schedule_status(settings, sched.hourly) is ScheduleStatus.ACTIVE


def test_the_schedules_pages_are_for_signed_in_admins_only(
    settings: Settings, api: TestClient, pop: Population, sched: Schedules
) -> None:
    for path in ("/admin/schedules", f"/admin/schedules/{sched.hourly}"):
        anonymous = api.get(path, follow_redirects=False)
        assert anonymous.status_code == 303
        assert anonymous.headers["location"] == "/admin/login"
        assert sched.hourly not in anonymous.text
    # A client key gets no session: no page, no button.
    assert sign_in(api, pop.client_key).status_code == 403
    assert api.get("/admin/schedules", follow_redirects=False).status_code == 303
    for action, schedule_id in (("pause", sched.hourly), ("resume", sched.paused)):
        refused = api.post(f"/admin/schedules/{schedule_id}/{action}", data={"csrf": "x"})
        assert refused.status_code == 401
        assert "Sign in again" in refused.text
    # Nor does the client's API key, sent as the API takes it.
    with_key = api.post(
        f"/admin/schedules/{sched.hourly}/pause",
        data={"csrf": "x"},
        headers=bearer(pop.client_key),
    )
    assert with_key.status_code == 401
    assert schedule_status(settings, sched.hourly) is ScheduleStatus.ACTIVE
    assert schedule_status(settings, sched.paused) is ScheduleStatus.PAUSED
    # An admin demoted while signed in loses the pages and the buttons with its session.
    assert sign_in(api, pop.admin_key).status_code == 303
    csrf = csrf_of(api.get(f"/admin/schedules/{sched.hourly}").text)
    with session_for(settings) as session:
        session.execute(update(Client).where(Client.name == "ops").values(is_admin=False))
    assert api.get("/admin/schedules", follow_redirects=False).status_code == 303
    demoted = api.post(f"/admin/schedules/{sched.hourly}/pause", data={"csrf": csrf})
    assert demoted.status_code == 401
    assert schedule_status(settings, sched.hourly) is ScheduleStatus.ACTIVE


def test_the_schedules_pages_work_on_sqlite(sqlite_url: str, redis_url: str) -> None:
    settings = make_admin_settings(sqlite_url, redis_url)
    with api_client(settings) as api:
        api.app.dependency_overrides[get_now] = lambda: SCHEDULE_NOW  # type: ignore[attr-defined]
        pop = populate(settings)
        add_page_health(settings, pop.now)
        sched = add_schedules(settings)
        assert sign_in(api, pop.admin_key).status_code == 303
        html = api.get("/admin/schedules").text
        assert schedule_ids(html) == [sched.hourly, sched.paused, sched.weekly]
        assert field(schedule_line(html, sched.weekly), "words") == (
            "every Monday and Wednesday at 09:00"
        )
        assert press(api, sched.hourly, "pause").status_code == 303
        assert statuses_of(settings, sched.ahead) == {PostStatus.CANCELED}
        assert press(api, sched.hourly, "resume").status_code == 303
        assert statuses_of(settings, sched.ahead) == {PostStatus.SCHEDULED}


# --- the broker queue under `offpost up` -----------------------------------------------------


def test_under_up_the_dashboard_shows_the_in_process_queue(
    postgres_url: str, redis_url: str
) -> None:
    """`offpost up` runs the API with kombu's in-memory broker in its own process
    (``EMBEDDED_BROKER``): the page counts the messages in that very queue."""
    queue = f"offpost-up-{secrets.token_hex(4)}"
    settings = make_admin_settings(postgres_url, redis_url, broker_url=EMBEDDED_BROKER, queue=queue)
    sender = make_celery(EMBEDDED_BROKER, queue=queue)
    with api_client(settings) as api:
        pop = populate(settings)
        assert sign_in(api, pop.admin_key).status_code == 303
        # Nothing in this process has declared the queue yet: unknown, not 0.
        assert "broker queue: <b>unknown</b>" in api.get("/admin").text
        for batch in (["post_a"], ["post_b", "post_c"], ["post_d"]):
            send_publish(sender, batch)  # as the embedded dispatcher sends
        try:
            assert "broker queue: <b>3</b> messages" in api.get("/admin").text
            stats = api.get("/v1/admin/stats", headers=bearer(pop.admin_key)).json()
            assert stats["queue_depth"] == 3
            with sender.connection_for_write() as connection:
                connection.default_channel.queue_purge(queue)
            assert "broker queue: <b>0</b> messages" in api.get("/admin").text
        finally:
            with sender.connection_for_write() as connection:
                connection.default_channel.queue_delete(queue)

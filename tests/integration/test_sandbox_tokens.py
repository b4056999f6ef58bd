"""Sandbox tokens over HTTP: exchange, expiry, client_code, debug_token, invalidation."""

from __future__ import annotations

import re

import pytest

from tests.integration.sandbox_support import SandboxClient, error_of

DAY = 86_400


def test_minted_tokens_look_like_real_ones(graph: SandboxClient) -> None:
    user = graph.mint_user(pages=1)
    long_token = graph.long_lived(user["access_token"])
    page_token = graph.page_token(long_token, user["pages"][0]["id"])
    for token in (user["access_token"], long_token, page_token):
        assert re.fullmatch(r"EAA[A-Za-z0-9]{150,}", token)
    assert len({user["access_token"], long_token, page_token}) == 3


def test_exchange_gives_60_day_token_and_is_stable(graph: SandboxClient) -> None:
    short_token = graph.mint_user()["access_token"]
    first = graph.exchange(short_token).json()
    assert first["token_type"] == "bearer"
    assert 5_184_000 - 5 <= first["expires_in"] <= 5_184_000

    graph.advance(DAY)
    again = graph.exchange(first["access_token"]).json()
    assert again["access_token"] == first["access_token"]
    assert again["expires_in"] <= first["expires_in"] - DAY
    assert graph.exchange(short_token).status_code == 400  # the short one expired meanwhile


def test_exchange_also_works_as_post_and_can_omit_expires_in(graph: SandboxClient) -> None:
    graph.settings(omit_expires_in=True)
    short_token = graph.mint_user()["access_token"]
    response = graph.post(
        "/oauth/access_token",
        grant_type="fb_exchange_token",
        client_id=graph.app_id,
        client_secret=graph.app_secret,
        fb_exchange_token=short_token,
    )
    assert response.status_code == 200
    assert set(response.json()) == {"access_token", "token_type"}


def test_exchange_checks_the_client(graph: SandboxClient) -> None:
    token = graph.mint_user()["access_token"]
    wrong_secret = graph.get(
        "/oauth/access_token",
        grant_type="fb_exchange_token",
        client_id=graph.app_id,
        client_secret="wrong",
        fb_exchange_token=token,
    )
    assert wrong_secret.status_code == 400
    assert error_of(wrong_secret)["message"] == "Error validating client secret."
    unknown_app = graph.get(
        "/oauth/access_token",
        grant_type="fb_exchange_token",
        client_id="1234",
        client_secret="x",
        fb_exchange_token=token,
    )
    assert error_of(unknown_app)["code"] == 101


def test_expired_token_cannot_be_exchanged(graph: SandboxClient) -> None:
    token = graph.mint_user()["access_token"]
    graph.advance(3600)
    error = error_of(graph.exchange(token))
    assert (error["code"], error["error_subcode"], error["type"]) == (190, 463, "OAuthException")
    stamp = r"\w+day, \d\d-\w{3}-\d\d \d\d:\d\d:\d\d P[SD]T"  # Wednesday, 16-Nov-22 07:45:51 PST
    assert re.fullmatch(
        rf"Error validating access token: Session has expired on {stamp}\. "
        rf"The current time is {stamp}\.",
        error["message"],
    )


def test_lifetimes_follow_the_sandbox_clock(graph: SandboxClient) -> None:
    user = graph.mint_user(pages=1)
    page_id = user["pages"][0]["id"]
    short_token = user["access_token"]
    short_page_token = graph.page_token(short_token, page_id)
    long_token = graph.long_lived(short_token)
    long_page_token = graph.page_token(long_token, page_id)

    graph.advance(3599)
    assert graph.get("/me", short_token).status_code == 200
    assert graph.get(f"/{page_id}", short_page_token).status_code == 200
    graph.advance(2)
    assert error_of(graph.get("/me", short_token))["error_subcode"] == 463
    assert error_of(graph.get(f"/{page_id}", short_page_token))["error_subcode"] == 463
    assert graph.get("/me", long_token).status_code == 200

    graph.advance(60 * DAY)
    assert error_of(graph.get("/me", long_token))["error_subcode"] == 463
    assert graph.get(f"/{page_id}", long_page_token).status_code == 200  # never expires
    assert graph.debug(long_page_token).json()["data"]["expires_at"] == 0


def test_page_token_of_a_long_lived_user_token_outlives_it(graph: SandboxClient) -> None:
    user = graph.mint_user(pages=1)
    page_id = user["pages"][0]["id"]
    long_token = graph.long_lived(user["access_token"])
    expires_at = graph.debug(long_token).json()["data"]["expires_at"]
    page_token = graph.accounts(long_token)[0]["access_token"]

    now = graph.advance(60 * DAY + 1)
    assert now > expires_at

    user_data = graph.debug(long_token).json()["data"]
    assert user_data["is_valid"] is False
    assert (user_data["error"]["code"], user_data["error"]["subcode"]) == (190, 463)
    expired = error_of(graph.get("/me/accounts", long_token))
    assert (expired["code"], expired["error_subcode"]) == (190, 463)

    page_data = graph.debug(page_token).json()["data"]
    assert (page_data["type"], page_data["is_valid"], page_data["expires_at"]) == ("PAGE", True, 0)
    assert "error" not in page_data
    posted = graph.post(f"/{page_id}/feed", page_token, message="after the user token expired")
    assert posted.status_code == 200
    assert [post["id"] for post in graph.posts(page_id)] == [posted.json()["id"]]


def test_client_code_is_redeemed_once_with_machine_id(graph: SandboxClient) -> None:
    long_token = graph.long_lived(graph.mint_user()["access_token"])
    code = graph.get(
        "/oauth/client_code",
        long_token,
        client_id=graph.app_id,
        client_secret=graph.app_secret,
        redirect_uri="https://app.example/cb",
    ).json()["code"]

    redeem = {"client_id": graph.app_id, "redirect_uri": "https://app.example/cb", "code": code}
    mismatch = graph.get("/oauth/access_token", **{**redeem, "redirect_uri": "https://x.example/"})
    assert error_of(mismatch)["code"] == 100
    first = graph.get("/oauth/access_token", **redeem, machine_id="m-1")
    assert first.status_code == 200
    body = first.json()
    assert body["machine_id"] == "m-1"
    assert body["access_token"] not in (long_token,)
    assert 5_184_000 - 5 <= body["expires_in"] <= 5_184_000
    assert graph.get("/me", body["access_token"]).status_code == 200

    reused = graph.get("/oauth/access_token", **redeem)
    assert error_of(reused) | {"fbtrace_id": ""} == {
        "message": "This authorization code has been used.",
        "type": "OAuthException",
        "code": 100,
        "fbtrace_id": "",
    }


def test_client_code_wants_a_long_lived_token(graph: SandboxClient) -> None:
    response = graph.get(
        "/oauth/client_code",
        graph.mint_user()["access_token"],
        client_id=graph.app_id,
        client_secret=graph.app_secret,
        redirect_uri="https://app.example/cb",
    )
    assert error_of(response)["code"] == 100


def test_client_credentials_gives_an_app_token(graph: SandboxClient) -> None:
    body = graph.get(
        "/oauth/access_token",
        grant_type="client_credentials",
        client_id=graph.app_id,
        client_secret=graph.app_secret,
    ).json()
    app_token = body["access_token"]
    assert app_token.startswith(graph.app_id + "|")
    assert graph.app_secret not in app_token
    user_token = graph.mint_user()["access_token"]
    debug = graph.get("/debug_token", app_token, proof=False, input_token=user_token)
    assert debug.json()["data"]["is_valid"] is True
    assert graph.debug(app_token).json()["data"] == {
        "app_id": graph.app_id,
        "type": "APP",
        "application": "offpost sandbox",
        "is_valid": True,
        "scopes": [],
    }


def test_debug_token_describes_user_and_page_tokens(graph: SandboxClient) -> None:
    user = graph.mint_user(pages=1)
    page_id = user["pages"][0]["id"]
    data = graph.debug(user["access_token"]).json()["data"]
    assert data["type"] == "USER"
    assert data["app_id"] == graph.app_id
    assert data["is_valid"] is True
    assert data["expires_at"] - data["issued_at"] == 3600
    assert data["data_access_expires_at"] - data["issued_at"] == 90 * DAY
    assert "pages_manage_posts" in data["scopes"]
    assert {"scope": "pages_show_list", "target_ids": [page_id]} in data["granular_scopes"]

    page_data = graph.debug(graph.page_token(user["access_token"], page_id)).json()["data"]
    assert (page_data["type"], page_data["profile_id"]) == ("PAGE", page_id)


def test_debug_token_reports_expired_and_undecodable_input_with_200(
    graph: SandboxClient,
) -> None:
    token = graph.mint_user()["access_token"]
    graph.advance(3600)
    expired = graph.debug(token)
    assert expired.status_code == 200
    data = expired.json()["data"]
    assert data["is_valid"] is False
    assert (data["error"]["code"], data["error"]["subcode"]) == (190, 463)
    assert data["error"]["message"].startswith("Error validating access token: Session has expired")

    garbage = graph.debug("EAAnotarealtoken")
    assert garbage.status_code == 200
    assert garbage.json() == {
        "data": {
            "error": {"code": 190, "message": "The access token could not be decrypted"},
            "is_valid": False,
            "scopes": [],
        }
    }


def test_debug_token_needs_an_app_token_of_the_same_app(graph: SandboxClient) -> None:
    expected = (
        "(#100) You must provide an app access token, or a user access token that is an "
        "owner or developer of the app"
    )
    user_token = graph.mint_user()["access_token"]
    missing = graph.get("/debug_token", input_token=user_token)
    assert missing.status_code == 400
    assert (error_of(missing)["code"], error_of(missing)["message"]) == (100, expected)
    as_user = graph.get("/debug_token", user_token, input_token=user_token)
    assert error_of(as_user)["message"] == expected

    graph.control("POST", "/apps", {"app_id": "4242", "app_secret": "other-secret"})
    other_app = graph.get("/debug_token", "4242|other-secret", proof=False, input_token=user_token)
    assert other_app.status_code == 400
    assert error_of(other_app)["message"] == expected


@pytest.mark.parametrize(("reason", "subcode"), [("password_changed", 460), ("deauthorized", 458)])
def test_invalidation_kills_user_and_derived_page_tokens(
    graph: SandboxClient, reason: str, subcode: int
) -> None:
    user = graph.mint_user(pages=1)
    page_id = user["pages"][0]["id"]
    long_token = graph.long_lived(user["access_token"])
    page_token = graph.page_token(long_token, page_id)

    result = graph.control("POST", f"/users/{user['user_id']}/invalidate", {"reason": reason})
    assert result["subcode"] == subcode

    for token, path in (
        (user["access_token"], "/me"),
        (long_token, "/me"),
        (page_token, f"/{page_id}"),
    ):
        error = error_of(graph.get(path, token))
        assert (error["code"], error["error_subcode"]) == (190, subcode)
        assert not error["message"].startswith("(#")
        data = graph.debug(token).json()["data"]
        assert data["is_valid"] is False
        assert (data["error"]["code"], data["error"]["subcode"]) == (190, subcode)
    posted = graph.post(f"/{page_id}/feed", page_token, message="after invalidation")
    assert error_of(posted)["error_subcode"] == subcode

    fresh = graph.control("POST", f"/users/{user['user_id']}/tokens")["access_token"]
    assert graph.get("/me", fresh).status_code == 200


def test_unparseable_token(graph: SandboxClient) -> None:
    response = graph.get("/me", "not-a-token")
    assert response.status_code == 400
    error = error_of(response)
    assert (error["code"], error["message"]) == (
        190,
        "Invalid OAuth access token - Cannot parse access token",
    )

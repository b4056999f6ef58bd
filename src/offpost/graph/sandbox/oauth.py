"""The token endpoints: ``/oauth/access_token``, ``/oauth/client_code`` and ``/debug_token``.

``/oauth/access_token`` (GET or POST, docs/graph.md):

- ``grant_type=fb_exchange_token``: client id and secret must match an app; a
  short-lived user token becomes a long-lived one (60 d, a new string;
  exchanging the same short-lived token again returns that same long-lived
  token); a long-lived token comes back unchanged with its remaining
  ``expires_in`` (F3). Expired or invalidated input fails with 190.
  Only user tokens are exchanged here (Page tokens: 100, *derived*).
- ``code=`` redeems an ``/oauth/client_code`` code: same app, the exact
  ``redirect_uri``, optional ``client_secret`` (checked when given), optional
  ``machine_id`` echoed back; single use, expiring after ``code_ttl_s``.
- ``grant_type=client_credentials``: an app token ``{app_id}|{random}``.

The ``access_token`` parameter is not required on these calls (the client
secret authenticates them); when it is sent with a proof — Meta's business SDK
does that — the proof is verified against it. ``settings.omit_expires_in``
drops ``expires_in`` from the replies (F4).

``/debug_token`` answers HTTP 200 for any decodable input token, with
``is_valid: false`` and ``data.error`` for expired or invalidated ones
(docs/graph.md); the caller must hold an app token of the input token's app.
"""

from __future__ import annotations

import secrets
from typing import Any

from offpost.graph.sandbox import errors
from offpost.graph.sandbox.auth import check_proof, meter, token_problem, valid_token
from offpost.graph.sandbox.params import GraphRequest
from offpost.graph.sandbox.state import DATA_ACCESS_S, App, Token, TokenKind, World


def _client_app(world: World, req: GraphRequest, *, need_secret: bool) -> App:
    client_id = req.params.get("client_id")
    if not client_id:
        raise errors.missing_param("client_id")
    app = world.apps.get(client_id)
    if app is None:
        raise errors.invalid_client_id()
    secret = req.params.get("client_secret")
    if secret is None:
        if need_secret:
            raise errors.missing_param("client_secret")
    elif not secrets.compare_digest(secret.encode(), app.app_secret.encode()):
        raise errors.invalid_client_secret()
    req.ctx.app_id = app.app_id
    return app


def _verify_optional_proof(world: World, req: GraphRequest) -> None:
    """Check a proof sent alongside an ``access_token`` on an OAuth call (never required)."""
    value = req.token_value
    token = world.find_token(value) if value else None
    if token is not None and token.app_id:
        check_proof(world, token, req.params, req.ctx, required=False)


def _expiry(world: World, token: Token, body: dict[str, Any]) -> dict[str, Any]:
    if not world.settings.omit_expires_in and token.expires_at is not None:
        body["expires_in"] = max(0, int(token.expires_at - world.now()))
    return body


def access_token(world: World, req: GraphRequest) -> dict[str, Any]:
    """``/oauth/access_token``: exchange, code redemption or client credentials."""
    grant_type = req.params.get("grant_type")
    code = req.params.get("code")
    app = _client_app(world, req, need_secret=code is None)
    meter(world, req.ctx, app_id=app.app_id, page_id=None, token=None)
    _verify_optional_proof(world, req)
    if grant_type == "fb_exchange_token":
        return _exchange(world, req, app)
    if grant_type == "client_credentials":
        token = world.mint_app_token(app)
        return {"access_token": token.value, "token_type": "bearer"}
    if code is not None:
        return _redeem(world, req, app, code)
    if grant_type:
        raise errors.invalid_param(f"Unsupported grant_type: {grant_type}")
    raise errors.missing_param("code")


def _exchange(world: World, req: GraphRequest, app: App) -> dict[str, Any]:
    value = req.params.get("fb_exchange_token")
    if not value:
        raise errors.missing_param("fb_exchange_token")
    with world.lock:
        token = valid_token(world, value)
        if token.app_id != app.app_id:
            raise errors.cannot_parse_token()
        if token.kind is not TokenKind.USER or token.user_id is None:
            raise errors.invalid_param("fb_exchange_token must be a user access token")
        if token.long_lived:
            long_lived = token
        else:
            previous = world.tokens.get(token.exchanged_to or "")
            if previous is not None and token_problem(world, previous) is None:
                long_lived = previous
            else:
                long_lived = world.mint_user_token(world.users[token.user_id], long_lived=True)
                token.exchanged_to = long_lived.value
        return _expiry(
            world, long_lived, {"access_token": long_lived.value, "token_type": "bearer"}
        )


def _redeem(world: World, req: GraphRequest, app: App, value: str) -> dict[str, Any]:
    with world.lock:
        code = world.codes.get(value)
        if code is None or code.app_id != app.app_id:
            raise errors.code_invalid()
        if code.used:
            raise errors.code_used()
        if world.now() - code.created_at > world.settings.code_ttl_s:
            raise errors.code_expired()
        if req.params.get("redirect_uri") != code.redirect_uri:
            raise errors.redirect_uri_mismatch()
        code.used = True
        token = world.mint_user_token(world.users[code.user_id], long_lived=True)
        body = _expiry(world, token, {"access_token": token.value, "token_type": "bearer"})
    if machine_id := req.params.get("machine_id"):
        body["machine_id"] = machine_id
    return body


def client_code(world: World, req: GraphRequest) -> dict[str, Any]:
    """``/oauth/client_code``: a single-use code for a long-lived user token (docs/graph.md)."""
    app = _client_app(world, req, need_secret=True)
    meter(world, req.ctx, app_id=app.app_id, page_id=None, token=None)
    redirect_uri = req.params.get("redirect_uri")
    if not redirect_uri:
        raise errors.missing_param("redirect_uri")
    if app.redirect_uris is not None and redirect_uri not in app.redirect_uris:
        raise errors.redirect_uri_not_allowed()
    value = req.token_value
    if not value:
        raise errors.missing_param("access_token")
    with world.lock:
        token = valid_token(world, value)
        req.ctx.token_type = token.kind.value
        if token.app_id != app.app_id:
            raise errors.cannot_parse_token()
        check_proof(world, token, req.params, req.ctx, required=False)
        if token.kind is not TokenKind.USER or not token.long_lived:
            raise errors.invalid_param("access_token must be a long-lived user access token")
        return {"code": world.new_code(token, redirect_uri).value}


def debug_token(world: World, req: GraphRequest) -> dict[str, Any]:
    """``/debug_token?input_token=…&access_token=<app token>``."""
    caller_value = req.token_value
    if not caller_value:
        raise errors.debug_caller_required()
    caller = valid_token(world, caller_value)
    req.ctx.token_type = caller.kind.value
    req.ctx.app_id = caller.app_id
    check_proof(world, caller, req.params, req.ctx, required=False)
    if caller.kind is not TokenKind.APP:
        raise errors.debug_caller_required()
    meter(world, req.ctx, app_id=caller.app_id, page_id=None, token=caller)
    input_value = req.params.get("input_token")
    if not input_value:
        raise errors.missing_param("input_token")
    with world.lock:
        token = world.find_token(input_value)
        if token is None or not token.app_id:
            return {
                "data": {
                    "error": {"code": 190, "message": "The access token could not be decrypted"},
                    "is_valid": False,
                    "scopes": [],
                }
            }
        if token.app_id != caller.app_id:
            raise errors.debug_caller_required()
        return {"data": _describe(world, token)}


def _describe(world: World, token: Token) -> dict[str, Any]:
    app = world.apps[token.app_id]
    if token.kind is TokenKind.APP:
        return {
            "app_id": app.app_id,
            "type": "APP",
            "application": app.name,
            "is_valid": True,
            "scopes": [],
        }
    problem = token_problem(world, token)
    user = world.users[token.user_id or ""]
    data: dict[str, Any] = {
        "app_id": app.app_id,
        "type": token.kind.value,
        "application": app.name,
        "data_access_expires_at": int(token.issued_at + DATA_ACCESS_S),
        "expires_at": 0 if token.expires_at is None else int(token.expires_at),
        "is_valid": problem is None,
        "issued_at": int(token.issued_at),
        "scopes": list(token.scopes),
        "granular_scopes": [
            {"scope": scope, "target_ids": list(user.page_ids)}
            if scope.startswith("pages_")
            else {"scope": scope}
            for scope in token.scopes
            if scope != "public_profile"
        ],
        "user_id": user.user_id,
    }
    if token.kind is TokenKind.PAGE:
        data["profile_id"] = token.page_id
    if problem is not None:
        data["error"] = problem.debug_error()
    return data

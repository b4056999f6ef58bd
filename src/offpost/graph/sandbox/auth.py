"""Who is calling: the access token, its validity, its ``appsecret_proof``, and its usage budget.

Order (as Graph does): the token first — unknown/unparseable, expired (463) or
invalidated (460/458/467, 492 for a lost Page role) tokens fail with 190 — then
the proof, then the rate limits.

The proof (docs/graph.md) is checked in both forms: untimed
HMAC(secret, token) and timed HMAC(secret, "token|appsecret_time"). A timed
proof's age is measured against the **real wall clock**, not the sandbox
clock: clients sign with their own wall clock, and moving the sandbox clock to
expire tokens must not make every fresh proof look stale. A timed proof older
than ``proof_max_age_s`` or more than ``proof_future_skew_s`` ahead is
rejected with the same message as a wrong proof (Graph's text for a stale
timed proof is not captured; *derived*). With "Require App Secret" on, a
user/Page-token call without a proof fails; a proof, when present, is
verified for app tokens too.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from offpost.graph.proof import proof_matches
from offpost.graph.sandbox import errors
from offpost.graph.sandbox.calls import CallContext
from offpost.graph.sandbox.state import Token, TokenKind, World
from offpost.graph.sandbox.usage import (
    app_usage_header,
    business_usage_header,
    page_usage_headers,
    percent,
)


def token_problem(world: World, token: Token) -> errors.GraphError | None:
    """Why a known token is no longer usable (190 with a subcode), or ``None``."""
    if token.invalid_subcode is not None:
        return errors.invalidation_error(token.invalid_subcode, token.app_id)
    now = world.now()
    if token.expires_at is not None and now >= token.expires_at:
        return errors.token_expired(token.expires_at, now)
    return None


def valid_token(world: World, value: str) -> Token:
    """The live token with this string; raises the 190 Graph answers otherwise."""
    token = world.find_token(value)
    if token is None:
        raise errors.cannot_parse_token()
    if token.kind is TokenKind.APP and not token.app_id:
        raise errors.bad_app_token_signature()
    problem = token_problem(world, token)
    if problem is not None:
        raise problem
    return token


def check_proof(
    world: World, token: Token, params: dict[str, str], ctx: CallContext, *, required: bool
) -> None:
    """Verify ``appsecret_proof`` for ``token``; record the verdict in ``ctx``.

    Raises the 100 GraphMethodException Graph answers when it is missing (and
    ``required``), wrong, or a timed proof outside the accepted age.
    """
    proof = params.get("appsecret_proof")
    if not proof:
        ctx.proof = "absent"
        if required and world.settings.require_proof:
            raise errors.proof_missing()
        return
    app = world.apps.get(token.app_id)
    raw_time = params.get("appsecret_time")
    ctx.proof_timed = raw_time is not None
    if app is None or not proof.isascii():
        ctx.proof = "invalid"
        raise errors.proof_invalid()
    if raw_time is None:
        ok = proof_matches(app.app_secret, token.value, proof)
    else:
        try:
            signed_at = int(raw_time)
        except ValueError:
            ctx.proof = "invalid"
            raise errors.proof_invalid() from None
        age_s = time.time() - signed_at
        settings = world.settings
        if age_s > settings.proof_max_age_s or -age_s > settings.proof_future_skew_s:
            ctx.proof = "stale"
            raise errors.proof_invalid()
        ok = proof_matches(app.app_secret, token.value, proof, signed_at)
    ctx.proof = "valid" if ok else "invalid"
    if not ok:
        raise errors.proof_invalid()


def authenticate(
    world: World, value: str | None, params: dict[str, str], ctx: CallContext
) -> Token:
    """Token then proof for an ordinary Graph call; records the caller in ``ctx``."""
    if not value:
        raise errors.token_required()
    token = valid_token(world, value)
    ctx.token_type = token.kind.value
    ctx.app_id = token.app_id
    check_proof(world, token, params, ctx, required=token.kind is not TokenKind.APP)
    return token


def meter(
    world: World, ctx: CallContext, *, app_id: str | None, page_id: str | None, token: Token | None
) -> None:
    """Count this call, put the usage headers in ``ctx`` and throttle when over budget.

    Raises 4 (app over budget), 80001 (Page over budget, Page token) or 32
    (Page over budget, user or app token), and counts the throttled call.
    """
    with world.lock:
        settings = world.settings
        now = world.now()
        window = settings.usage_window_s
        page_token = token is not None and token.kind is TokenKind.PAGE
        throttle: errors.GraphError | None = None
        if app_id is not None and not page_token:
            count = world.usage.app_calls(app_id, now, window, add=True)
            ctx.headers.append(app_usage_header(percent(count, settings.app_call_budget)))
            if count > settings.app_call_budget:
                throttle = errors.app_throttled()
                world.usage.app_throttled(app_id)
        if page_id is not None:
            budget = settings.page_budget(page_id)
            count = world.usage.page_calls(page_id, now, window, add=True)
            regain = world.usage.regain_minutes(page_id, now, window, budget)
            ctx.headers.extend(page_usage_headers(page_id, percent(count, budget), regain))
            if count > budget and throttle is None:
                throttle = (
                    errors.page_throttled_page_token()
                    if page_token
                    else errors.page_throttled_user_token()
                )
                world.usage.page_throttled(page_id)
    if throttle is not None:
        raise throttle


def peek_usage(world: World, ctx: CallContext, token_value: str | None) -> None:
    """Usage headers for a reply no handler produced (an injected fault); counts nothing."""
    with world.lock:
        token = world.tokens.get(token_value or "")
        if token is not None and token.kind is TokenKind.PAGE and token.page_id is not None:
            ctx.headers.extend(_page_usage(world, token.page_id))
            return
        app_id = token.app_id if token is not None else world.default_app_id
        ctx.headers.append(_app_usage(world, app_id))


def batch_usage(
    world: World, ctx: CallContext, app_ids: Iterable[str], page_ids: Iterable[str]
) -> None:
    """Usage headers for a batch's own reply, after its items; counts nothing.

    ``X-App-Usage`` for the first of ``app_ids``, ``X-Business-Use-Case-Usage``
    with every Page of ``page_ids``, and ``X-Page-Usage`` only when there is one
    Page (the header has no room for more).
    """
    apps, pages = list(dict.fromkeys(app_ids)), list(dict.fromkeys(page_ids))
    with world.lock:
        if apps:
            ctx.headers.append(_app_usage(world, apps[0]))
        if len(pages) == 1:
            ctx.headers.extend(_page_usage(world, pages[0]))
        elif pages:
            ctx.headers.append(business_usage_header({p: _page_state(world, p) for p in pages}))


def _app_usage(world: World, app_id: str) -> tuple[bytes, bytes]:
    settings = world.settings
    count = world.usage.app_calls(app_id, world.now(), settings.usage_window_s, add=False)
    return app_usage_header(percent(count, settings.app_call_budget))


def _page_state(world: World, page_id: str) -> tuple[int, int]:
    """(percentage used, minutes to regain access) of the Page, counting nothing."""
    settings = world.settings
    now, window, budget = world.now(), settings.usage_window_s, settings.page_budget(page_id)
    count = world.usage.page_calls(page_id, now, window, add=False)
    return percent(count, budget), world.usage.regain_minutes(page_id, now, window, budget)


def _page_usage(world: World, page_id: str) -> list[tuple[bytes, bytes]]:
    return page_usage_headers(page_id, *_page_state(world, page_id))

"""``appsecret_proof``: the HMAC that binds an access token to the app secret.

Two forms exist (docs/graph.md):

- timed (what Meta documents today): HMAC-SHA256(key=app secret,
  msg="<access token>|<appsecret_time>"), sent with ``appsecret_time``;
  Graph rejects a timed proof older than 300 s.
- legacy, untimed: HMAC-SHA256(key=app secret, msg=<access token>), which
  Meta's own SDKs still send.

Both the client and the sandbox use these functions, so they cannot drift.
"""

from __future__ import annotations

import hashlib
import hmac

#: How old a timed proof may be before Graph rejects it.
PROOF_MAX_AGE_S = 300


def appsecret_proof(app_secret: str, access_token: str, appsecret_time: int | None = None) -> str:
    """Return the hex proof for ``access_token``; timed when ``appsecret_time`` is given."""
    message = access_token if appsecret_time is None else f"{access_token}|{appsecret_time}"
    return hmac.new(app_secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def proof_params(app_secret: str, access_token: str, *, timed: bool, now_s: int) -> dict[str, str]:
    """The query parameters that carry the proof for one call made at ``now_s``."""
    if not timed:
        return {"appsecret_proof": appsecret_proof(app_secret, access_token)}
    return {
        "appsecret_proof": appsecret_proof(app_secret, access_token, now_s),
        "appsecret_time": str(now_s),
    }


def proof_matches(
    app_secret: str,
    access_token: str,
    proof: str,
    appsecret_time: int | None = None,
) -> bool:
    """Whether ``proof`` is the right one for this token (compared in constant time)."""
    expected = appsecret_proof(app_secret, access_token, appsecret_time)
    return hmac.compare_digest(expected, proof.lower())

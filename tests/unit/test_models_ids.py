"""Prefixed random ids, API keys and the idempotency request digest."""

from __future__ import annotations

import re

import pytest

from offpost.models.client import API_KEY_PREFIX, hash_api_key, key_matches, new_api_key
from offpost.models.idempotency import request_hash
from offpost.models.ids import ID_LENGTH, RANDOM_LENGTH, IdPrefix, id_factory, is_id, new_id
from offpost.models.webhook import WEBHOOK_SECRET_PREFIX, new_webhook_secret


@pytest.mark.parametrize("prefix", list(IdPrefix))
def test_an_id_is_its_prefix_and_twenty_alphanumerics(prefix: IdPrefix) -> None:
    value = new_id(prefix)
    assert re.fullmatch(rf"{prefix.value}_[0-9A-Za-z]{{{RANDOM_LENGTH}}}", value)
    assert len(value) <= ID_LENGTH
    assert is_id(value, prefix)


def test_the_documented_prefixes() -> None:
    assert new_id(IdPrefix.CREDENTIAL).startswith("cred_")
    assert new_id(IdPrefix.POST).startswith("post_")
    assert new_id(IdPrefix.SCHEDULE).startswith("sched_")


def test_ids_do_not_repeat() -> None:
    ids = {new_id(IdPrefix.POST) for _ in range(10_000)}
    assert len(ids) == 10_000


def test_ids_use_the_whole_alphabet() -> None:
    # A generator stuck on a few characters would pass the format test.
    characters = set("".join(new_id(IdPrefix.POST)[5:] for _ in range(500)))
    assert len(characters) == 62


@pytest.mark.parametrize(
    "value",
    [
        "cred_0123456789abcdefghij",  # another kind
        "post_0123456789abcdefghi",  # too short
        "post_0123456789abcdefghijk",  # too long
        "post_0123456789abcdefgh-j",  # not alphanumeric
        "POST_0123456789abcdefghij",
        "post0123456789abcdefghij",
        "",
    ],
)
def test_is_id_rejects_anything_else(value: str) -> None:
    assert not is_id(value, IdPrefix.POST)


def test_the_column_default_factory_makes_ids() -> None:
    factory = id_factory(IdPrefix.ATTEMPT)
    assert is_id(factory(), IdPrefix.ATTEMPT)
    assert factory() != factory()
    assert repr(factory) == "id_factory(ATTEMPT)"


def test_an_api_key_is_prefixed_random_and_stored_as_its_sha256() -> None:
    key = new_api_key()
    assert key.startswith(API_KEY_PREFIX)
    assert len(key) >= len(API_KEY_PREFIX) + 43  # 32 random bytes, base64
    assert key != new_api_key()
    digest = hash_api_key(key)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert key_matches(key, digest)
    assert not key_matches(key + "x", digest)


def test_the_key_hash_is_plain_sha256() -> None:
    # Other tools (and the admin's shell) may compute it: keep it standard.
    assert hash_api_key("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_a_webhook_secret_is_prefixed_and_random() -> None:
    secret = new_webhook_secret()
    assert secret.startswith(WEBHOOK_SECRET_PREFIX)
    assert secret != new_webhook_secret()


def test_the_request_digest_ignores_key_order_but_not_values() -> None:
    first = request_hash("post", "/v1/posts", {"message": "hi", "target": "1"})
    assert first == request_hash("POST", "/v1/posts", {"target": "1", "message": "hi"})
    assert first != request_hash("POST", "/v1/posts", {"target": "1", "message": "hi!"})
    assert first != request_hash("POST", "/v1/posts/batch", {"target": "1", "message": "hi"})

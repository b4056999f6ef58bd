"""Signatures: what offpost sends, checked by the verifiers docs/webhooks.md gives receivers.

The snippets are read out of the document and run as written, so the
documentation cannot drift from what offpost signs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from offpost.workers.webhooks import signature, signature_header

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "webhooks.md"
README = ROOT / "README.md"
SECRET = "whsec_test-secret-0123456789"
BODY = b'{"id":"evt_0vB4kq9TzLr2mWc8xYpA","type":"post.published","data":{"message":"h\xc3\xa9"}}'

Verifier = Callable[..., bool]


def documented_snippet(marker: str, doc: Path = DOC) -> str:
    """The fenced code block right after ``<!-- marker -->`` in ``doc``."""
    text = doc.read_text(encoding="utf-8")
    match = re.search(rf"<!-- {marker} -->\s*```\w+\n(.*?)```", text, re.DOTALL)
    assert match is not None, f"no {marker} snippet in {doc}"
    return match.group(1)


@pytest.fixture(scope="module")
def verify() -> Verifier:
    namespace: dict[str, Any] = {}
    exec(documented_snippet("verify-python"), namespace)
    function: Verifier = namespace["verify_offpost_signature"]
    return function


def test_the_readme_shows_the_same_verifier() -> None:
    assert documented_snippet("verify-python", README) == documented_snippet("verify-python")


def test_the_header_has_the_documented_shape() -> None:
    header = signature_header(SECRET, BODY, 1764576003)
    assert re.fullmatch(r"t=1764576003,v1=[0-9a-f]{64}", header)
    assert header.endswith(signature(SECRET, BODY, 1764576003))


def test_a_fresh_signature_verifies(verify: Verifier) -> None:
    now = int(time.time())
    assert verify(SECRET, BODY, signature_header(SECRET, BODY, now))


def test_a_tampered_body_is_refused(verify: Verifier) -> None:
    now = int(time.time())
    header = signature_header(SECRET, BODY, now)
    assert not verify(SECRET, BODY.replace(b"published", b"failed"), header)
    assert not verify(SECRET, BODY + b" ", header)


def test_another_secret_is_refused(verify: Verifier) -> None:
    now = int(time.time())
    assert not verify("whsec_another", BODY, signature_header(SECRET, BODY, now))


@pytest.mark.parametrize(("age_s", "valid"), [(0, True), (299, True), (301, False), (-301, False)])
def test_the_timestamp_tolerance(verify: Verifier, age_s: int, valid: bool) -> None:
    signed_at = 1764576003
    header = signature_header(SECRET, BODY, signed_at)
    assert verify(SECRET, BODY, header, now=signed_at + age_s) is valid


def test_a_retimestamped_signature_is_refused(verify: Verifier) -> None:
    now = int(time.time())
    v1 = signature(SECRET, BODY, now - 1000)
    assert not verify(SECRET, BODY, f"t={now},v1={v1}")


@pytest.mark.parametrize("header", ["", "t=1", "v1=ab", "t=x,v1=ab", "garbage"])
def test_a_malformed_header_is_refused(verify: Verifier, header: str) -> None:
    assert not verify(SECRET, BODY, header)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
@pytest.mark.parametrize(("body", "expected"), [(BODY, "valid"), (BODY + b"x", "invalid")])
def test_the_documented_shell_check(tmp_path: Path, body: bytes, expected: str) -> None:
    (tmp_path / "body.json").write_bytes(body)
    header = signature_header(SECRET, BODY, int(time.time()))
    result = subprocess.run(
        ["sh", "-c", documented_snippet("verify-shell")],
        cwd=tmp_path,
        env={**os.environ, "HEADER": header, "SECRET": SECRET},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert result.stdout.strip() == expected

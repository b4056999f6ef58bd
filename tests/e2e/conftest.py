"""What the browser tests share: Debian's Chromium, driven by Playwright."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import service_missing

CHROMIUM = os.environ.get("OFFPOST_TEST_CHROMIUM", "/usr/bin/chromium")
# Everything that would make the browser reach beyond this machine is off.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser_context(tmp_path: Path) -> Iterator[Any]:
    """A fresh Chromium profile driven by Playwright (skips locally, fails under CI)."""
    try:
        from playwright.sync_api import sync_playwright  # noqa: PLC0415 - optional until here
    except ImportError as exc:
        service_missing("the playwright package", exc)
    if shutil.which(CHROMIUM) is None:
        service_missing(f"Chromium at {CHROMIUM}", FileNotFoundError(CHROMIUM))
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            context.close()

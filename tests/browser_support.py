"""Debian's Chromium under Playwright, for the dashboard's browser tests.

Importing this module skips the importing test module when Chromium or
Playwright is missing. Playwright never downloads a browser here: it drives
``/usr/bin/chromium``. ``browser`` is the fixture (import ``browser_fixture``);
:func:`chromium` launches one with extra flags.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
# Headless on a machine with no network but loopback: without the
# background-networking flags Chromium keeps trying (and failing) to reach
# Google's hosts.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

if not os.path.exists(CHROMIUM):
    pytest.skip("chromium is not installed (apt-get install chromium)", allow_module_level=True)
playwright_api = pytest.importorskip(
    "playwright.async_api", reason="playwright is not installed (pip install playwright)"
)


@asynccontextmanager
async def chromium(*extra_args: str) -> AsyncIterator[Any]:
    """A headless Chromium with the common flags and ``extra_args``."""
    async with playwright_api.async_playwright() as p:
        instance = await p.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *extra_args]
        )
        try:
            yield instance
        finally:
            await instance.close()


@pytest.fixture(name="browser")
async def browser_fixture() -> AsyncIterator[Any]:
    async with chromium() as instance:
        yield instance

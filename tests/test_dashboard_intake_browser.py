"""The administrator's drop counter in the page footer, and nothing hostile on the page.

A real dashboard, broker and Chromium (skips without them): a state nested
1,500 levels deep and an event of an unknown type arrive; the footer counts
them by reason, while the page shows no tile and no alert for them.
"""

from __future__ import annotations

import time
from typing import Any

from browser_support import browser_fixture  # noqa: F401  (the fixture is used by name)
from test_dashboard_support import (  # noqa: F401  (the fixture is used by name)
    broker_url_fixture,
    event_json,
    running,
    state_json,
)


async def test_the_footer_counts_dropped_messages_and_the_page_shows_none_of_them(
    broker_url: str, browser: Any
) -> None:
    async with running(broker_url) as (service, peer):
        await peer.publish("patients/p-001/state", state_json("p-001", time.time()), retain=True)
        page = await browser.new_page()
        await page.goto(service.url)
        await page.locator('.tile[data-patient-id="p-001"]').wait_for()
        deep = b'{"patient_id": ' + b"[" * 1500 + b"]" * 1500 + b"}"
        await peer.publish("patients/p-666/state", deep, retain=True)
        _id, unknown = event_json("p-667", "skin_temperature_high", time.time())
        await peer.publish("patients/p-667/events", unknown)
        footer = page.locator("#intake", has_text="2 bad broker message(s) dropped")
        await footer.wait_for(timeout=15_000)
        text = await footer.inner_text()
        assert "too_deep 1" in text and "unknown_type 1" in text
        assert await page.locator(".tile").count() == 1
        assert await page.locator("[data-event-id], .feed li").count() == 0
        await peer.publish("patients/p-666/state", b"", retain=True)

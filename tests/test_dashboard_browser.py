"""The dashboard in a real browser (Playwright driving Debian's Chromium).

A private broker, the real DashboardService, and realistic state/event
messages published on the broker like a gateway does. Checks what a
physiotherapist sees: tiles update, a fall appears (and how fast), clicking
Acknowledge publishes the ack on the broker and stops the escalation, an
unacknowledged fall escalates (shortened timeout), 50 patients fit a tablet.
Saves artifacts/dashboard.png. Skips when chromium or playwright is absent.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from browser_support import ARTIFACTS, browser_fixture  # noqa: F401  (the fixture is used by name)
from test_dashboard_support import (  # noqa: F401  (the fixture is used by name)
    JumpClock,
    broker_url_fixture,
    event_json,
    running,
    state_json,
)

from physio.dashboard.auth import Credentials, hash_secret
from physio.dashboard.escalation import EscalationPolicy

# Records, in the page, when each fall banner first appeared (epoch ms), so the
# delay from the broker to the screen is measured on the page's own clock
# (the same machine clock as the test's).
OBSERVER_JS = """
() => {
  window.__fallSeen = {};
  new MutationObserver(() => {
    for (const node of document.querySelectorAll('.fall-banner[data-event-id]')) {
      const id = node.dataset.eventId;
      if (!(id in window.__fallSeen)) {
        window.__fallSeen[id] = performance.timeOrigin + performance.now();
      }
    }
  }).observe(document.body, {childList: true, subtree: true});
}
"""


async def test_physiotherapist_sees_tiles_falls_acks_and_escalations(
    broker_url: str, browser: Any
) -> None:
    clock = JumpClock()
    async with running(
        broker_url, clock, escalation=EscalationPolicy(120.0, 240.0), summary_interval_s=0.5
    ) as (service, peer):
        await peer.publish(
            "gateways/ward-3/status",
            b'{"gateway_id": "ward-3", "status": "online", '
            b'"time": "2026-11-24T08:00:00.000Z", "metrics": {}}',
            retain=True,
        )
        now = time.time()
        for i in range(60):  # a minute of history for the charts
            t = now - 60 + i
            await peer.publish(
                "patients/p-001/state", state_json("p-001", t, 8.0 + i % 5), qos=0, retain=True
            )
            await peer.publish(
                "patients/p-002/state",
                state_json("p-002", t, 20.0 + i / 3, slouching=i > 40, battery_pct=14.0),
                qos=0,
                retain=True,
            )
        await peer.publish(
            "patients/p-003/state",
            state_json(
                "p-003", now, None, device_connected=False, activity="unknown", lateral_deg=None
            ),
            qos=0,
            retain=True,
        )
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        await page.goto(service.url)
        await page.fill("#by-name", "Physio Pia")
        await page.dispatch_event("#by-name", "change")
        tiles = page.locator(".tile")
        await tiles.nth(2).wait_for()
        assert await tiles.count() == 3
        p2 = page.locator('.tile[data-patient-id="p-002"]')
        await p2.locator('[data-field="posture"]', has_text="slouching").wait_for()
        assert await p2.locator('[data-field="flexion"]').inner_text() == "40°"
        assert await p2.locator('[data-field="battery"]').inner_text() == "battery 14%"
        assert "online" in await p2.locator('[data-field="gateway"]').inner_text()
        assert len((await p2.locator(".flexion-line").get_attribute("points") or "").split()) > 30
        assert await p2.locator(".threshold").get_attribute("visibility") == "visible"
        p3 = page.locator('.tile[data-patient-id="p-003"]')
        assert await p3.locator('[data-field="connected"]').inner_text() == "wearable disconnected"

        # Live update of a tile.
        await peer.publish(
            "patients/p-001/state", state_json("p-001", time.time(), 33.0, slouching=True), qos=0
        )
        p1 = page.locator('.tile[data-patient-id="p-001"]')
        await p1.locator('[data-field="flexion"]', has_text="33°").wait_for()

        # Falls: measure broker -> screen delay, then handle one and leave one.
        await page.evaluate(OBSERVER_JS)
        delays_s: list[float] = []
        fall_ids: list[str] = []
        for patient in ("p-001", "p-002", "p-001", "p-002", "p-003"):
            event_id, payload = event_json(patient, "fall_detected", time.time())
            sent_s = time.time()
            await peer.publish(f"patients/{patient}/events", payload)
            banner = page.locator(f'.fall-banner[data-event-id="{event_id}"]')
            await banner.wait_for()
            seen_ms = await page.evaluate(f"window.__fallSeen[{event_id!r}]")
            delays_s.append(seen_ms / 1000 - sent_s)
            fall_ids.append(event_id)
        handled, unhandled = fall_ids[0], fall_ids[1]
        feed_item = page.locator(f'.feed .alert[data-event-id="{handled}"]')
        assert "sev-high" in (await feed_item.get_attribute("class") or "")

        await page.locator(
            f'.fall-banner[data-event-id="{handled}"] button[data-action="acknowledged"]'
        ).click()
        acks = await peer.wait_for("/patients/p-001/acks")
        assert acks[0]["event_id"] == handled and acks[0]["action"] == "acknowledged"
        assert acks[0]["by"] == "Physio Pia"
        await page.locator(
            f'.fall-banner.status-acknowledged[data-event-id="{handled}"]'
        ).wait_for()

        # Two minutes later: the unacknowledged falls escalate, the acknowledged one not.
        clock.advance(121.0)
        escalated = page.locator(f'.fall-banner[data-event-id="{unhandled}"] .esc')
        await escalated.wait_for()
        assert "level 1" in await escalated.inner_text()
        escalations = await peer.wait_for(f"{peer.root}/escalations", len(fall_ids) - 1)
        assert {(e["event_id"], e["level"]) for e in escalations} == {
            (event_id, 1) for event_id in fall_ids if event_id != handled
        }

        # Resolving takes a fall off the banner; the feed keeps it as resolved.
        for event_id in fall_ids[2:]:
            await page.locator(
                f'.fall-banner[data-event-id="{event_id}"] button[data-action="resolved"]'
            ).click()
            await page.locator(f'.fall-banner[data-event-id="{event_id}"]').wait_for(
                state="detached"
            )
        resolved = await peer.wait_for("/acks", 4)
        assert {a["event_id"] for a in resolved if a["action"] == "resolved"} == set(fall_ids[2:])
        assert await page.locator(".fall-banner").count() == 2
        assert await page.locator(".feed .alert.status-resolved").count() == 3

        ARTIFACTS.mkdir(exist_ok=True)
        await page.locator('.tile[data-patient-id="p-002"] .day-btn').click()
        await page.locator('#day-totals [data-total="upright_pct"]').wait_for()
        await page.wait_for_function(
            "document.getElementById('day-plot').complete && "
            "document.getElementById('day-plot').naturalWidth > 0",
            timeout=30_000,
        )
        assert await page.locator('#day-totals [data-total="falls"] dd').inner_text() == "2"
        await page.screenshot(path=str(ARTIFACTS / "dashboard_day.png"))
        await page.keyboard.press("Escape")
        await page.screenshot(path=str(ARTIFACTS / "dashboard.png"))

        # The gateway's Last Will: every one of its patients is flagged.
        await peer.publish(
            "gateways/ward-3/status",
            b'{"gateway_id": "ward-3", "status": "offline", "time": "2026-11-24T08:00:00.000Z"}',
            retain=True,
        )
        warning = page.locator('.warning[data-gateway-id="ward-3"]')
        await warning.wait_for()
        assert "3 patient(s) not monitored" in await warning.inner_text()
        assert "offline" in await p2.locator('[data-field="gateway"]').inner_text()
        await page.close()
        # Works offline: nothing was fetched from anywhere but the dashboard.
        assert requested and all(url.startswith(service.url) for url in requested)

    median_s, worst_s = statistics.median(delays_s), max(delays_s)
    print(
        f"\nfall event broker->browser delay: median {median_s * 1000:.0f} ms, "
        f"max {worst_s * 1000:.0f} ms over {len(delays_s)} falls"
    )
    (ARTIFACTS / "fall_latency.txt").write_text(
        "broker publish -> fall banner in the browser, ms: "
        + ", ".join(f"{d * 1000:.0f}" for d in delays_s)
        + "\n"
    )
    # A figure, not a limit: on a loaded machine it is the machine's delay.


async def test_fifty_patients_fit_a_tablet(broker_url: str, browser: Any) -> None:
    async with running(broker_url) as (service, peer):
        now = time.time()
        await asyncio.gather(
            *(
                peer.publish(
                    f"patients/p-{n:03d}/state",
                    state_json(f"p-{n:03d}", now, 5.0 + n, slouching=n % 7 == 0),
                    qos=0,
                )
                for n in range(50)
            )
        )
        for width, height in ((1024, 768), (768, 1024)):
            page = await browser.new_page(viewport={"width": width, "height": height})
            await page.goto(service.url)
            await page.locator(".tile").nth(49).wait_for()
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"horizontal scrolling at {width}x{height}"
            columns = await page.evaluate(
                "getComputedStyle(document.getElementById('tiles'))"
                ".gridTemplateColumns.split(' ').length"
            )
            assert columns >= 2
            await page.close()


async def test_login_page_guards_the_dashboard(broker_url: str, browser: Any) -> None:
    credentials = Credentials(users={"anna": hash_secret("correct horse")})
    async with running(broker_url, credentials=credentials) as (service, peer):
        await peer.publish("patients/p-010/state", state_json("p-010", time.time()), qos=0)
        page = await browser.new_page()
        await page.goto(service.url)
        assert page.url.endswith("/login")
        await page.fill('input[name="name"]', "anna")
        await page.fill('input[name="secret"]', "wrong")
        await page.click('button[type="submit"]')
        await page.locator("#failed").wait_for(state="visible")
        await page.fill('input[name="name"]', "anna")
        await page.fill('input[name="secret"]', "correct horse")
        await page.click('button[type="submit"]')
        await page.locator('.tile[data-patient-id="p-010"]').wait_for()
        assert await page.locator("#user").inner_text() == "Logged in as anna"
        await page.close()

"""The alarm a nurse cannot miss, in a real browser (Playwright driving Debian's Chromium).

A private Mosquitto, the real DashboardService with a patients file and a
webhook recipient, an aiohttp server in the test as that recipient. Checks:
the fall sounds again and again until acknowledged (counted through the
page's ``window.postureAlarm`` hook), the tab title flashes, the escalation
reaches the webhook within a second of its due time, the tiles never
contradict the alarm (fall shown, offline gateway = not monitored), a slouch
closes itself and a fall does not. Saves artifacts/dashboard_alarm.png.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from browser_support import ARTIFACTS, browser_fixture  # noqa: F401  (the fixture is used by name)
from test_dashboard_notify import Receiver, receiving
from test_dashboard_support import (  # noqa: F401  (the fixture is used by name)
    broker_url_fixture,
    event_json,
    running,
    state_json,
)

from physio.dashboard.escalation import EscalationPolicy
from physio.dashboard.patients import PatientDirectory
from physio.dashboard.site import NotifySettings, WebhookTarget

PATIENTS = PatientDirectory.from_mapping(
    {
        "patients": {
            "p-001": {"name": "Jürgen Groß", "room": "3.12", "bed": "A"},
            "p-002": {"name": "Erika Mustermann", "room": "3.14"},
            "p-003": {"name": "Zoë Weiß", "room": "4.02", "bed": "B"},
        }
    }
)


def online(gateway_id: str, up: bool = True) -> bytes:
    status = "online" if up else "offline"
    return (
        f'{{"gateway_id": "{gateway_id}", "status": "{status}", '
        f'"time": "2026-11-24T08:00:00.000Z"}}'
    ).encode()


@pytest.fixture
async def page(browser: Any) -> Any:
    # Notifications allowed, as a nurse would on the ward tablet.
    context = await browser.new_context(
        viewport={"width": 1280, "height": 860}, permissions=["notifications"]
    )
    try:
        yield await context.new_page()
    finally:
        await context.close()


async def test_alarm_repeats_until_acknowledged_and_escalation_reaches_the_webhook(
    broker_url: str, page: Any
) -> None:
    pager = Receiver()
    async with receiving(pager) as pager_url:
        notify = NotifySettings(webhooks=(WebhookTarget("ward pager", pager_url),))
        async with running(
            broker_url,
            escalation=EscalationPolicy(2.0, 60.0),
            notify=notify,
            patients=PATIENTS,
        ) as (service, peer):
            await peer.publish("gateways/ward-3/status", online("ward-3"), retain=True)
            await peer.publish("patients/p-001/state", state_json("p-001", time.time()), qos=0)
            # A short repeat period keeps the test quick; the default is 4 s.
            await page.goto(service.url + "?alarm_every_s=0.3")
            gate = page.locator("#sound-gate")
            await gate.wait_for(state="visible")
            await page.locator("#sound-on").click()  # the one tap browsers need for sound
            await gate.wait_for(state="hidden")
            await page.fill("#by-name", "Dr Müller")
            await page.dispatch_event("#by-name", "change")
            tile = page.locator('.tile[data-patient-id="p-001"]')
            await tile.locator('[data-field="posture"]', has_text="posture ok").wait_for()
            assert await tile.locator('[data-field="patient"]').inner_text() == "Jürgen Groß"
            assert "room 3.12 · bed A" in await tile.locator('[data-field="where"]').inner_text()

            fall_id, payload = event_json("p-001", "fall_detected", time.time())
            await peer.publish("patients/p-001/events", payload)
            banner = page.locator(f'.fall-banner[data-event-id="{fall_id}"]')
            await banner.wait_for(timeout=3000)
            assert "Jürgen Groß (room 3.12 · bed A)" in await banner.inner_text()
            # The tile shows the fall, never "posture ok", while it is open.
            posture = tile.locator('[data-field="posture"]')
            await posture.filter(has_text="FALL at").wait_for(timeout=2000)
            assert "fall" in (await tile.get_attribute("class") or "")
            # The alarm sounds again and again, and the tab title flashes.
            await page.wait_for_function("() => window.postureAlarm.beeps >= 3", timeout=5000)
            await page.wait_for_function("() => document.title.includes('FALL')", timeout=3000)
            assert await page.evaluate("window.postureAlarm.sounded") >= 1  # audio really ran
            assert await page.evaluate("window.postureAlarm.lastLevel") == 0
            # Notifications were allowed: one system notification for the new fall.
            assert await page.evaluate("window.postureAlarm.notifications") == 1

            ARTIFACTS.mkdir(exist_ok=True)
            # Escalation level 1 reaches the pager within a second of its due time.
            await pager.wait(lambda: len(pager.received) == 1, timeout_s=10.0)
            received_s, notice = pager.received[0]
            due_s = service.notifier.statuses[(fall_id, 1, "ward pager")].due_s
            delay_s = received_s - due_s
            print(f"\nescalation due -> webhook received: {delay_s * 1000:.0f} ms")
            (ARTIFACTS / "escalation_latency.txt").write_text(
                f"escalation level 1 due -> webhook received, ms: {delay_s * 1000:.0f}\n"
            )
            assert 0.0 <= delay_s < 1.0
            assert (notice["event_id"], notice["level"]) == (fall_id, 1)
            assert notice["patient"]["name"] == "Jürgen Groß"
            # ... and the page sounds the escalated alarm, and shows the notice went out.
            await page.wait_for_function("() => window.postureAlarm.lastLevel === 1", timeout=3000)
            assert await page.evaluate("window.postureAlarm.notifications") == 2  # escalated
            await banner.locator(".esc", has_text="level 1").wait_for(timeout=3000)
            await banner.locator(
                '[data-field="notices"]', has_text="ward pager (level 1) ✓"
            ).wait_for(timeout=3000)
            await page.screenshot(path=str(ARTIFACTS / "dashboard_alarm.png"))

            # Acknowledged: the sound and the flashing stop, the fall stays shown.
            beeps_before = await page.evaluate("window.postureAlarm.beeps")
            await banner.locator('button[data-action="acknowledged"]').click()
            acks = await peer.wait_for("/patients/p-001/acks", timeout_s=3)
            assert acks[0]["by"] == "Dr Müller"
            await page.locator(
                f'.fall-banner.status-acknowledged[data-event-id="{fall_id}"]'
            ).wait_for(timeout=2000)
            await page.wait_for_function(
                "() => window.postureAlarm.ringing === false", timeout=2000
            )
            assert await page.evaluate("window.postureAlarm.timer") is None
            assert await page.title() == "(1) Posture monitor"
            assert await page.evaluate("window.postureAlarm.beeps") >= beeps_before
            assert "FALL at" in await posture.inner_text()  # acknowledged is not resolved


async def test_tiles_never_contradict_the_alarm(broker_url: str, page: Any) -> None:
    async with running(broker_url, patients=PATIENTS) as (service, peer):
        now = time.time()
        await peer.publish("gateways/ward-3/status", online("ward-3"), retain=True)
        await peer.publish("gateways/ward-9/status", online("ward-9"), retain=True)
        await peer.publish("patients/p-001/state", state_json("p-001", now), qos=0)
        await peer.publish("patients/p-002/state", state_json("p-002", now), qos=0)
        await peer.publish(
            "patients/p-003/state", state_json("p-003", now, gateway_id="ward-9"), qos=0
        )
        await page.goto(service.url)
        tiles = {pid: page.locator(f'.tile[data-patient-id="{pid}"]') for pid in PATIENTS.patients}
        for tile in tiles.values():
            await tile.locator('[data-field="posture"]', has_text="posture ok").wait_for()

        # A fall the wearable then withdrew still shows, and still needs a person.
        fall_id, payload = event_json("p-002", "fall_detected", time.time())
        await peer.publish("patients/p-002/events", payload)
        p2_posture = tiles["p-002"].locator('[data-field="posture"]')
        await p2_posture.filter(has_text="FALL at").wait_for(timeout=2000)
        _cancel_id, cancel = event_json("p-002", "fall_cancelled", time.time(), severity="info")
        await peer.publish("patients/p-002/events", cancel)
        await page.locator(f'.fall-banner.cancelled[data-event-id="{fall_id}"]').wait_for(
            timeout=2000
        )
        assert "(got up)" in await p2_posture.inner_text()
        await page.wait_for_function("() => window.postureAlarm.ringing === false", timeout=2000)

        # A gateway lost: its patients are not monitored, whatever their last state said.
        await peer.publish("gateways/ward-9/status", online("ward-9", up=False), retain=True)
        p3_link = tiles["p-003"].locator('[data-field="connected"]')
        await p3_link.filter(has_text="not monitored since").wait_for(timeout=2000)
        assert (
            "not monitored" in await tiles["p-003"].locator('[data-field="posture"]').inner_text()
        )
        assert await tiles["p-001"].locator('[data-field="connected"]').inner_text() == (
            "wearable connected"
        )

        # A slouch reminder closes itself when the slouch ends; nobody clicks it away.
        slouch_id, slouch = event_json("p-001", "slouch_started", time.time(), severity="low")
        await peer.publish("patients/p-001/events", slouch)
        item = page.locator(f'.feed .alert[data-event-id="{slouch_id}"]')
        await item.locator("button[data-action='resolved']").wait_for(timeout=2000)
        _end_id, end = event_json("p-001", "slouch_ended", time.time(), severity="info")
        await peer.publish("patients/p-001/events", end)
        await item.locator('[data-field="status"]', has_text="closed by itself").wait_for(
            timeout=2000
        )
        assert await item.locator("button").count() == 0
        # The fall of p-002 is still open: falls never close themselves.
        assert service.model.alert(fall_id)["status"] == "open"  # type: ignore[index]
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "dashboard_tiles.png"))

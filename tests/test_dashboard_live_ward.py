"""The dashboard fed by the real gateway on the simulated demo ward.

Simulated wearables → gateway → engine → private Mosquitto → dashboard
service → Chromium: the physiotherapist sees three live tiles, the faller's
fall appears as a banner, and acknowledging it publishes the ack on the
broker. Saves artifacts/dashboard_live.png.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from browser_support import ARTIFACTS, browser_fixture  # noqa: F401  (the fixture is used by name)
from test_dashboard_support import broker_url_fixture, running  # noqa: F401
from ward import gateway_running

from alerts import AlertPublisher, MqttSettings
from posture_monitor.demo import demo_config
from simulator import SimulatedWorld, demo_scenario

SPEED = 6.0


# A live ward in real time plus a browser: with both cores busy it takes
# minutes; the timeouts here only catch a hang.
@pytest.mark.timeout(300)
async def test_dashboard_shows_the_live_ward(broker_url: str, browser: Any) -> None:
    scenario = demo_scenario(3)
    config = demo_config(scenario)
    async with (
        running(broker_url) as (service, peer),
        SimulatedWorld(scenario, seed=7, speed=SPEED) as world,
        AlertPublisher(
            MqttSettings.from_url(broker_url), gateway_id=config.gateway_id, topic_root=peer.root
        ) as publisher,
        gateway_running(config, publisher, world),
    ):
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        await page.goto(service.url)
        await page.fill("#by-name", "Physio Sam")
        await page.dispatch_event("#by-name", "change")
        await page.locator(".tile").nth(2).wait_for(timeout=60_000)
        assert await page.locator(".tile").count() == 3

        # The sloucher's tile shows the slouch, live from the engine.
        sloucher = page.locator('.tile[data-patient-id="p-001"]')
        await sloucher.locator('[data-field="posture"]', has_text="slouching").wait_for(
            timeout=60_000
        )
        # The faller's fall becomes a banner (the fall is at 35 s).
        banner = page.locator(".fall-banner").filter(has_text="p-002")
        await banner.wait_for(timeout=60_000)
        event_id = await banner.get_attribute("data-event-id")
        falls = [e for e in peer.on("/patients/p-002/events") if e["type"] == "fall_detected"]
        assert [f["event_id"] for f in falls] == [event_id]

        await banner.locator('button[data-action="acknowledged"]').click()
        acks = await peer.wait_for("/patients/p-002/acks")
        assert acks[0] == {
            **acks[0],
            "event_id": event_id,
            "action": "acknowledged",
            "by": "Physio Sam",
        }
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(Path(ARTIFACTS) / "dashboard_live.png"))
        # Nothing but the sloucher and the faller raised a posture alert.
        control = [json.dumps(e) for e in peer.on("/patients/p-003/events")]
        assert not any("slouch_started" in e or "fall_detected" in e for e in control)
        await page.close()

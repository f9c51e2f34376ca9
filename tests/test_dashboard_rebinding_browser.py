"""DNS rebinding and cross-origin pages against the dashboard, in real Chromium.

Issue 14, finding 4: in Chromium a page from a foreign origin read every
patient and resolved a fall. Chromium here resolves ``evil.example`` to
127.0.0.1 (``--host-resolver-rules``), exactly what a rebinding DNS server
does after the attacker's page has loaded. The attacker's page is served
for ``http://evil.example:<dashboard port>/`` by Playwright (as the
attacker's server would, before the rebind); its scripts then talk to the
dashboard as a same-origin page, with ``Host: evil.example:<port>``.
Skips when chromium or playwright is absent.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from browser_support import chromium
from test_dashboard_support import (  # noqa: F401  (the fixture is used by name)
    broker_url_fixture,
    event_json,
    free_port,
    running,
)

REBINDING_ARGS = (
    "--host-resolver-rules=MAP evil.example 127.0.0.1",
    # Chromium's Private/Local Network Access would block the attacker's page
    # (loaded from "the internet") from fetching a loopback address. Firefox and
    # Safari have no such check, so the dashboard must not rely on it: it is off.
    "--disable-features=BlockInsecurePrivateNetworkRequests,"
    "PrivateNetworkAccessSendPreflights,PrivateNetworkAccessRespectPreflightResults,"
    "LocalNetworkAccessChecks",
)


# What the attacker's page does once evil.example points at the dashboard:
# read the patients, then resolve the fall the way the real page does.
ATTACK_JS = """
async () => {
  const out = {};
  const snap = await fetch("/api/snapshot");
  out.snapshot_status = snap.status;
  out.snapshot_text = (await snap.text()).slice(0, 2000);
  let token = "";
  try { token = JSON.parse(out.snapshot_text).csrf_token || ""; } catch (e) {}
  const ack = await fetch(`/api/alerts/${window.FALL_ID}/ack`, {
    method: "POST",
    headers: {"Content-Type": "application/json", "X-Requested-With": "posture-dashboard",
              "X-CSRF-Token": token},
    body: JSON.stringify({action: "resolved", by: "mallory"}),
  });
  out.ack_status = ack.status;
  return out;
}
"""


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with chromium(*REBINDING_ARGS) as instance:
        yield instance


async def test_a_rebinding_page_can_neither_read_patients_nor_resolve_a_fall(
    broker_url: str, browser: Any
) -> None:
    async with running(broker_url) as (service, peer):
        fall_id, payload = event_json("p-001", "fall_detected", time.time())
        await peer.publish("patients/p-001/events", payload)
        port = int(service.url.rsplit(":", 1)[1].rstrip("/"))
        evil = f"http://evil.example:{port}/"
        page = await browser.new_page()

        async def attacker_page(route: Any) -> None:
            await route.fulfill(
                status=200,
                content_type="text/html",
                body=f"<html><script>window.FALL_ID = {json.dumps(fall_id)};</script></html>",
            )

        await page.route(evil, attacker_page)  # only the page itself, not its fetches
        await page.goto(evil)
        result = await page.evaluate(ATTACK_JS)
        assert result["snapshot_status"] == 421, result
        assert "p-001" not in result["snapshot_text"]
        assert result["ack_status"] == 421, result
        # The real page on the dashboard's own address still works, and shows
        # the fall open: nobody resolved it.
        real = await browser.new_page()
        await real.goto(service.url)
        banner = real.locator(f'.fall-banner[data-event-id="{fall_id}"]')
        await banner.wait_for(timeout=5000)
        alert = service.model.alert(fall_id)
        assert alert is not None and alert["status"] == "open"
        assert peer.on("/acks") == []


async def test_a_page_on_another_origin_cannot_resolve_a_fall(
    broker_url: str, browser: Any
) -> None:
    async with running(broker_url) as (service, peer):
        fall_id, payload = event_json("p-002", "fall_detected", time.time())
        await peer.publish("patients/p-002/events", payload)
        target = service.url + f"api/alerts/{fall_id}/ack"
        # Another web app on this machine (same site 127.0.0.1, other port):
        # cookies marked SameSite would still be sent, so Origin must decide.
        html = (
            f'<form id="f" method="POST" action="{target}" enctype="text/plain">'
            '<input name=\'{"action": "resolved", "x": "\' value=\'"}\'></form>'
            "<script>fetch(" + json.dumps(target) + ", {method: 'POST', mode: 'no-cors',"
            ' body: \'{"action": "resolved"}\'}).finally(() => '
            "document.getElementById('f').submit());</script>"
        )

        async def other_app(_request: web.Request) -> web.Response:
            return web.Response(text=html, content_type="text/html")

        app = web.Application()
        app.router.add_get("/", other_app)
        runner = web.AppRunner(app)
        await runner.setup()
        other = free_port()
        await web.TCPSite(runner, "127.0.0.1", other).start()
        try:
            page = await browser.new_page()
            responses: list[int] = []
            page.on("response", lambda r: responses.append(r.status) if "/ack" in r.url else None)
            await page.goto(f"http://127.0.0.1:{other}/")
            await page.wait_for_url(target, timeout=5000)  # the form was submitted
            assert responses and set(responses) == {403}, responses
        finally:
            await runner.cleanup()
        alert = service.model.alert(fall_id)
        assert alert is not None and alert["status"] == "open"
        assert peer.on("/acks") == []

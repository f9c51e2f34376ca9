"""The dashboard service against a real Mosquitto: stream, acks, escalation, login, summaries.

Each test gets a private broker, a real DashboardService on a free HTTP port,
and talks to it like a browser would (aiohttp client, Server-Sent Events).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_dashboard_support import (  # noqa: F401  (the fixture is used by name)
    CSRF,
    HANG_S,
    JumpClock,
    ack_headers,
    broker_url_fixture,
    event_json,
    free_port,
    running,
    state_json,
)

from alerts.clock import ClockPolicy
from alerts.mqtt import Message, MqttClient, MqttSettings
from alerts.summary import format_time
from common.errors import ConfigError
from physio.dashboard.auth import Credentials, hash_secret
from physio.dashboard.cli import configure_report_parser, run_report
from physio.dashboard.escalation import EscalationPolicy
from physio.dashboard.report import (
    MissingExtraError,
    fetch_summary,
    render_html,
    write_report,
)
from physio.dashboard.service import DashboardConfig, DashboardService


async def wait_until(condition: Callable[[], bool], timeout_s: float = HANG_S) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


async def ticks_pass(service: DashboardService, count: int = 2) -> None:
    """Until the service's ticker has run ``count`` more rounds (deadlines checked)."""
    target = service.ticks + count
    await wait_until(lambda: service.ticks >= target)


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    """(event, data) pairs of a Server-Sent Events response."""
    name, data = "message", ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if data:
                yield name, json.loads(data)
            name, data = "message", ""
        elif line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data += line[6:]


async def next_event(
    stream: AsyncIterator[tuple[str, Any]], wanted: str, timeout_s: float = HANG_S
) -> Any:
    async with asyncio.timeout(timeout_s):
        async for name, data in stream:
            if name == wanted:
                return data
    raise AssertionError(f"stream ended before a {wanted!r} event")


async def test_live_updates_reach_the_stream(broker_url: str) -> None:
    async with running(broker_url) as (service, peer), aiohttp.ClientSession() as http:
        await peer.publish(
            "gateways/ward-3/status",
            b'{"gateway_id": "ward-3", "status": "online", "time": "2026-11-24T08:00:00.000Z"}',
            retain=True,
        )
        async with http.get(service.url + "api/stream") as response:
            assert response.headers["Content-Type"] == "text/event-stream"
            stream = sse_events(response)
            snapshot = await next_event(stream, "snapshot")
            assert snapshot["patients"] == [] and snapshot["login_required"] is False
            now = time.time()
            await peer.publish(
                "patients/p-001/state", state_json("p-001", now, 31.5, slouching=True), qos=0
            )
            tile = await next_event(stream, "state")
            assert (tile["patient_id"], tile["flexion_deg"], tile["slouching"]) == (
                "p-001",
                31.5,
                True,
            )
            event_id, payload = event_json("p-001", "fall_detected", now)
            await peer.publish("patients/p-001/events", payload)
            alert = await next_event(stream, "alert")  # pushed, no reload needed
            assert (alert["event_id"], alert["severity"], alert["status"]) == (
                event_id,
                "high",
                "open",
            )
            await peer.publish("patients/p-001/events", payload)  # QoS 1 duplicate
        async with http.get(service.url + "api/snapshot") as response:
            snap = await response.json()
        assert [a["event_id"] for a in snap["alerts"]] == [event_id]
        assert snap["gateways"][0]["online"] is True
        assert snap["patients"][0]["history"][-1][1] == 31.5


async def test_ack_is_published_with_the_name_and_stops_escalation(broker_url: str) -> None:
    clock = JumpClock()
    async with (
        running(broker_url, clock, escalation=EscalationPolicy(120.0, 240.0)) as (service, peer),
        aiohttp.ClientSession() as http,
    ):
        event_id, payload = event_json("p-002", "fall_detected", time.time())
        await peer.publish("patients/p-002/events", payload)
        await wait_until(lambda: service.model.alert(event_id) is not None)
        async with http.post(
            service.url + f"api/alerts/{event_id}/ack",
            headers=await ack_headers(http, service.url),
            json={"action": "acknowledged", "by": "Anna Berg"},
        ) as response:
            assert response.status == 200
            alert = await response.json()
        assert alert["status"] == "acknowledged" and alert["acks"][0]["by"] == "Anna Berg"
        acks = await peer.wait_for("/patients/p-002/acks")
        assert acks[0]["event_id"] == event_id and acks[0]["action"] == "acknowledged"
        assert acks[0]["by"] == "Anna Berg" and acks[0]["time"].endswith("Z")
        clock.advance(300.0)  # past both escalation deadlines
        await ticks_pass(service)
        assert peer.on("/escalations") == [] and service.escalations_published == 0
        async with http.post(
            service.url + f"api/alerts/{event_id}/ack",
            headers=await ack_headers(http, service.url),
            json={"action": "resolved"},
        ) as response:
            assert (await response.json())["status"] == "resolved"
        async with http.post(
            service.url + f"api/alerts/{event_id}/ack", json={"action": "resolved"}
        ) as response:
            assert response.status == 403  # no anti-CSRF header
        async with http.post(
            service.url + f"api/alerts/{event_id}/ack", headers=CSRF, json={"action": "resolved"}
        ) as response:
            assert response.status == 403  # no CSRF token
        async with http.post(
            service.url + "api/alerts/nope/ack",
            headers=await ack_headers(http, service.url),
            json={"action": "resolved"},
        ) as response:
            assert response.status == 404


async def test_unacknowledged_fall_escalates_twice_but_slouch_never(broker_url: str) -> None:
    async with running(broker_url, escalation=EscalationPolicy(0.6, 1.2)) as (service, peer):
        now = time.time()
        fall_id, payload = event_json("p-003", "fall_detected", now)
        await peer.publish("patients/p-003/events", payload)
        _slouch_id, slouch = event_json("p-003", "slouch_started", now, severity="low")
        await peer.publish("patients/p-003/events", slouch)
        escalations = await peer.wait_for("/patients/p-003/escalations", 2)
        assert [(e["event_id"], e["level"]) for e in escalations] == [(fall_id, 1), (fall_id, 2)]
        await ticks_pass(service)  # and no third level, nor one for the slouch
        assert len(peer.on("/p-003/escalations")) == 2
        # The same two levels on the one topic a nurse-call bridge reads, without names.
        bridge = await peer.wait_for(f"{peer.root}/escalations", 2)
        assert [(e["event_id"], e["level"], e["patient_id"]) for e in bridge] == [
            (fall_id, 1, "p-003"),
            (fall_id, 2, "p-003"),
        ]
        assert all("patient" not in e for e in bridge)
        alert = service.model.alert(fall_id)
        assert alert is not None and alert["escalation_level"] == 2


async def test_ack_from_another_dashboard_clears_the_fall(broker_url: str) -> None:
    clock = JumpClock()
    async with running(broker_url, clock) as (service, peer):
        event_id, payload = event_json("p-004", "fall_detected", time.time())
        ack = json.dumps(
            {
                "event_id": event_id,
                "action": "acknowledged",
                "by": "Ben",
                "time": format_time(time.time()),
            }
        ).encode()
        await peer.publish("patients/p-004/acks", ack)  # overtakes its fall
        await peer.publish("patients/p-004/events", payload)
        await peer.publish("patients/p-004/acks", ack)  # and comes twice
        await wait_until(
            lambda: (
                len(peer.on("/patients/p-004/acks")) == 2
                and service.model.alert(event_id) is not None
            )
        )
        clock.advance(300.0)
        await ticks_pass(service)
        alert = service.model.alert(event_id)
        assert alert is not None and alert["status"] == "acknowledged"
        assert [a["by"] for a in alert["acks"]] == ["Ben"]
        assert peer.on("/escalations") == []


async def test_bad_messages_are_dropped_counted_and_harmless(broker_url: str) -> None:
    async with running(broker_url) as (service, peer):
        await peer.publish("patients/p-005/state", b"not json", qos=0)
        await peer.publish("patients/p-005/events", b'{"type": "fall_detected"}')
        await peer.publish("patients/p-005/state", state_json("p-999", time.time()), qos=0)
        await peer.publish("patients/p-005/acks", b'{"event_id": "x", "action": "deleted"}')
        await peer.publish("patients/p-005/state", state_json("p-005", time.time()), qos=0)
        async with asyncio.timeout(HANG_S):
            while not service.model.snapshot()["patients"]:
                await asyncio.sleep(0.02)
        assert service.drops.by_reason == {
            "not_json": 1,
            "topic_mismatch": 1,
            "bad_id": 1,
            "bad_field": 1,
        }
        assert service.drops.by_source == {"patient:p-005": 4}
        assert [p["patient_id"] for p in service.model.snapshot()["patients"]] == ["p-005"]


async def test_every_page_and_stream_needs_a_login_when_configured(broker_url: str) -> None:
    credentials = Credentials(users={"anna": hash_secret("correct horse")})
    async with running(broker_url, credentials=credentials) as (service, peer):
        event_id, payload = event_json("p-006", "fall_detected", time.time())
        await peer.publish("patients/p-006/events", payload)
        # unsafe=True: aiohttp's client (unlike a browser) ignores cookies of IP hosts.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            for path in ("", "api/snapshot", "api/stream", "api/patients/p-006/summary.svg"):
                async with http.get(service.url + path, allow_redirects=False) as response:
                    assert response.status in (302, 401), path
            async with http.post(
                service.url + f"api/alerts/{event_id}/ack",
                headers=CSRF,
                json={"action": "acknowledged"},
            ) as response:
                assert response.status == 401
            async with http.post(
                service.url + "login",
                allow_redirects=False,
                data={"name": "anna", "secret": "wrong"},
            ) as response:
                assert response.headers["Location"] == "/login?failed=1"
            async with http.post(
                service.url + "login",
                allow_redirects=False,
                data={"name": "anna", "secret": "correct horse"},
            ) as response:
                assert response.headers["Location"] == "/"
                cookie = response.cookies["pm_dashboard_session"]
                assert cookie["httponly"] and cookie["samesite"] == "Strict"
            async with http.get(service.url + "api/snapshot") as response:
                assert (await response.json())["user"] == "anna"
            async with http.post(
                service.url + f"api/alerts/{event_id}/ack",
                headers=await ack_headers(http, service.url),
                json={"action": "acknowledged", "by": "mallory"},
            ) as response:
                assert response.status == 200
        acks = await peer.wait_for("/acks")
        assert acks[0]["by"] == "anna"  # the logged-in user, not the name typed


def test_exposed_address_without_credentials_is_refused() -> None:
    settings = MqttSettings.from_url("mqtt://127.0.0.1:1")
    with pytest.raises(ConfigError, match=r"refusing to listen on 0\.0\.0\.0"):
        DashboardConfig(broker=settings, listen_host="0.0.0.0")
    DashboardConfig(
        broker=settings,
        listen_host="0.0.0.0",
        credentials=Credentials(token_hash=hash_secret("t0ken-t0ken")),
    )
    assert (
        Credentials(token_hash=hash_secret("t0ken-t0ken")).check("Cleo", "t0ken-t0ken")
        == "Cleo (token)"
    )


async def test_ack_while_the_broker_is_down_says_it_was_not_sent() -> None:
    settings = MqttSettings.from_url(
        f"mqtt://127.0.0.1:{free_port()}", connect_timeout_s=0.3, reconnect_min_s=0.2
    )
    config = DashboardConfig(broker=settings, listen_port=0)
    async with DashboardService(config) as service, aiohttp.ClientSession() as http:
        event_id, payload = event_json("p-007", "fall_detected", time.time())
        service.handle_message(
            Message("posture/v1/patients/p-007/events", payload, 1, False), time.time()
        )
        await ticks_pass(service, 1)  # the ticker has looked at the link
        async with http.get(service.url + "api/snapshot") as response:
            assert (await response.json())["broker_connected"] is False
        async with http.post(
            service.url + f"api/alerts/{event_id}/ack",
            headers=await ack_headers(http, service.url),
            json={"action": "acknowledged"},
        ) as response:
            assert response.status == 503
            assert "NOT sent" in (await response.json())["error"]
        alert = service.model.alert(event_id)
        assert alert is not None and alert["status"] == "open"


async def test_summary_is_published_retained_and_the_report_shows_it(
    broker_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The states are a replay from 200 s ago: trust such a late clock here.
    async with running(broker_url, clock_policy=ClockPolicy(max_lag_s=3600.0)) as (service, peer):
        t0 = time.time() - 200
        for i in range(121):  # 2 min upright, 1 min slouched at 1 Hz
            await peer.publish(
                "patients/p-008/state",
                state_json("p-008", t0 + i, 40.0 if i >= 80 else 10.0, slouching=i >= 80),
                qos=0,
            )
        _eid, fall = event_json("p-008", "fall_detected", t0 + 100)
        await peer.publish("patients/p-008/events", fall)
        published = await peer.wait_for("/patients/p-008/summary")
        async with asyncio.timeout(HANG_S):
            while True:
                published = peer.on("/patients/p-008/summary")
                totals = published[-1]["totals"]
                if totals["falls"] == 1 and totals["monitored_min"] == 2.0:
                    break
                await asyncio.sleep(0.05)
        assert (totals["upright_min"], totals["slouched_min"]) == (1.3, 0.7)
        async with (
            aiohttp.ClientSession() as http,
            http.get(service.url + "api/patients/p-008/summary.svg") as response,
        ):
            svg = await response.text()
            assert response.content_type == "image/svg+xml" and 'class="fall"' in svg
        settings = MqttSettings.from_url(broker_url)
        summary = await fetch_summary(settings, "p-008", topic_root=peer.root)
        archived = await fetch_summary(settings, "p-008", summary.day, topic_root=peer.root)
        assert summary.totals() == archived.totals()
        assert summary.totals().falls == 1
    html = render_html(summary)
    assert "p-008" in html and "<svg" in html and "<script" not in html
    out = tmp_path / "report.html"
    write_report(summary, out)
    assert "Slouch episodes" in out.read_text()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with pytest.raises(MissingExtraError, match=r"posture-monitor\[report\]"):
            write_report(summary, tmp_path / "report.png")
    else:
        write_report(summary, tmp_path / "report.png")
        assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        monkeypatch.setitem(sys.modules, "matplotlib", None)
        with pytest.raises(MissingExtraError, match=r"posture-monitor\[report\]"):
            write_report(summary, tmp_path / "again.png")


def test_report_command_errors_are_clear(
    broker_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    configure_report_parser(parser)
    args = parser.parse_args(
        [
            "--patient",
            "p-nobody",
            "--broker",
            broker_url,
            "--timeout",
            "0.5",
            "--out",
            str(tmp_path / "r.html"),
        ]
    )
    assert run_report(args) == 1
    assert "no summary of patient p-nobody" in capsys.readouterr().err
    args = parser.parse_args(
        ["--patient", "p-1", "--broker", broker_url, "--out", str(tmp_path / "r.pdf")]
    )
    assert run_report(args) == 2
    assert ".html or .png" in capsys.readouterr().err


async def test_wearable_cancellation_stops_escalation_and_gateway_loss_is_shown(
    broker_url: str,
) -> None:
    clock = JumpClock()
    async with running(broker_url, clock) as (service, peer):
        now = time.time()
        fall_id, payload = event_json("p-009", "fall_detected", now)
        await peer.publish("patients/p-009/events", payload)
        _cancel_id, cancel = event_json("p-009", "fall_cancelled", now + 0.2, severity="info")
        await peer.publish("patients/p-009/events", cancel)
        await peer.publish(
            "gateways/ward-3/status",
            b'{"gateway_id": "ward-3", "status": "offline", "time": "2026-11-24T08:00:00.000Z"}',
        )
        await wait_until(lambda: bool(service.model.snapshot()["gateways"]))
        clock.advance(300.0)
        await ticks_pass(service)
        assert peer.on("/escalations") == []
        alert = service.model.alert(fall_id)
        assert alert is not None and alert["note"].startswith("cancelled by the wearable")
        assert service.model.snapshot()["gateways"][0]["online"] is False


async def test_a_restarted_dashboard_still_shows_open_falls(broker_url: str) -> None:
    """Falls open before a restart come back from the retained summary; falls
    published while it was down come from its persistent MQTT session."""
    client_id = f"dash-{uuid.uuid4().hex[:8]}"
    async with running(broker_url, client_id=client_id) as (service, peer):
        root = peer.root
        open_id, payload = event_json("p-011", "fall_detected", time.time())
        await peer.publish("patients/p-011/events", payload)
        done_id, payload = event_json("p-011", "fall_detected", time.time())
        await peer.publish("patients/p-011/events", payload)
        await wait_until(
            lambda: (
                service.model.alert(open_id) is not None
                and service.model.alert(done_id) is not None
            )
        )
        await service.acknowledge(done_id, "resolved", "Ann")
        await service.acknowledge(open_id, "acknowledged", "Ann")
        async with asyncio.timeout(HANG_S):  # the summary with both falls' handling
            while not any(
                f.get("resolved_by") == "Ann" and f2.get("acknowledged_by") == "Ann"
                for s in peer.on("/patients/p-011/summary")
                for f in s["falls"]
                if f["event_id"] == done_id
                for f2 in s["falls"]
                if f2["event_id"] == open_id
            ):
                await asyncio.sleep(0.05)
    settings = MqttSettings.from_url(broker_url)
    async with MqttClient(settings) as gateway:  # a fall while no dashboard runs
        missed_id, payload = event_json("p-011", "fall_detected", time.time())
        await gateway.publish(f"{root}/patients/p-011/events", payload, qos=1)
    config = DashboardConfig(
        broker=settings,
        listen_port=0,
        topic_root=root,
        client_id=client_id,
        escalation=EscalationPolicy(30.0, 60.0),
    )
    async with DashboardService(config) as again:
        async with asyncio.timeout(HANG_S):
            while again.model.alert(missed_id) is None or again.model.alert(open_id) is None:
                await asyncio.sleep(0.05)
        restored = again.model.alert(open_id)
        assert restored is not None and restored["status"] == "acknowledged"
        assert again.model.alert(done_id) is None  # resolved: stays off the screen
        assert again.escalator.is_open(missed_id) and not again.escalator.is_open(open_id)

"""Hostile and broken MQTT messages never kill, change or bloat the dashboard or ``watch``.

Each finding of the security review is reproduced against a real broker,
sent retained so that it also meets every restart: deeply nested JSON, a time
in year 1 with an offset (overflows UTC), a 400-digit number, a 20 MB state,
a state from 2100, a battery of -5 %, a slouch threshold of 1e300°, an id the
gateway would refuse, an unknown event type, another patient's state on a
topic. The dashboard and ``watch`` keep running, show none of it (no patient,
alert or gateway), count it per reason, and still show a real fall after it.
``status`` and ``report`` count and refuse them too.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import uuid
from typing import Any

import aiohttp
import pytest
from brokers import MOSQUITTO, EmbeddedTestBroker, MosquittoBroker
from test_dashboard_support import event_json, state_json

from alerts import DropCounter, MqttClient, Topics
from alerts.summary import format_time
from physio.dashboard.report import BadSummaryError, fetch_summary
from physio.dashboard.service import DashboardConfig, DashboardService
from physio.status import collect_statuses
from physio.watch import watch_live

AnyBroker = MosquittoBroker | EmbeddedTestBroker
HANG_S = 20.0

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="the 20 MB message needs mosquitto")


def _state(patient: str, **over: Any) -> bytes:
    return state_json(patient, time.time(), **over)


def hostile(root: str) -> list[tuple[str, bytes, str]]:
    """(topic, payload, reason it must be dropped for), all sent retained."""
    p = f"{root}/patients"
    # 1,500 levels: beyond Python's recursion limit, yet under the 4 KiB a state may take.
    deep = b'{"patient_id": ' + b"[" * 1500 + b"]" * 1500 + b"}"
    year_one = json.dumps(
        {**json.loads(_state("p-666")), "time": "0001-01-01T00:00:00+01:00"}
    ).encode()
    huge_number = _state("p-667").replace(b'"battery_pct": 76.0', b'"battery_pct": ' + b"9" * 400)
    assert b"9" * 400 in huge_number
    twenty_mb = _state("p-668", note="x" * (20 * 1024 * 1024))
    return [
        (f"{p}/p-665/state", deep, "too_deep"),
        (f"{p}/p-666/state", year_one, "bad_time"),
        (f"{p}/p-667/state", huge_number, "bad_number"),
        (f"{p}/p-668/state", twenty_mb, "too_large"),
        (f"{p}/p-669/state", state_json("p-669", time.time() + 75 * 365 * 86400), "future_time"),
        (f"{p}/p-670/state", _state("p-670", battery_pct=-5), "bad_number"),
        (f"{p}/p-671/state", _state("p-671", slouch_threshold_deg=1e300), "bad_number"),
        (f"{p}/p-672/state", _state("p-001"), "topic_mismatch"),
        (f"{p}/p-673/state", _state("p-673", gateway_id="ward 3/#"), "bad_id"),
        (
            f"{root}/gateways/evil/status",
            b'{"gateway_id": "evil", "status": "online",'
            b' "time": "0001-01-01T00:00:00+01:00", "metrics": {}}',
            "bad_time",
        ),
    ]


def hostile_events(root: str) -> list[tuple[str, bytes, str]]:
    """Not retained (events never are): an unknown type and a deeply nested detail."""
    _id, unknown = event_json("p-674", "skin_temperature_high", time.time())
    _id, nested = event_json("p-675", "fall_detected", time.time())
    nested = nested.replace(
        b'"details": {"peak_acc_g": 5.1}', b'"details": ' + b"[" * 5000 + b"]" * 5000
    )
    return [
        (f"{root}/patients/p-674/events", unknown, "unknown_type"),
        (f"{root}/patients/p-675/events", nested, "too_deep"),
    ]


async def _until(condition: Any, timeout_s: float = HANG_S) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


def _shown(service: DashboardService) -> tuple[list[str], list[str], list[str]]:
    snap = service.model.snapshot()
    return (
        [p["patient_id"] for p in snap["patients"]],
        [g["gateway_id"] for g in snap["gateways"]],
        sorted({a["patient_id"] for a in snap["alerts"]}),
    )


@pytest.mark.timeout(180)
async def test_hostile_retained_messages_leave_dashboard_and_watch_running_and_unchanged(
    broker: AnyBroker,
) -> None:
    settings = broker.settings()
    root = f"t{uuid.uuid4().hex[:8]}/posture/v1"
    bad = hostile(root)
    async with MqttClient(settings) as gateway:
        await gateway.publish(f"{root}/patients/p-001/state", _state("p-001"), qos=1, retain=True)
        await gateway.publish(
            f"{root}/gateways/ward-3/status",
            json.dumps(
                {"gateway_id": "ward-3", "status": "online", "time": format_time(time.time())}
            ).encode(),
            qos=1,
            retain=True,
        )
        for topic, payload, _reason in bad:
            await gateway.publish(topic, payload, qos=1, retain=True)

        config = DashboardConfig(broker=settings, listen_port=0, topic_root=root)
        for run in ("first start", "restart"):  # retained: every restart meets them again
            async with DashboardService(config) as service:
                await _until(lambda: service.drops.total >= len(bad) and _shown(service)[0])
                if run == "first start":
                    for topic, payload, _reason in hostile_events(root):
                        await gateway.publish(topic, payload, qos=1)
                    await _until(lambda: service.drops.total >= len(bad) + 2)
                fall_id, fall = event_json("p-001", "fall_detected", time.time())
                await gateway.publish(f"{root}/patients/p-001/events", fall, qos=1)
                await _until(lambda f=fall_id: service.model.alert(f) is not None)
                # Running, and nothing hostile shows as a patient, gateway or alert.
                assert _shown(service) == (["p-001"], ["ward-3"], ["p-001"])
                expected = {reason for _t, _p, reason in bad}
                assert expected <= set(service.drops.by_reason)
                if run == "first start":
                    assert service.drops.by_reason["unknown_type"] == 1
                    assert service.drops.by_source["patient:p-668"] == 1  # the 20 MB one
                # The administrator's counter, without patient ids, on /healthz
                # (and in the snapshot the page footer shows), updated by the ticker.
                await _until(lambda: service.model.intake["total"] == service.drops.total)
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(service.url + "healthz") as response,
                ):
                    health = await response.json()
                assert health["dropped"]["total"] == service.drops.total
                assert "p-668" not in json.dumps(health)
                # What browsers get is bounded: no 20 MB state ever reaches them.
                snapshot = service.model.snapshot()
                assert len(json.dumps(snapshot)) < 20_000
                assert snapshot["intake"]["total"] == service.drops.total

        # watch: the same retained messages, then a real fall.
        out = io.StringIO()
        watcher = asyncio.create_task(
            watch_live(settings, topic_root=root, out=out, tty=False, bell=False)
        )
        try:
            # "watching ..." comes once every filter is subscribed: only then can a
            # live (not retained) fall reach it.
            await _until(
                lambda: all(s in out.getvalue() for s in ("DROPPED", "STATE p-001", "watching "))
            )
            fall_id, fall = event_json("p-001", "fall_detected", time.time())
            await gateway.publish(f"{root}/patients/p-001/events", fall, qos=1)
            await _until(lambda: "FALL DETECTED" in out.getvalue())
            assert not watcher.done()
        finally:
            watcher.cancel()
            with pytest.raises(asyncio.CancelledError):
                await watcher
        text = out.getvalue()
        for patient in (
            "p-665",
            "p-666",
            "p-667",
            "p-668",
            "p-669",
            "p-670",
            "p-671",
            "p-673",
            "evil",
        ):
            assert patient not in text
        # Clear what this test left retained on the shared broker.
        for topic, _payload, _reason in bad:
            await gateway.publish(topic, b"", qos=1, retain=True)


async def test_status_and_report_count_and_survive_hostile_retained_messages(
    broker: AnyBroker,
) -> None:
    settings = broker.settings()
    root = f"t{uuid.uuid4().hex[:8]}/posture/v1"
    topics = Topics(root)
    async with MqttClient(settings) as gateway:
        ok = {"gateway_id": "ward-3", "status": "online", "time": format_time(time.time())}
        await gateway.publish(topics.status("ward-3"), json.dumps(ok).encode(), retain=True)
        for gateway_id, payload in (
            ("evil", {**ok, "gateway_id": "evil", "time": "0001-01-01T00:00:00+01:00"}),
            ("deep", {**ok, "gateway_id": "deep", "metrics": json.loads("[" * 900 + "]" * 900)}),
            ("other", {**ok, "gateway_id": "ward-3"}),  # another gateway's id on this topic
        ):
            await gateway.publish(
                topics.status(gateway_id), json.dumps(payload).encode(), retain=True
            )
        drops = DropCounter(logging.getLogger("test.status"))
        found = await collect_statuses(settings, topic_root=root, wait_s=1.0, drops=drops)
        assert set(found) == {"ward-3"}
        assert drops.by_reason == {"bad_time": 1, "too_deep": 1, "topic_mismatch": 1}

        # report: a 600 KB retained "summary" is refused with a clear error, not a traceback.
        await gateway.publish(
            topics.summary("p-001"), b'{"x": "' + b"y" * 600_000 + b'"}', retain=True
        )
        with pytest.raises(BadSummaryError, match="too_large"):
            await fetch_summary(settings, "p-001", topic_root=root, timeout_s=5.0)
        for topic in (
            topics.summary("p-001"),
            *(topics.status(g) for g in ("ward-3", "evil", "deep", "other")),
        ):
            await gateway.publish(topic, b"", retain=True)

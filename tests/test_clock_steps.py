"""Senders' clocks that are wrong: a gateway stepped back an hour, a state from 2100.

Against a real broker with the real AlertPublisher, dashboard and ``watch``:
a gateway whose wall clock is stepped back 1 h mid-run (with and without the
new ``mono_time`` field: old gateways do not send it) keeps the patient's tile
live, shows the slouch that follows, and the day summary counts the slouched
time at receipt; a state stamped in 2100 is refused and counted and erases
nothing (the day and its fall stay).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from brokers import EmbeddedTestBroker, MosquittoBroker
from test_dashboard_support import event_json, state_json

from alerts import Activity, AlertPublisher, MqttClient, PatientState, utc_from_timestamp
from alerts.clock import mono_wall_now
from physio.dashboard.service import DashboardConfig, DashboardService
from physio.watch import watch_live

AnyBroker = MosquittoBroker | EmbeddedTestBroker
HANG_S = 20.0


async def _until(condition: Callable[[], Any], timeout_s: float = HANG_S) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


def _tile(service: DashboardService, patient_id: str) -> dict[str, Any] | None:
    for tile in service.model.snapshot()["patients"]:
        if tile["patient_id"] == patient_id:
            return dict(tile)
    return None


@pytest.mark.parametrize("with_mono", [True, False], ids=["mono_time", "old-gateway"])
async def test_a_gateway_clock_stepped_back_an_hour_keeps_the_tile_live(
    broker: AnyBroker, with_mono: bool
) -> None:
    settings = broker.settings()
    root = f"t{uuid.uuid4().hex[:8]}/posture/v1"
    offset_s = [0.0]
    posture = [0.0, False]  # flexion_deg, slouching

    def gateway_clock() -> float:
        return time.time() + offset_s[0]

    out = io.StringIO()
    config = DashboardConfig(broker=settings, listen_port=0, topic_root=root)
    async with (
        DashboardService(config) as service,
        AlertPublisher(
            settings, gateway_id="ward-3", topic_root=root, state_interval_s=0.05
        ) as gateway,
    ):
        watcher = asyncio.create_task(
            watch_live(settings, topic_root=root, out=out, tty=False, bell=False)
        )

        async def stream() -> None:  # the gateway's state, as patient.py makes it
            while True:
                gateway.update_state(
                    PatientState(
                        "p-001",
                        "ward-3",
                        utc_from_timestamp(gateway_clock()),
                        float(posture[0]),
                        0.0,
                        Activity.UPRIGHT,
                        bool(posture[1]),
                        True,
                        80,
                        True,
                        25.0,
                        mono_time=mono_wall_now() if with_mono else None,
                    )
                )
                await asyncio.sleep(0.05)

        streamer = asyncio.create_task(stream())
        try:
            await _until(lambda: (_tile(service, "p-001") or {}).get("flexion_deg") == 0.0)
            await _until(lambda: "STATE p-001 activity=upright slouching=no" in out.getvalue())
            offset_s[0] = -3600.0  # the gateway's wall clock steps back an hour
            await asyncio.sleep(0.3)  # a few states with the stepped clock, still upright
            posture[:] = [40.0, True]  # then the patient slouches at 40°
            await _until(lambda: (_tile(service, "p-001") or {}).get("slouching") is True)
            tile = _tile(service, "p-001")
            assert tile is not None and tile["flexion_deg"] == 40.0
            # Its time is now, not an hour ago, nor frozen at the step.
            assert abs(tile["time_s"] - time.time()) < 30.0
            await _until(lambda: "slouching=yes" in out.getvalue())  # watch too
            # Counted for an administrator when only the receipt time could be trusted.
            assert (service.drops.clock_untrusted > 0) is (not with_mono)
            assert service.drops.total == 0
            # The day counts the slouch, at receipt time, in today's summary.
            await _until(lambda: _slouched_s(service, "p-001") >= 0.5)
            assert not watcher.done()
        finally:
            streamer.cancel()
            watcher.cancel()
            for task in (streamer, watcher):
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def _slouched_s(service: DashboardService, patient_id: str) -> float:
    summary = service.summary(patient_id, None)
    return 0.0 if summary is None else sum(summary.bins["slouched_s"])


async def test_a_state_from_2100_is_refused_and_erases_nothing(broker: AnyBroker) -> None:
    settings = broker.settings()
    root = f"t{uuid.uuid4().hex[:8]}/posture/v1"
    config = DashboardConfig(broker=settings, listen_port=0, topic_root=root)
    async with DashboardService(config) as service, MqttClient(settings) as gateway:
        now_s = time.time()
        for i in range(5):
            await gateway.publish(
                f"{root}/patients/p-001/state", state_json("p-001", now_s - 4 + i), qos=1
            )
        fall_id, fall = event_json("p-001", "fall_detected", now_s)
        await gateway.publish(f"{root}/patients/p-001/events", fall, qos=1)
        await _until(lambda: service.model.alert(fall_id) is not None)
        year_2100 = 4_102_444_800.0
        await gateway.publish(
            f"{root}/patients/p-001/state",
            state_json("p-001", year_2100, 80.0, slouching=True),
            qos=1,
            retain=True,
        )
        await _until(lambda: service.drops.by_reason.get("future_time") == 1)
        summary = service.summary("p-001", None)
        assert summary is not None and summary.day == utc_from_timestamp(now_s).date()
        assert [f.event_id for f in summary.falls] == [fall_id]
        tile = _tile(service, "p-001")
        assert tile is not None and tile["flexion_deg"] == 12.0 and tile["time_s"] < now_s + 1
        await gateway.publish(f"{root}/patients/p-001/state", b"", qos=1, retain=True)

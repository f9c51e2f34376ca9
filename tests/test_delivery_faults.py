"""No alert lost: the broker goes away, or the gateway is killed, mid-scenario.

Both tests run the real gateway over simulated wearables against a real
Mosquitto, and judge by what a physiotherapist's subscriber receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from ward import gateway_running

from alerts import AlertPublisher, EventType, MemorySink
from device_gateway import GatewayConfig
from simulator import SimulatedWorld, builtin_scenario_path, load_scenario

FALLER = "fall-forward-walking"  # walks, falls at 30 s, gets up at 60 s


def faller_scenario() -> Any:
    scenario = load_scenario(builtin_scenario_path("falls"))
    return replace(scenario, patients=tuple(p for p in scenario.patients if p.id == FALLER))


def config_for(scenario: Any, **extra: Any) -> GatewayConfig:
    return GatewayConfig.from_mapping(
        {
            "gateway_id": "ward-1",
            "wearables": [
                {"address": p.wearable.address, "patient_id": p.id} for p in scenario.patients
            ],
            **extra,
        }
    )


@pytest.mark.timeout(90)
async def test_broker_restart_loses_no_event(persistent_broker: Any, collector: Any) -> None:
    speed = 4.0
    scenario = faller_scenario()
    config = config_for(scenario)
    physio = await collector(
        persistent_broker,
        ["posture/v1/patients/+/events"],
        client_id="physio-tablet-1",
        clean_start=False,
        session_expiry_s=3600,
    )
    async with (
        SimulatedWorld(scenario, seed=11, speed=speed) as world,
        AlertPublisher(persistent_broker.settings(), gateway_id=config.gateway_id) as publisher,
    ):
        sink = MemorySink(forward=publisher)  # the real publisher; records what it was handed
        async with gateway_running(config, sink, world) as gateway:
            await world.sleep_until(24.0)
            await persistent_broker.stop()
            outage_started_s = world.scenario_time()
            async with asyncio.timeout(60.0):  # the fall (30 s) happens during the outage
                await sink.wait_for_event(EventType.FALL_DETECTED)
            packets_during_outage = gateway.device_metrics()[FALLER]["packets"]
            await persistent_broker.start()
            published = await physio.wait_for(
                lambda messages: len(messages) >= len(sink.events) >= 2
            )
            metrics = gateway.device_metrics()[FALLER]

    sent = {e.event_id: json.loads(e.to_json()) for e in sink.events}
    received = {}
    for message in published:
        payload = json.loads(message.payload)
        received[payload["event_id"]] = payload
    assert received == sent  # every event, exactly as published
    falls = [e for e in sent.values() if e["type"] == "fall_detected"]
    assert len(falls) == 1
    assert falls[0]["device_time_s"] > outage_started_s - 1.0  # raised during the outage
    # The gateway kept processing samples while the broker was away.
    sample_rate = scenario.patients[0].wearable.sample_rate_hz
    assert packets_during_outage > 0
    assert metrics["queue_dropped"] == 0
    assert metrics["packets"] >= 0.8 * world.scenario_time() * sample_rate / (
        scenario.patients[0].wearable.samples_per_packet
    )


def _run_gateway(config: Path, scenario: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "posture_monitor",
                "-v",
                "run",
                "--config",
                str(config),
                "--simulate",
                str(scenario),
                "--speed",
                "8",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def _pending_falls(outbox: Path) -> list[str]:
    if not outbox.exists():
        return []
    with contextlib.closing(sqlite3.connect(outbox, timeout=1.0)) as db:
        rows = db.execute("SELECT event_id FROM outbox WHERE is_fall = 1").fetchall()
    return [row[0] for row in rows]


@pytest.mark.timeout(120)
async def test_gateway_killed_with_pending_fall_sends_it_after_restart(
    persistent_broker: Any, collector: Any, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox.sqlite"
    scenario_file = builtin_scenario_path("falls")
    scenario = faller_scenario()
    config_file = tmp_path / "gateway.toml"
    wearable = scenario.patients[0].wearable
    config_file.write_text(
        f"""
gateway_id = "ward-1"
outbox_path = "{outbox}"
[broker]
url = "{persistent_broker.url}"
[[wearables]]
address = "{wearable.address}"
patient_id = "{FALLER}"
""",
        encoding="utf-8",
    )
    log = tmp_path / "gateway.log"
    # The broker is down: the fall can only wait in the outbox.
    await persistent_broker.stop()
    first = _run_gateway(config_file, scenario_file, log)
    try:
        # The outbox is locked while its gateway runs; its log says when the
        # fall is on disk.
        deadline = time.monotonic() + 40.0
        while time.monotonic() < deadline and first.poll() is None:
            if "fall_detected queued" in log.read_text(errors="replace"):
                break
            await asyncio.sleep(0.1)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    pending = _pending_falls(outbox)
    assert pending, f"no fall pending in the outbox:\n{log.read_text()[-3000:]}"

    await persistent_broker.start()
    physio = await collector(persistent_broker, ["posture/v1/patients/+/events"])
    second = _run_gateway(config_file, scenario_file, log)
    try:
        messages = await physio.wait_for(
            lambda got: any(json.loads(m.payload)["event_id"] == pending[0] for m in got),
            timeout_s=30.0,
        )
    finally:
        second.send_signal(signal.SIGINT)
        try:
            second.wait(timeout=15)
        except subprocess.TimeoutExpired:
            second.kill()
            second.wait()
    fall = next(json.loads(m.payload) for m in messages if pending[0] in m.payload.decode())
    assert fall["type"] == "fall_detected"
    assert fall["patient_id"] == FALLER

"""Shared helpers of the dashboard tests (no tests here).

* ``broker_url``: the shared ``broker`` fixture of tests/conftest.py when it is
  there, else a private Mosquitto started here on a free loopback port.
* ``running(broker_url, **config)``: a DashboardService on a free HTTP port
  with its own topic root, plus a :class:`Peer` that publishes like a gateway
  and records everything under that root.
* ``state_json`` / ``event_json``: realistic payloads of the MQTT contract.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from alerts.mqtt import Message, MqttClient, MqttSettings
from alerts.summary import format_time
from common.ports import free_port
from physio.dashboard.escalation import EscalationPolicy
from physio.dashboard.server import CSRF_HEADER, CSRF_TOKEN_HEADER
from physio.dashboard.service import DashboardConfig, DashboardService

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
CSRF = {CSRF_HEADER: "posture-dashboard"}
# Only a guard against a hang, never a measurement (see tests/brokers.py).
HANG_S = 30.0


async def ack_headers(http: Any, url: str) -> dict[str, str]:
    """The headers the page sends with an ack: the anti-CSRF header and the
    page's CSRF token, read from the snapshot as the page reads it."""
    async with http.get(url + "api/snapshot") as response:
        token = (await response.json())["csrf_token"]
    return {**CSRF, CSRF_TOKEN_HEADER: token}


def _own_mosquitto(workdir: Path) -> Iterator[str]:
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    process = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + HANG_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail("mosquitto did not start")
                time.sleep(0.02)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(5)


@pytest.fixture(name="broker_url")
def broker_url_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a private broker for one test."""
    try:
        shared = request.getfixturevalue("broker")
    except pytest.FixtureLookupError:
        yield from _own_mosquitto(tmp_path)
    else:
        yield str(shared.url)


def state_json(patient_id: str, t_s: float, flexion_deg: float | None = 12.0, **over: Any) -> bytes:
    """A ``.../state`` payload as the gateway publishes it."""
    obj = {
        "patient_id": patient_id,
        "gateway_id": "ward-3",
        "time": format_time(t_s),
        "flexion_deg": flexion_deg,
        "lateral_deg": -2.0,
        "activity": "upright",
        "slouching": False,
        "device_connected": True,
        "battery_pct": 76.0,
        "calibrated": True,
        "slouch_threshold_deg": 25.0,
        **over,
    }
    return json.dumps(obj).encode()


def event_json(
    patient_id: str, kind: str, t_s: float, event_id: str | None = None, severity: str = "high"
) -> tuple[str, bytes]:
    """(event_id, ``.../events`` payload)."""
    event_id = event_id or uuid.uuid4().hex
    obj = {
        "event_id": event_id,
        "type": kind,
        "patient_id": patient_id,
        "gateway_id": "ward-3",
        "time": format_time(t_s),
        "severity": severity,
        "flexion_deg": 78.1,
        "lateral_deg": -4.0,
        "device_time_s": 41.02,
        "details": {"peak_acc_g": 5.1},
    }
    return event_id, json.dumps(obj).encode()


class Peer:
    """Another MQTT client on the broker: publishes like a gateway, records everything."""

    def __init__(self, client: MqttClient, root: str) -> None:
        self.client = client
        self.root = root
        self.received: list[Message] = []

    async def publish(
        self, leaf: str, payload: bytes, *, retain: bool = False, qos: int = 1
    ) -> None:
        await self.client.publish(f"{self.root}/{leaf}", payload, qos=qos, retain=retain)

    def on(self, leaf_suffix: str) -> list[dict[str, Any]]:
        """Decoded payloads received on topics ending with ``leaf_suffix``."""
        return [
            json.loads(m.payload)
            for m in self.received
            if m.topic.endswith(leaf_suffix) and m.payload
        ]

    async def wait_for(
        self, leaf_suffix: str, count: int = 1, timeout_s: float = HANG_S
    ) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout_s):
            while len(self.on(leaf_suffix)) < count:
                await asyncio.sleep(0.02)
        return self.on(leaf_suffix)


class JumpClock:
    """The wall clock plus jumps: escalation deadlines pass when a test says so."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s

    def advance(self, seconds: float) -> None:
        self.offset_s += seconds


@asynccontextmanager
async def running(
    broker_url: str, clock: JumpClock | None = None, **config: Any
) -> AsyncIterator[tuple[DashboardService, Peer]]:
    """A dashboard on its own topic root, and a peer recording that root."""
    root = f"t{uuid.uuid4().hex[:8]}/posture/v1"
    settings = MqttSettings.from_url(broker_url)
    options: dict[str, Any] = {
        "listen_port": 0,
        "topic_root": root,
        "summary_interval_s": 0.3,
        "escalation": EscalationPolicy(30.0, 60.0),
        **config,
    }
    async with (
        MqttClient(settings) as client,
        DashboardService(
            DashboardConfig(broker=settings, **options), clock=clock or time.time
        ) as service,
    ):
        await client.subscribe(f"{root}/#", qos=1)
        peer = Peer(client, root)

        async def record() -> None:
            async for message in client.messages():
                peer.received.append(message)

        recorder = asyncio.create_task(record())
        try:
            yield service, peer
        finally:
            recorder.cancel()

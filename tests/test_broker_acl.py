"""The documented Mosquitto ACL keeps each gateway inside its own subtree.

A real Mosquitto runs with deploy/mosquitto/acl.example and one password per
user; a gateway that publishes another gateway's status or another ward's
patient reaches no subscriber, while its own topics do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from pathlib import Path

import pytest
from brokers import HANG_S, MOSQUITTO, MOSQUITTO_PASSWD, MosquittoBroker

from alerts import MqttClient
from common.errors import BrokerError

ACL = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto" / "acl.example"
USERS = {
    "ward-1": "pw-ward-1-x",
    "ward-2": "pw-ward-2-y",
    "dashboard": "pw-dash-z",
    "nursecall": "pw-nurse-q",
}

pytestmark = pytest.mark.skipif(
    MOSQUITTO is None or MOSQUITTO_PASSWD is None, reason="mosquitto not installed"
)


class AclBroker(MosquittoBroker):
    def __init__(self, workdir: Path, acl: Path) -> None:
        passwd = workdir / "passwd"
        workdir.mkdir(parents=True, exist_ok=True)
        for index, (user, password) in enumerate(USERS.items()):
            flags = ["-c"] if index == 0 else []
            subprocess.run(
                [str(MOSQUITTO_PASSWD), *flags, "-b", str(passwd), user, password],
                check=True,
                capture_output=True,
            )
        super().__init__(workdir, password_file=passwd)
        self.acl = acl

    def _config(self) -> str:
        return super()._config() + f"acl_file {self.acl}\n"


async def test_gateways_cannot_leave_their_subtree(tmp_path: Path) -> None:
    broker = AclBroker(tmp_path / "mosquitto", ACL)
    await broker.start()
    try:
        dashboard = broker.settings(username="dashboard", password=USERS["dashboard"])
        ward1 = broker.settings(username="ward-1", password=USERS["ward-1"])
        received: list[str] = []
        async with MqttClient(dashboard) as physio, MqttClient(ward1) as gateway:
            await physio.subscribe("posture/v1/#", qos=1)

            async def record() -> None:
                async for message in physio.messages():
                    received.append(message.topic)

            recorder = asyncio.create_task(record())
            payload = json.dumps({"probe": True}).encode()
            allowed = [
                "posture/v1/gateways/ward-1/status",
                "posture/v1/patients/p-001/events",
                "posture/v1/patients/p-002/state",
            ]
            denied = [
                "posture/v1/gateways/ward-2/status",  # another gateway's status
                "posture/v1/patients/p-003/events",  # another ward's patient
                "posture/v1/patients/p-001/acks",  # only dashboards acknowledge
                "posture/v1/patients/p-001/events/x",  # below the allowed topic
            ]
            for topic in allowed + denied:
                # An MQTT 5 broker may also refuse outright: fine too.
                with contextlib.suppress(BrokerError):
                    await gateway.publish(topic, payload, qos=1)
            # A last allowed message: one publisher, one subscriber, QoS 1, so
            # anything denied that (wrongly) went through arrives before it.
            await gateway.publish(allowed[0], b"{}", qos=1)
            async with asyncio.timeout(HANG_S):
                while received.count(allowed[0]) < 2:
                    await asyncio.sleep(0.05)
            recorder.cancel()
        assert set(received) == set(allowed)
    finally:
        await broker.stop()


async def test_nurse_call_bridge_reads_only_the_dashboards_escalations(tmp_path: Path) -> None:
    broker = AclBroker(tmp_path / "mosquitto", ACL)
    await broker.start()
    try:
        bridge_settings = broker.settings(username="nursecall", password=USERS["nursecall"])
        dashboard = broker.settings(username="dashboard", password=USERS["dashboard"])
        ward1 = broker.settings(username="ward-1", password=USERS["ward-1"])
        received: list[tuple[str, bytes]] = []
        async with (
            MqttClient(bridge_settings) as bridge,
            MqttClient(dashboard) as physio,
            MqttClient(ward1) as gateway,
        ):
            await bridge.subscribe("posture/v1/#", qos=1)

            async def record() -> None:
                async for message in bridge.messages():
                    received.append((message.topic, message.payload))

            recorder = asyncio.create_task(record())
            with contextlib.suppress(BrokerError):  # a gateway may not fake an escalation
                await gateway.publish("posture/v1/escalations", b'{"forged": true}', qos=1)
            await gateway.publish("posture/v1/patients/p-001/events", b"{}", qos=1)
            await physio.publish("posture/v1/patients/p-001/acks", b"{}", qos=1)
            await physio.publish("posture/v1/escalations", b'{"level": 1}', qos=1)
            async with asyncio.timeout(HANG_S):
                while not received:
                    await asyncio.sleep(0.05)
            # The dashboard's message came last: anything (wrongly) let through is here.
            await physio.publish("posture/v1/escalations", b'{"level": 2}', qos=1)
            async with asyncio.timeout(HANG_S):
                while len(received) < 2:
                    await asyncio.sleep(0.05)
            recorder.cancel()
        assert received == [
            ("posture/v1/escalations", b'{"level": 1}'),
            ("posture/v1/escalations", b'{"level": 2}'),
        ]
    finally:
        await broker.stop()

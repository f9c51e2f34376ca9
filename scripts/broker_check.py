"""Check a broker for what posture-monitor relies on, before a site goes live.

Usage::

    .venv/bin/python scripts/broker_check.py mqtt://127.0.0.1:1883
    .venv/bin/python scripts/broker_check.py mqtt://mq1:1883 mqtt://mq2:1883   # two nodes

Runs the product's own publisher and MQTT client against the broker (the
nurse's side is raw paho, MQTT 3.1.1, so it checks the wire, not our
adapter) and prints one line per property, PASS or FAIL, then the MQTT
version the gateway ended up with. With two URLs, the subscriber's session
and the retained state are checked across nodes (a cluster). Topics live
under a random ``posture-check-*`` root, and the check's persistent session
is removed at the end. Exit status 0 when every check passed.

1. a QoS 1 fall event reaches a persistent subscriber;
2. a retained status reaches a subscriber that arrives later with a
   wildcard filter (as the dashboard, ``watch`` and ``status`` subscribe);
3. a persistent session keeps a fall published while its subscriber was
   away (it comes back on the last node given);
4. the Last Will ("offline") fires when a gateway process is killed;
5. which MQTT version the gateway speaks there (5, or 3.1.1 and what that
   costs: the gateway logs it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from alerts import AlertEvent, AlertPublisher, EventType, MqttSettings  # noqa: E402

_WAIT_S = 15.0

# A gateway that connects with its Last Will, says it is ready, and waits to be killed.
_GATEWAY = """
import asyncio, sys
from alerts import AlertPublisher, MqttSettings
async def main():
    settings = MqttSettings.from_urls(sys.argv[1].split(" "))
    async with AlertPublisher(settings, gateway_id=sys.argv[2], topic_root=sys.argv[3]) as pub:
        while not pub.connected:
            await asyncio.sleep(0.05)
        print("ready", flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""


class Nurse:
    """A raw paho 3.1.1 subscriber with a persistent session."""

    def __init__(self, settings: MqttSettings, client_id: str, topic: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=False,
        )
        if settings.username is not None:
            self._client.username_pw_set(settings.username, settings.password)
        self._client.on_connect = lambda c, _u, flags, _rc, _p: (
            self._ready.set() if flags.session_present else c.subscribe(topic, 1)
        )
        self._client.on_subscribe = lambda *_a: self._ready.set()
        self._client.on_message = self._on_message
        self._settings = settings

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def start(self) -> Nurse:
        self._client.connect(self._settings.host, self._settings.port, 30)
        self._client.loop_start()
        if not self._ready.wait(_WAIT_S):
            raise RuntimeError(f"no SUBACK from {self._settings.address}")
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def wait_for(self, predicate: Any) -> bool:
        deadline = time.monotonic() + _WAIT_S
        while time.monotonic() < deadline:
            with self._lock:
                if predicate(list(self.messages)):
                    return True
            time.sleep(0.05)
        return False


def fall(gateway_id: str) -> AlertEvent:
    return AlertEvent(EventType.FALL_DETECTED, "p-check", gateway_id, datetime.now(UTC))


def has_event(event: AlertEvent) -> Any:
    return lambda ms: any(event.event_id.encode() in payload for _t, payload, _r in ms)


async def check(urls: list[str]) -> dict[str, bool | str]:
    settings = MqttSettings.from_urls(urls, reconnect_min_s=0.2, reconnect_max_s=2.0)
    first, last = settings.endpoints()[0], settings.endpoints()[-1]
    token = uuid.uuid4().hex[:8]
    root, gateway_id = f"posture-check-{token}/v1", f"check-{token}"
    results: dict[str, bool | str] = {}
    nurse = await asyncio.to_thread(Nurse(first, f"check-nurse-{token}", f"{root}/#").start)
    away, seen_protocol = fall(gateway_id), "?"
    try:
        async with AlertPublisher(settings, gateway_id=gateway_id, topic_root=root) as pub:
            while not pub.connected:
                await asyncio.sleep(0.05)
            seen_protocol = pub.broker_protocol or "?"
            here = fall(gateway_id)
            await pub.publish_event(here)
            results["QoS 1 event to a persistent subscriber"] = await asyncio.to_thread(
                nurse.wait_for, has_event(here)
            )
            await asyncio.to_thread(nurse.stop)
            await pub.publish_event(away)
            while pub.metrics.events_pending:
                await asyncio.sleep(0.05)
        late = await asyncio.to_thread(Nurse(last, f"check-late-{token}", f"{root}/#").start)
        results["retained status to a later subscriber"] = await asyncio.to_thread(
            late.wait_for, lambda ms: any(r and "/status" in t for t, _p, r in ms)
        )
        await asyncio.to_thread(late.stop)
        back = await asyncio.to_thread(Nurse(last, f"check-nurse-{token}", f"{root}/#").start)
        results["session kept a fall while the subscriber was away"] = await asyncio.to_thread(
            back.wait_for, has_event(away)
        )
        results["Last Will 'offline' when the gateway is killed"] = await will_fires(
            urls, back, root
        )
        await asyncio.to_thread(back.stop)
    finally:
        # Remove the check's persistent sessions (a clean connect ends them).
        for client_id in (f"check-nurse-{token}", f"check-late-{token}"):
            ender = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True
            )
            try:
                ender.connect(last.host, last.port, 10)
                ender.loop_start()
                time.sleep(0.2)
                ender.disconnect()
                ender.loop_stop()
            except OSError:
                pass
    results["MQTT version used by the gateway"] = seen_protocol
    return results


async def will_fires(urls: list[str], nurse: Nurse, root: str) -> bool:
    gateway_id = f"will-{uuid.uuid4().hex[:6]}"
    with subprocess.Popen(
        [sys.executable, "-c", _GATEWAY, " ".join(urls), gateway_id, root],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    ) as gateway:
        assert gateway.stdout is not None
        ready = await asyncio.to_thread(gateway.stdout.readline)
        if ready.strip() != "ready":
            gateway.kill()
            return False
        gateway.send_signal(signal.SIGKILL)
        gateway.wait()

    def offline(ms: list[tuple[str, bytes, bool]]) -> bool:
        for topic, payload, _retain in ms:
            mine = topic.endswith(f"/{gateway_id}/status") and payload
            if mine and json.loads(payload).get("status") == "offline":
                return True
        return False

    return await asyncio.to_thread(nurse.wait_for, offline)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("urls", nargs="+", metavar="URL", help="the broker (or its nodes)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    results = asyncio.run(check(args.urls))
    for name, outcome in results.items():
        shown = outcome if isinstance(outcome, str) else ("PASS" if outcome else "FAIL")
        print(f"{shown:>6}  {name}")
    return 0 if all(v is True or isinstance(v, str) for v in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

"""SIGTERM (how systemd stops a service) is a clean stop, like Ctrl-C.

Real processes against a private mosquitto (MQTT 5, so the gateway's Last
Will carries a 10 s delay): the gateway, stopped with SIGTERM in the middle
of a simulated ward, disconnects its wearables, flushes its outbox, publishes
"offline" itself (with its metrics, which the Will does not carry) and exits
0; the dashboard publishes its daily summaries and exits 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from brokers import Collector, MosquittoBroker
from test_dashboard_support import state_json

from alerts import MqttClient, Outbox
from physio.dashboard.auth import TOKEN_ENV
from simulator import builtin_scenario_path

MakeCollector = Callable[..., Awaitable[Collector]]
REPO = Path(__file__).resolve().parent.parent
GW = "ward-sig"
STATUS = f"posture/v1/gateways/{GW}/status"

GATEWAY_TOML = """
gateway_id = "{gw}"
outbox_path = "{outbox}"

[broker]
url = "{url}"

[ble]
disconnect_grace_s = 5.0

[[wearables]]
address = "C0:FF:EE:00:00:01"
patient_id = "p-001"

[[wearables]]
address = "C0:FF:EE:00:00:02"
patient_id = "p-002"

[[wearables]]
address = "C0:FF:EE:00:00:03"
patient_id = "p-003"
"""


@asynccontextmanager
async def program(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """``posture-monitor ARGS`` as a child process (killed at the end if still alive)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "posture_monitor.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), TOKEN_ENV: ""},
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def stop_with_sigterm(process: asyncio.subprocess.Process) -> tuple[int, str]:
    """SIGTERM, then the exit code and everything the process wrote to stderr."""
    process.send_signal(signal.SIGTERM)
    assert process.stderr is not None
    err = await asyncio.wait_for(process.stderr.read(), 60)
    return await asyncio.wait_for(process.wait(), 10), err.decode(errors="replace")


def statuses(collector: Collector) -> list[dict[str, object]]:
    return [json.loads(m.payload) for m in collector.on_topic(STATUS) if m.payload]


@pytest.mark.timeout(120)
async def test_sigterm_stops_the_gateway_cleanly(
    tmp_path: Path, broker: MosquittoBroker, collector: MakeCollector
) -> None:
    if not isinstance(broker, MosquittoBroker):
        pytest.skip("needs mosquitto (MQTT 5 will delay)")
    outbox = tmp_path / "outbox.sqlite"
    config = tmp_path / "gateway.toml"
    config.write_text(GATEWAY_TOML.format(gw=GW, outbox=outbox, url=broker.url))
    watcher = await collector(broker, ["posture/v1/#"])
    scenario = builtin_scenario_path("demo")
    async with program(
        "-v", "run", "--config", str(config), "--simulate", str(scenario), "--speed", "2"
    ) as gateway:
        # Online, and every wearable connected (their events reached the broker).
        await watcher.wait_for(
            lambda ms: (
                sum(m.topic.endswith("/events") for m in ms) >= 3
                and any(s["status"] == "online" for s in statuses(watcher))
            ),
            60.0,
        )
        code, stderr = await stop_with_sigterm(gateway)
    assert code == 0, stderr[-2000:]
    assert "Traceback" not in stderr
    assert "stopped by SIGTERM" in stderr
    assert "3 wearable link(s) closed" in stderr
    # "offline" was published by the gateway at once, not by the broker's
    # delayed Will: the gateway's own status carries its metrics.
    last = await watcher.wait_for(lambda ms: statuses(watcher)[-1]["status"] == "offline", 5.0)
    assert last
    offline = statuses(watcher)[-1]
    assert isinstance(offline["metrics"], dict) and "events_published" in offline["metrics"]
    # Nothing was left behind in the outbox.
    with Outbox(outbox) as left:
        assert len(left) == 0


@pytest.mark.timeout(90)
async def test_sigterm_stops_the_dashboard_cleanly(
    broker: MosquittoBroker, collector: MakeCollector
) -> None:
    async with program(
        "dashboard",
        "--broker",
        broker.url,
        "--listen",
        "127.0.0.1:0",
        "--timezone",
        "UTC",
        "--summary-interval",
        "3600",
    ) as dashboard:
        assert dashboard.stdout is not None
        line = (await asyncio.wait_for(dashboard.stdout.readline(), 30)).decode()
        assert line.startswith("dashboard: http://127.0.0.1:"), line
        url = line.split()[1]
        async with MqttClient(broker.settings()) as gateway:
            await gateway.publish(
                "posture/v1/patients/p-042/state",
                state_json("p-042", time.time(), 31.0),
                qos=1,
                retain=True,
            )

        def snapshot() -> str:
            return urllib.request.urlopen(url + "api/snapshot").read().decode()

        async with asyncio.timeout(30):
            while "p-042" not in await asyncio.to_thread(snapshot):
                await asyncio.sleep(0.05)
        code, stderr = await stop_with_sigterm(dashboard)
    assert code == 0, stderr[-2000:]
    assert "Traceback" not in stderr
    # The shutdown path ran: the day's summary was published on the way out
    # (the periodic publish is an hour away).
    late = await collector(broker, ["posture/v1/patients/p-042/summary"])
    (summary,) = await late.wait_for(lambda ms: len(ms) == 1, 10.0)
    assert json.loads(summary.payload)["patient_id"] == "p-042"

"""How long a login flood delays the dashboard's broker reconnect.

    .venv/bin/python scripts/login_flood.py [--clients 200] [--rounds 3]

Runs a private Mosquitto and a DashboardService with a password file, stops
the broker, starts ``--clients`` concurrent clients posting wrong passwords
from rotating loopback addresses, starts the broker again and measures the
time until the dashboard's MQTT link is back. Each round measures three
ways, interleaved: no flood; a flood against the dashboard as it is; a flood
against a *reference* gate patched to what it was before issue 14 (scrypt on
the loop's default executor, unbounded, no throttle), the executor that the
MQTT client's blocking connect also uses. Prints each delay and the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from alerts.mqtt import MqttSettings
from common.ports import free_port
from physio.dashboard.auth import Credentials, hash_secret
from physio.dashboard.guard import Gate
from physio.dashboard.service import DashboardConfig, DashboardService


class Broker:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n")
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([binary, "-c", str(self.conf)], stderr=subprocess.DEVNULL)
        while True:
            with socket.socket() as probe, contextlib.suppress(OSError):
                probe.connect(("127.0.0.1", self.port))
                return
            await asyncio.sleep(0.01)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)
            self.proc = None


def _as_before(gate: Gate) -> None:
    """The reference: scrypt via asyncio.to_thread (default executor), unbounded, unthrottled."""

    async def check(name: str, secret: str) -> str | None:
        return await asyncio.to_thread(gate.credentials.check, name, secret)

    gate.check_password = check  # type: ignore[method-assign]
    gate.throttle.wait_s = lambda *_a, **_k: 0.0  # type: ignore[method-assign]


async def _flood(url: str, clients: int, stop: asyncio.Event) -> int:
    sent = 0

    async def one(index: int) -> None:
        nonlocal sent
        address = f"127.0.{2 + index // 250}.{1 + index % 250}"
        connector = aiohttp.TCPConnector(local_addr=(address, 0))
        async with aiohttp.ClientSession(connector=connector) as http:
            while not stop.is_set():
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.post(
                        url + "login",
                        data={"name": "anna", "secret": f"guess {sent}"},
                        allow_redirects=False,
                    ):
                        sent += 1

    await asyncio.gather(*(one(i) for i in range(clients)))
    return sent


async def _one(broker: Broker, mode: str, clients: int, password_file: Path) -> tuple[float, int]:
    settings = MqttSettings.from_url(
        f"mqtt://127.0.0.1:{broker.port}", reconnect_min_s=0.2, reconnect_max_s=0.2
    )
    config = DashboardConfig(
        broker=settings, listen_port=0, credentials=Credentials.load(password_file, None)
    )
    await broker.start()
    async with DashboardService(config) as service:
        assert service._runner is not None
        app: Any = service._runner.app
        if mode == "before":
            _as_before(next(v for v in app._state.values() if isinstance(v, Gate)))
        while not service.model.broker_connected:
            await asyncio.sleep(0.01)
        broker.stop()
        while service.model.broker_connected:
            await asyncio.sleep(0.01)
        stop = asyncio.Event()
        flood = asyncio.create_task(_flood(service.url, clients if mode != "none" else 0, stop))
        await asyncio.sleep(1.0)  # the flood builds up
        await broker.start()
        started = time.monotonic()
        while not service.model.broker_connected:
            await asyncio.sleep(0.005)
        delay_s = time.monotonic() - started
        stop.set()
        sent = await flood
    broker.stop()
    return delay_s, sent


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the flood's failed logins are expected
    with tempfile.TemporaryDirectory() as tmp:
        password_file = Path(tmp) / "passwd"
        password_file.write_text(f"anna:{hash_secret('correct horse battery')}\n")
        broker = Broker(Path(tmp))
        delays: dict[str, list[float]] = {"none": [], "now": [], "before": []}
        for round_ in range(args.rounds):
            for mode in delays:
                delay_s, sent = await _one(broker, mode, args.clients, password_file)
                delays[mode].append(delay_s)
                print(f"round {round_ + 1} {mode:6}: reconnect {delay_s:6.2f} s ({sent} logins)")
        for mode, values in delays.items():
            print(f"median {mode:6}: {statistics.median(values):6.2f} s")


if __name__ == "__main__":
    asyncio.run(main())

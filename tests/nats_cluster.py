"""A private three-node NATS cluster with MQTT listeners, for tests and scripts.

``NatsCluster(workdir)`` writes one config per node (free loopback ports,
its own JetStream store folder, routes to every node), starts the
``nats-server`` processes as the current user, and is ready when:

1. every node's log says it listens for MQTT clients (the process is up and
   its MQTT listener bound), and
2. a retained QoS 1 message published on one node is read back, through a
   persistent (``clean_session=False``) session, on every node. NATS keeps
   MQTT sessions, QoS 1 messages and retained messages in replicated
   JetStream streams, which exist only once JetStream has elected a leader
   for each of them; until then a connect or a publish fails or hangs. The
   round trip proves exactly what the product relies on, so it is the
   readiness probe (retried on a deadline, never a fixed sleep).

``kill(i)`` is a SIGKILL of node i (its clients see a dead TCP peer);
``start_node(i)`` restarts it on the same ports and store, and waits for it
the same way. Each node offers ``host``, ``port``, ``url`` and
``settings()``, so ``tests.brokers.Collector`` takes a node as its broker.

Used by tests/test_cluster_*.py and scripts/scale.py; nothing here is
product code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from alerts import MqttSettings
from common.ports import free_port

NATS_SERVER = shutil.which("nats-server") or (
    "/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None
)
_MQTT_READY = "Listening for MQTT clients"
_PROBE_TOPIC = "posture-test/probe"


def _raise_if_exited(nodes: list[NatsNode]) -> None:
    for node in nodes:
        if not node.running:
            raise RuntimeError(f"nats-server {node.name} exited: {node.log_text()[-800:]}")


@dataclass
class NatsNode:
    """One ``nats-server`` of the cluster (ports stay fixed across restarts)."""

    name: str
    workdir: Path
    client_port: int
    route_port: int
    port: int  # the MQTT listener
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        """``host:port`` of the MQTT listener (as ``MqttClient.address`` says it)."""
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def settings(self, **overrides: Any) -> MqttSettings:
        """Client settings for this node: MQTT 3.1.1, fast retries for tests."""
        values: dict[str, Any] = {
            "protocol": "3.1.1",
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 0.5,
            "connect_timeout_s": 5.0,
        }
        values.update(overrides)
        return MqttSettings.from_url(self.url, **values)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cpu_s(self) -> float:
        """CPU time (user + system) of the running process so far, s (0 when down)."""
        if self.proc is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        # Fields 14 and 15 of proc(5) (utime, stime), counted after "pid (comm)".
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class NatsCluster:
    """Three (or ``size``) clustered ``nats-server`` nodes with MQTT on loopback.

    Args:
        workdir: holds each node's config, log and JetStream store.
        size: number of nodes (3: JetStream then keeps a quorum with one down).
        ready_timeout_s: how long start-up may take before ``RuntimeError``;
            generous because the machine may be busy.

    Raises:
        RuntimeError: from ``start()`` when nats-server is missing, a node
            exits, or the cluster is not ready in time (with the log tails).
    """

    def __init__(self, workdir: Path, *, size: int = 3, ready_timeout_s: float = 60.0) -> None:
        if NATS_SERVER is None:
            raise RuntimeError("nats-server binary not found")
        self._binary: str = NATS_SERVER
        self.workdir = workdir
        self.ready_timeout_s = ready_timeout_s
        self.nodes = [
            NatsNode(f"n{i + 1}", workdir, free_port(), free_port(), free_port())
            for i in range(size)
        ]
        self._cpu_of_ended_s = 0.0

    def cpu_s(self) -> float:
        """CPU time of every node process so far, ended ones included, s."""
        return self._cpu_of_ended_s + sum(node.cpu_s() for node in self.nodes)

    @property
    def urls(self) -> list[str]:
        """Every node's MQTT URL, node 1 first."""
        return [node.url for node in self.nodes]

    def settings(self, **overrides: Any) -> MqttSettings:
        """Client settings listing every node (node 1 first) for failover."""
        values: dict[str, Any] = {
            "protocol": "3.1.1",
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 0.5,
            "connect_timeout_s": 5.0,
        }
        values.update(overrides)
        return MqttSettings.from_urls(self.urls, **values)

    def _config(self, node: NatsNode) -> str:
        routes = ", ".join(f"nats-route://127.0.0.1:{n.route_port}" for n in self.nodes)
        store = self.workdir / f"{node.name}-store"
        return (
            f"server_name: {node.name}\n"
            f"listen: 127.0.0.1:{node.client_port}\n"
            f'jetstream {{ store_dir: "{store}", max_memory_store: 64MB, max_file_store: 1GB }}\n'
            f"cluster {{ name: posture, listen: 127.0.0.1:{node.route_port}, "
            f"routes: [{routes}] }}\n"
            f"mqtt {{ listen: 127.0.0.1:{node.port} }}\n"
        )

    def _spawn(self, node: NatsNode) -> None:
        config = self.workdir / f"{node.name}.conf"
        config.write_text(self._config(node))
        # Truncate: readiness reads this log for the listener line.
        with open(node.log_path, "wb") as log:
            node.proc = subprocess.Popen(
                [self._binary, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
            )

    async def start(self) -> NatsCluster:
        """Start every node and wait until the cluster serves MQTT end to end."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            self._spawn(node)
        try:
            await self._wait_ready(self.nodes)
        except BaseException:
            await self.stop()
            raise
        return self

    async def start_node(self, index: int) -> None:
        """Restart node ``index`` (same ports and store) and wait until it serves."""
        node = self.nodes[index]
        if node.running:
            return
        self._spawn(node)
        await self._wait_ready([node])

    async def kill(self, index: int) -> None:
        """SIGKILL node ``index``: nothing flushed, every client cut."""
        await self._end(self.nodes[index], signal.SIGKILL)

    async def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after 5 s)."""
        for node in self.nodes:
            await self._end(node, signal.SIGTERM)

    async def __aenter__(self) -> NatsCluster:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _end(self, node: NatsNode, sig: signal.Signals) -> None:
        self._cpu_of_ended_s += node.cpu_s()
        proc, node.proc = node.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), 5.0)
            except TimeoutError:
                proc.kill()
                await asyncio.to_thread(proc.wait)

    # ------------------------------------------------------------ readiness

    async def _wait_ready(self, nodes: list[NatsNode]) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        for node in nodes:
            while _MQTT_READY not in node.log_text():
                _raise_if_exited([node])
                if time.monotonic() > deadline:
                    raise RuntimeError(self._not_ready(f"{node.name} has no MQTT listener"))
                await asyncio.sleep(0.05)
        last_error = ""
        while True:
            # A node that binds its MQTT port and then fails on its route port
            # (taken) has logged the line above: say so now, not after the timeout.
            _raise_if_exited(nodes)
            try:
                await asyncio.to_thread(self._probe_round_trip, nodes)
                return
            except (OSError, RuntimeError) as exc:
                last_error = str(exc)
            if time.monotonic() > deadline:
                raise RuntimeError(self._not_ready(f"no retained round trip: {last_error}"))
            await asyncio.sleep(0.2)

    def _not_ready(self, why: str) -> str:
        tails = "\n".join(f"--- {n.name}:\n{n.log_text()[-600:]}" for n in self.nodes)
        return f"NATS cluster not ready within {self.ready_timeout_s:g} s ({why})\n{tails}"

    def _probe_round_trip(self, nodes: list[NatsNode]) -> None:
        """Publish a retained QoS 1 probe on one node; read it on each of ``nodes``.

        Raises:
            RuntimeError or OSError: any step failed (retry later).
        """
        token = uuid.uuid4().hex.encode()
        # Publish on another node than the first reader, so the probe crosses the cluster.
        others = [n for n in self.nodes if n.running and n is not nodes[0]]
        publisher = others[0] if others else nodes[0]
        with _ProbeClient(publisher, clean=True) as client:
            client.publish_retained(_PROBE_TOPIC, token)
        for node in nodes:
            with _ProbeClient(node, clean=False) as client:
                client.expect_retained(_PROBE_TOPIC, token)
            # Reconnect clean: the probe's persistent session is removed.
            with _ProbeClient(node, clean=True):
                pass


class _ProbeClient:
    """A blocking paho 3.1.1 client with short timeouts (readiness probe only)."""

    _TIMEOUT_S = 3.0

    def __init__(self, node: NatsNode, *, clean: bool) -> None:
        self._node = node
        self._connected = threading.Event()
        self._acked = threading.Event()
        self._got: list[bytes] = []
        self._got_event = threading.Event()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"readiness-probe-{node.name}",
            protocol=mqtt.MQTTv311,
            clean_session=clean,
        )
        self._client.on_connect = lambda _c, _u, _f, rc, _p: (
            None if rc.is_failure else self._connected.set()
        )
        self._client.on_publish = lambda *_a: self._acked.set()
        self._client.on_subscribe = lambda *_a: self._acked.set()
        self._client.on_message = self._on_message

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._got.append(bytes(msg.payload))
        self._got_event.set()

    def __enter__(self) -> _ProbeClient:
        self._client.connect(self._node.host, self._node.port, 10)
        self._client.loop_start()
        if not self._connected.wait(self._TIMEOUT_S):
            self.__exit__()
            raise RuntimeError(f"{self._node.name}: no CONNACK")
        return self

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(Exception):
            self._client.disconnect()
        self._client.loop_stop()
        self._client._reset_sockets()

    def publish_retained(self, topic: str, payload: bytes) -> None:
        self._acked.clear()
        self._client.publish(topic, payload, qos=1, retain=True)
        if not self._acked.wait(self._TIMEOUT_S):
            raise RuntimeError(f"{self._node.name}: no PUBACK for the probe")

    def expect_retained(self, topic: str, payload: bytes) -> None:
        self._acked.clear()
        self._client.subscribe(topic, 1)
        if not self._acked.wait(self._TIMEOUT_S):
            raise RuntimeError(f"{self._node.name}: no SUBACK for the probe")
        deadline = time.monotonic() + self._TIMEOUT_S
        while payload not in self._got:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise RuntimeError(f"{self._node.name}: retained probe not delivered")
            self._got_event.clear()
            self._got_event.wait(remaining_s)

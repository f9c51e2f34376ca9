"""Ward-scale run on a three-node NATS cluster, with node kills.

Usage::

    .venv/bin/python scripts/scale.py                      # 4 gateways x 25, 90 s
    .venv/bin/python scripts/scale.py --gateways 10 --wearables 50 --processes 4

The script starts a private three-node NATS cluster with MQTT listeners
(tests/nats_cluster.py: loopback, free ports, its own stores), then
``--processes`` worker processes that each run their share of the gateways:
the real gateway over the simulator's bleak backend, the real publisher with
a durable outbox, each gateway's broker list starting on node 1 or node 2. A
nurses' station on node 3 (raw paho, MQTT 3.1.1, persistent session) records
every event it receives. A third of the way in, node 1 is killed with
SIGKILL and restarted 15 s later; at two thirds, node 2 the same.

It prints the events the gateways published, those the station received,
lost (published, never received, not kept in an outbox either), those still
in the outboxes at exit (durable: sent at the next start), duplicated
(received more than once by ``event_id``; a subscriber dedupes them), and
the fall latency p50/p99 from the simulated impact (the world's clock) to
the station's receipt (both wall clocks of this machine), plus the broker's
and the gateways' CPU. Every patient whose number is 1 mod 5 falls, gets up,
and falls again. Loopback only; bounded: the scenario lasts ``--duration``
seconds at real speed (twice that at most when the machine cannot keep up),
and start-up and the final flush are capped. When the machine cannot keep
up, the simulated clock slips (counted and printed) rather than bursting
samples, and the latency still runs from the true impact.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from nats_cluster import NatsCluster  # noqa: E402

from alerts import AlertEvent, AlertPublisher, MqttSettings, Outbox, PatientState  # noqa: E402
from device_gateway import Gateway, GatewayConfig  # noqa: E402
from simulator import SimulatedWorld, parse_scenario  # noqa: E402

_RESTART_AFTER_S = 15.0
_IMPACT_TICK_S = 0.02
_NEAR_KILL_S = 20.0
_WALL_FACTOR = 2.0
_IDLE_WINDOW_S = 5.0


# ----------------------------------------------------------------- scenario


def ward_scenario(gateway: int, wearables: int, duration_s: float) -> dict[str, Any]:
    """One gateway's ward: sitters, slouchers, walkers, and every fifth patient falls twice."""
    patients = []
    for index in range(wearables):
        number = gateway * 1000 + index + 1
        timeline: list[dict[str, Any]] = [{"at_s": 0.0, "activity": "sit"}]
        if index % 5 == 1:
            # Spread the falls over the run (and over node kills).
            first = 15.0 + (index * 7.3 + gateway * 3.1) % max(1.0, duration_s / 2 - 20.0)
            for fall_at in (first, first + duration_s / 2):
                if fall_at + 10.0 > duration_s:
                    continue
                timeline += [
                    {"at_s": fall_at - 6.0, "activity": "walk"},
                    {"at_s": fall_at, "activity": "fall", "direction": "forward"},
                    {"at_s": fall_at + 8.0, "activity": "get_up", "to": "stand"},
                ]
        elif index % 5 == 2:
            timeline.append(
                {"at_s": 10.0, "activity": "slouch", "flexion_deg": 38.0, "duration_s": 30.0}
            )
        elif index % 5 == 3:
            timeline.append({"at_s": 12.0, "activity": "walk", "duration_s": 20.0})
        patients.append(
            {
                "id": f"g{gateway:02d}-p{index + 1:03d}",
                "wearable": {
                    "address": f"C0:FF:EE:{number >> 16 & 0xFF:02X}:{number >> 8 & 0xFF:02X}:"
                    f"{number & 0xFF:02X}",
                    "model": "acc_gyro",
                    "sample_rate_hz": 50,
                    "mounting": {"spin_deg": ((index * 37) % 60 - 30) % 360, "tilt_deg": 10.0},
                },
                "timeline": timeline,
            }
        )
    return {
        "scenario": {"name": f"scale-{gateway}", "duration_s": duration_s},
        "patients": patients,
    }


# ------------------------------------------------------------------- workers


@dataclass
class WorkerSpec:
    gateways: list[int]
    wearables: int
    duration_s: float
    urls: list[str]
    folder: str
    engine_batch_s: float
    log_level: int


class CountingSink:
    """The real publisher; remembers each event the gateway handed it, and when."""

    def __init__(self, publisher: AlertPublisher) -> None:
        self.publisher = publisher
        self.sent: list[dict[str, Any]] = []

    async def publish_event(self, event: AlertEvent) -> None:
        self.sent.append(
            {
                "event_id": event.event_id,
                "type": event.type.value,
                "patient_id": event.patient_id,
                "queued_s": time.time(),
            }
        )
        await self.publisher.publish_event(event)

    def update_state(self, state: PatientState) -> None:
        self.publisher.update_state(state)

    def set_device_metrics(self, patient_id: str, metrics: dict[str, int]) -> None:
        self.publisher.set_device_metrics(patient_id, metrics)


async def impact_clock(world: SimulatedWorld, impacts: list[dict[str, Any]]) -> None:
    """Stamp each true impact with the wall time it happened at (scenario -> wall)."""
    pending = sorted(impacts, key=lambda item: item["impact_scenario_s"])
    while pending:
        now_s = world.scenario_time()
        while pending and pending[0]["impact_scenario_s"] <= now_s:
            item = pending.pop(0)
            # Corrects for this tick's lateness: the impact was (now - impact)
            # scenario seconds ago, i.e. that many wall seconds at speed 1.
            item["impact_wall_s"] = time.time() - (now_s - item["impact_scenario_s"])
        await asyncio.sleep(_IMPACT_TICK_S)


async def run_worker(spec: WorkerSpec) -> dict[str, Any]:
    started = time.monotonic()
    sinks: list[CountingSink] = []
    impacts: list[dict[str, Any]] = []
    slipped_s: list[float] = []
    left_in_outboxes: list[str] = []
    services: list[Gateway] = []
    async with AsyncExitStack() as stack:
        tasks = await stack.enter_async_context(asyncio.TaskGroup())
        running: list[asyncio.Task[None]] = []
        worlds: list[SimulatedWorld] = []
        for gateway in spec.gateways:
            raw = ward_scenario(gateway, spec.wearables, spec.duration_s)
            scenario = parse_scenario(raw, source=f"<scale gateway {gateway}>")
            config = GatewayConfig.from_mapping(
                {
                    "gateway_id": f"gw-{gateway:02d}",
                    "ble": {"engine_batch_s": spec.engine_batch_s},
                    "wearables": [
                        {"address": p.wearable.address, "patient_id": p.id}
                        for p in scenario.patients
                    ],
                }
            )
            # Half the gateways start on node 1, half on node 2; node 3 last.
            first, second, third = spec.urls
            order = [first, second, third] if gateway % 2 == 0 else [second, first, third]
            settings = MqttSettings.from_urls(
                order, protocol="3.1.1", reconnect_min_s=0.2, reconnect_max_s=2.0
            )
            world = await stack.enter_async_context(
                SimulatedWorld(scenario, seed=gateway, speed=1.0)
            )
            publisher = await stack.enter_async_context(
                AlertPublisher(
                    settings,
                    gateway_id=config.gateway_id,
                    outbox_path=Path(spec.folder) / f"outbox-{gateway:02d}.sqlite",
                    shutdown_grace_s=60.0,
                )
            )
            sink = CountingSink(publisher)
            gateway_service = Gateway(
                config,
                sink,
                scanner_backend=world.scanner_backend,
                client_backend=world.client_backend,
            )
            for patient in scenario.patients:
                # Over the whole run (the default is up to now, i.e. nothing yet).
                truth = world.truth(patient.wearable.address, np.array([0.0, spec.duration_s]))
                impacts += [
                    {"patient_id": patient.id, "impact_scenario_s": t, "gateway": gateway}
                    for t in truth.fall_impact_s
                ]
            running.append(tasks.create_task(gateway_service.run(), name=f"gateway {gateway}"))
            services.append(gateway_service)
            sinks.append(sink)
            worlds.append(world)
        for gateway, world in zip(spec.gateways, worlds, strict=True):
            mine = [i for i in impacts if i["gateway"] == gateway]
            running.append(tasks.create_task(impact_clock(world, mine)))
        # Bounded in wall time too: a machine that cannot keep up (the
        # simulated clock slips) stops at twice the scenario length.
        run_started_s = time.process_time()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                worlds[0].sleep_until(spec.duration_s), _WALL_FACTOR * spec.duration_s
            )
        scenario_s = min(world.scenario_time() for world in worlds)
        run_cpu_s = time.process_time() - run_started_s
        packets: Counter[str] = Counter()
        for service in services:
            for counters in service.device_metrics().values():
                packets.update(counters)
        for task in running:
            task.cancel()
        slipped_s = [world.slipped_s for world in worlds]
        # Leaving the stack: each publisher flushes its outbox (60 s grace).
    for gateway in spec.gateways:
        with Outbox(Path(spec.folder) / f"outbox-{gateway:02d}.sqlite") as outbox:
            # Still durable, sent at the gateway's next start: not lost, late.
            left_in_outboxes += [e.event_id for e in outbox.next_batch(len(outbox) + 1)]
    return {
        "states_published": sum(sink.publisher.metrics.states_published for sink in sinks),
        "cpu_s": run_cpu_s,
        "packets": dict(packets),
        "scenario_s": scenario_s,
        "gateways": spec.gateways,
        "wearables": len(spec.gateways) * spec.wearables,
        "wall_s": time.monotonic() - started,
        "sent": [item for sink in sinks for item in sink.sent],
        "impacts": impacts,
        "slipped_s": slipped_s,
        "left_in_outboxes": left_in_outboxes,
    }


def worker_main(spec: WorkerSpec, result_path: str) -> None:
    logging.basicConfig(level=spec.log_level, format="%(asctime)s worker %(name)s: %(message)s")
    result = asyncio.run(run_worker(spec))
    Path(result_path).write_text(json.dumps(result))


# ------------------------------------------------------------ the station


class Station:
    """The nurses' station: a raw paho 3.1.1 persistent session on one node."""

    def __init__(self, host: str, port: int) -> None:
        self.received: dict[str, list[float]] = {}
        self.online: set[str] = set()
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id="scale-nurses-station",
            protocol=mqtt.MQTTv311,
            clean_session=False,
        )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_a: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(1, 2)
        self._address = (host, port)

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure and not flags.session_present:
            client.subscribe(
                [("posture/v1/patients/+/events", 1), ("posture/v1/gateways/+/status", 1)]
            )
        elif not rc.is_failure:
            self._subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        now_s = time.time()
        if not msg.payload:
            return
        data = json.loads(msg.payload)
        with self._lock:
            if msg.topic.endswith("/events"):
                self.received.setdefault(data["event_id"], []).append(now_s)
            elif data.get("status") == "online":
                self.online.add(data["gateway_id"])

    def start(self) -> None:
        self._client.connect(*self._address, keepalive=10)
        self._client.loop_start()
        if not self._subscribed.wait(30):
            raise RuntimeError("the station got no SUBACK within 30 s")

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def snapshot(self) -> tuple[dict[str, list[float]], set[str]]:
        with self._lock:
            return {k: list(v) for k, v in self.received.items()}, set(self.online)


# --------------------------------------------------------------------- main


async def wait_for(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.1)


async def node_kills(
    cluster: NatsCluster, duration_s: float, log: list[str], kill_walls_s: list[float]
) -> None:
    """Kill node 1 at a third of the run and node 2 at two thirds; restart each."""
    started = time.monotonic()
    for index, at_s in ((0, duration_s / 3), (1, 2 * duration_s / 3)):
        await asyncio.sleep(max(0.0, started + at_s - time.monotonic()))
        kill_walls_s.append(time.time())
        await cluster.kill(index)
        log.append(f"{time.monotonic() - started:5.1f} s  SIGKILL node {index + 1}")
        await asyncio.sleep(_RESTART_AFTER_S)
        await cluster.start_node(index)
        log.append(f"{time.monotonic() - started:5.1f} s  node {index + 1} back")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def scale(args: argparse.Namespace) -> int:
    wall_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="posture-scale-") as folder:
        cluster = NatsCluster(Path(folder) / "nats")
        await cluster.start()
        print(f"cluster ready in {time.monotonic() - wall_start:.1f} s: {', '.join(cluster.urls)}")
        station = Station(cluster.nodes[2].host, cluster.nodes[2].port)
        await asyncio.to_thread(station.start)
        # The cluster's own cost with no traffic (heartbeats, JetStream), for
        # the broker figure below: a measurement window, not a readiness wait.
        idle_cpu_s = cluster.cpu_s()
        await asyncio.sleep(_IDLE_WINDOW_S)
        idle_share = (cluster.cpu_s() - idle_cpu_s) / _IDLE_WINDOW_S
        print(f"idle cluster: {100 * idle_share:.1f} % of one core (3 nodes)")
        context = multiprocessing.get_context("spawn")
        shares = [list(range(p, args.gateways, args.processes)) for p in range(args.processes)]
        workers = []
        for number, share in enumerate(s for s in shares if s):
            spec = WorkerSpec(
                share,
                args.wearables,
                args.duration,
                cluster.urls,
                folder,
                args.engine_batch,
                logging.WARNING if args.verbose else logging.ERROR,
            )
            result = str(Path(folder) / f"worker-{number}.json")
            process = context.Process(target=worker_main, args=(spec, result), daemon=False)
            process.start()
            workers.append((process, result))
        kills: list[str] = []
        kill_walls_s: list[float] = []
        failed = False
        broker = (float("nan"), float("nan"))
        broker_cpu_start_s = broker_wall_start = 0.0

        def workers_failed() -> bool:
            return any(p.exitcode not in (None, 0) for p, _ in workers)

        try:
            await wait_for(
                lambda: len(station.snapshot()[1]) == args.gateways or workers_failed(),
                180.0,
                "every gateway online",
            )
            if workers_failed():
                raise RuntimeError("a worker process failed (its traceback is above)")
            print(
                f"{args.gateways} gateways x {args.wearables} wearables online in "
                f"{len(workers)} processes; scenario {args.duration:g} s"
                f"{' with node kills' if args.kills else ''}"
            )
            killer = asyncio.create_task(
                node_kills(cluster, args.duration, kills, kill_walls_s)
                if args.kills
                else asyncio.sleep(0)
            )
            broker_cpu_start_s, broker_wall_start = cluster.cpu_s(), time.monotonic()
            await wait_for(
                lambda: all(not p.is_alive() for p, _ in workers),
                _WALL_FACTOR * args.duration + 120.0,
                "the workers to finish",
            )
            await killer
            broker = (cluster.cpu_s() - broker_cpu_start_s, time.monotonic() - broker_wall_start)
            if workers_failed():
                raise RuntimeError("a worker process failed (its traceback is above)")
            results = [json.loads(Path(path).read_text()) for _, path in workers]
            sent = [item for r in results for item in r["sent"]]
            sent_ids = {item["event_id"] for item in sent}
            # The last acknowledged events may still be on their way to the station.
            await wait_for(lambda: sent_ids <= set(station.snapshot()[0]), 60.0, "the last events")
        except RuntimeError as exc:
            failed = True
            if broker_wall_start:
                broker = (
                    cluster.cpu_s() - broker_cpu_start_s,
                    time.monotonic() - broker_wall_start,
                )
            print(f"error: {exc}", file=sys.stderr)
            results = [
                json.loads(Path(path).read_text()) for _, path in workers if Path(path).exists()
            ]
            sent = [item for r in results for item in r["sent"]]
        finally:
            for process, _ in workers:
                if process.is_alive():
                    process.kill()
            await asyncio.to_thread(station.stop)
            await cluster.stop()
    code = report(
        args, results, sent, station, kills, kill_walls_s, broker, time.monotonic() - wall_start
    )
    return 2 if failed else code


def report(
    args: argparse.Namespace,
    results: list[dict[str, Any]],
    sent: list[dict[str, Any]],
    station: Station,
    kills: list[str],
    kill_walls_s: list[float],
    broker: tuple[float, float],
    wall_s: float,
) -> int:
    received, _online = station.snapshot()
    sent_ids = {item["event_id"] for item in sent}
    left_ids = {event_id for r in results for event_id in r["left_in_outboxes"]}
    # Lost: never received and not kept either (an outbox keeps an event
    # until the broker acknowledges it, across restarts).
    lost = sent_ids - set(received) - left_ids
    deliveries = sum(len(times) for event_id, times in received.items() if event_id in sent_ids)
    duplicated = deliveries - len(sent_ids & set(received))
    impacts = [i for r in results for i in r["impacts"] if "impact_wall_s" in i]
    latencies_s: list[float] = []
    near_kill_s: list[float] = []  # impact within _NEAR_KILL_S after a node kill
    unmatched = 0
    for item in sent:
        if item["type"] != "fall_detected" or item["event_id"] not in received:
            continue
        # The latest impact of this patient before the detection was queued.
        before = [
            i["impact_wall_s"]
            for i in impacts
            if i["patient_id"] == item["patient_id"] and i["impact_wall_s"] <= item["queued_s"]
        ]
        if not before:
            unmatched += 1
            continue
        impact_s = max(before)
        latency_s = min(received[item["event_id"]]) - impact_s
        latencies_s.append(latency_s)
        if any(0.0 <= impact_s - k <= _NEAR_KILL_S for k in kill_walls_s):
            near_kill_s.append(latency_s)
    falls_true = len(impacts)
    detected_patients = Counter(
        item["patient_id"] for item in sent if item["type"] == "fall_detected"
    )
    impacted_patients = Counter(i["patient_id"] for i in impacts)
    undetected = sum(
        max(0, n - detected_patients[patient]) for patient, n in impacted_patients.items()
    )
    ends = {r_gateway: r["scenario_s"] for r in results for r_gateway in r["gateways"]}
    late_impacts = sum(
        1 for i in impacts if i["impact_scenario_s"] > ends.get(i["gateway"], 0.0) - 10.0
    )
    packets: Counter[str] = Counter()
    for r in results:
        packets.update(r["packets"])
    slipped = [s for r in results for s in r["slipped_s"]]
    left = len(left_ids)
    by_type = Counter(item["type"] for item in sent)
    print()
    for line in kills:
        print(f"  {line}")
    print(
        f"\n{args.gateways} gateways x {args.wearables} wearables "
        f"({args.gateways * args.wearables} in all), {args.processes} processes, "
        f"{args.duration:g} s scenario, 3-node NATS cluster"
        f"{' with node kills' if args.kills else ''}, wall {wall_s:.0f} s"
    )
    print(
        f"events: published {len(sent_ids)}, received on node 3 {len(sent_ids & set(received))}, "
        f"lost {len(lost)}, duplicated {duplicated} (before dedupe by event_id; 0 after), "
        f"still in the gateways' outboxes at exit {left} (durable: sent at the next start)"
    )
    print(f"by type: {dict(sorted(by_type.items()))}")
    print(
        f"falls: {falls_true} simulated impacts, {by_type['fall_detected']} detected; "
        f"latency impact -> station p50 {percentile(latencies_s, 50):.2f} s, "
        f"p99 {percentile(latencies_s, 99):.2f} s, "
        f"max {max(latencies_s, default=float('nan')):.2f} s"
        + (f" ({unmatched} unmatched)" if unmatched else "")
    )
    calm_s = [s for s in latencies_s if s not in near_kill_s]
    if kill_walls_s:
        print(
            f"  impact within {_NEAR_KILL_S:g} s after a node kill: {len(near_kill_s)} falls, "
            f"p50 {percentile(near_kill_s, 50):.2f} s, "
            f"max {max(near_kill_s, default=float('nan')):.2f} s; "
            f"the other {len(calm_s)}: p50 {percentile(calm_s, 50):.2f} s, "
            f"p99 {percentile(calm_s, 99):.2f} s"
        )
    states = sum(r["states_published"] for r in results)
    broker_cpu_s, broker_wall_s = broker
    messages = states + len(sent_ids)
    print(
        f"broker load: {states} retained states + {len(sent_ids)} QoS 1 events in "
        f"{broker_wall_s:.0f} s ({messages / broker_wall_s:.0f} messages/s in); the three "
        f"nats-server processes used {broker_cpu_s:.1f} CPU-s = "
        f"{100 * broker_cpu_s / broker_wall_s:.1f} % of one core, "
        f"{1e6 * broker_cpu_s / max(1, messages):.0f} µs per message in"
    )
    # CPU per wearable per scenario second: the share of a core one wearable
    # needs at real time, whether or not this machine gave the run that much.
    worker_cpu_s = sum(r["cpu_s"] for r in results)
    wearable_s = sum(r["wearables"] * r["scenario_s"] for r in results)
    reached_s = min((r["scenario_s"] for r in results), default=float("nan"))
    print(
        f"gateway processes (gateway + engine + publisher + simulator): {worker_cpu_s:.0f} CPU-s "
        f"for {reached_s:.0f} s of scenario = {100 * worker_cpu_s / max(1e-9, wearable_s):.2f} % "
        "of one core per wearable at real time"
    )
    if undetected:
        print(
            f"  {undetected} impact(s) without a fall alert; {late_impacts} impact(s) fell in the "
            "last 10 s of scenario, where the run may end before the alert"
        )
    print(
        f"packets: {packets['packets']} processed, {packets['queue_dropped']} dropped by full "
        f"gateway queues (the gateway could not keep up), {packets['lost']} sequence gaps"
    )
    if any(s > 0 for s in slipped):
        print(
            f"the machine fell behind: simulated clocks slipped up to {max(slipped):.1f} s "
            "(latency still counts from the true impact)"
        )
    return 1 if lost or left else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateways", type=int, default=4, help="gateways (default 4)")
    parser.add_argument("--wearables", type=int, default=25, help="per gateway (default 25)")
    parser.add_argument("--processes", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--duration", type=float, default=90.0, help="scenario seconds (90)")
    parser.add_argument(
        "--engine-batch",
        type=float,
        default=0.1,
        metavar="S",
        help="ble.engine_batch_s, the engine tick, of every gateway (default 0.1)",
    )
    parser.add_argument(
        "--no-kills",
        dest="kills",
        action="store_false",
        help="no node kills (a baseline for the latency and broker figures)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="the workers' warnings (reconnections)"
    )
    args = parser.parse_args()
    if not 1 <= args.processes <= args.gateways or args.duration < 60:
        parser.error("need 1 <= --processes <= --gateways and --duration >= 60")
    return asyncio.run(scale(args))


if __name__ == "__main__":
    sys.exit(main())

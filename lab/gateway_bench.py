"""``posture-monitor bench gateway``: what the gateway costs per wearable, end to end.

The real gateway path (bleak's API → packet decode → engine → events →
durable outbox → MQTT to a real broker) runs unchanged over recorded
wearables (:mod:`lab.replay`), so the simulator's physics is not in the
figure. A subscriber in another process receives the events from the
broker, as a nurse's screen would, and times every fall from its true
impact to its arrival. For each ``--wearables`` count it prints the CPU share
of one core per wearable (this process: gateway, engine, publisher and the
replay's notification dispatch, which a real BLE stack also costs), how many
wearables one core would serve at that cost, fall latency p50/p99, the
event-loop lag, and packets the gateway had to drop. A count keeps real time
when nothing was dropped, every fall arrived, and the fall latency p99 is at
most 2.5 s.

With ``--processes P`` the wearables are split into the gateway's shards
(``device_gateway.shards``, as ``run --processes P`` splits them) and each
shard's gateway runs in a process of its own; the CPU share is then summed
over those processes, and the fall latency is still timed by the one
subscriber. ``--processes 1,2`` measures both, alternating, count by count.

The broker is a private Mosquitto on a free loopback port (``--broker`` to
use another); figures are CPU time, so a busy machine slows the run but
shifts the share per wearable far less than wall-clock timing would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import multiprocessing
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alerts import AlertPublisher, MqttSettings
from common.ports import free_port
from device_gateway import BleSettings, Gateway, GatewayConfig, WearableConfig
from device_gateway.config import MAX_PROCESSES
from device_gateway.shards import Shard, shards
from lab.replay import Recording, ReplayWard, record
from posture.kernels import selected_kernel, warm_up
from simulator import parse_scenario

__all__ = [
    "GatewayBenchResult",
    "configure_gateway_parser",
    "private_mosquitto",
    "run_gateway",
    "run_gateway_bench",
    "ward_recordings",
]

_TOPIC_ROOT = "posture/v1"
# A ward's day in four patients (50 Hz, gyroscope): one falls, the others
# sit, slouch, walk and lie, so the engine does its ordinary work.
# A fall is timed when its impact came this long before the measured span
# ended (the detector's look at what follows an impact).
FALL_LOOK_S = 4.0
# The ward's faller hits the floor 8.75 s after its wearable starts: a shorter
# span times no fall, so it could never show that a load keeps real time.
MIN_SECONDS = 15.0
_WARD = {
    "scenario": {"name": "bench-ward", "duration_s": 600.0},
    "patients": [
        {
            "id": "faller",
            "wearable": {"address": "C0:FF:EE:00:09:01"},
            "timeline": [
                {"at_s": 0.0, "activity": "stand"},
                {"at_s": 3.0, "activity": "walk"},
                {"at_s": 8.0, "activity": "fall", "direction": "forward"},
            ],
        },
        {
            "id": "sloucher",
            "wearable": {"address": "C0:FF:EE:00:09:02"},
            "timeline": [
                {"at_s": 0.0, "activity": "sit"},
                {"at_s": 8.0, "activity": "slouch", "flexion_deg": 35.0, "duration_s": 60.0},
            ],
        },
        {
            "id": "walker",
            "wearable": {"address": "C0:FF:EE:00:09:03"},
            "timeline": [
                {"at_s": 0.0, "activity": "stand"},
                {"at_s": 4.0, "activity": "walk", "duration_s": 40.0},
                {"at_s": 50.0, "activity": "sit"},
            ],
        },
        {
            "id": "rester",
            "wearable": {"address": "C0:FF:EE:00:09:04"},
            "timeline": [
                {"at_s": 0.0, "activity": "sit"},
                {"at_s": 15.0, "activity": "lie_down"},
            ],
        },
    ],
}


@dataclass(frozen=True)
class GatewayBenchResult:
    wearables: int
    seconds: float
    cpu_share_per_wearable: float
    """Fraction of one core per wearable (the gateway processes' CPU time / wall time,
    summed over the processes, / wearables)."""
    wearables_per_core: float
    """How many wearables one core serves at that cost."""
    packets_delivered: int
    packets_dropped: int
    falls_expected: int
    falls_received: int
    fall_latency_p50_s: float
    fall_latency_p99_s: float
    loop_lag_p99_s: float
    """The worst of the processes' event-loop lag p99."""
    replay_late_max_s: float
    processes: int = 1
    """Gateway processes the wearables were spread over."""

    @property
    def real_time(self) -> bool:
        return (
            self.packets_dropped == 0
            and self.falls_received == self.falls_expected
            and self.fall_latency_p99_s <= 2.5
        )


def ward_recordings(seconds: float) -> list[Recording]:
    """The bench ward's four patients, recorded for ``seconds`` each."""
    scenario = parse_scenario(_WARD, source="<bench ward>")
    return [record(p, seconds, index=i, seed=i) for i, p in enumerate(scenario.patients)]


def run_gateway_bench(
    wearables: int,
    seconds: float,
    broker_url: str,
    recordings: Sequence[Recording],
    *,
    fall_every: int = 25,
    ble: BleSettings | None = None,
    processes: int = 1,
) -> GatewayBenchResult:
    """Replay ``wearables`` wearables for ``seconds`` through the gateway; measure.

    Every ``fall_every``-th wearable replays the fall; the others cycle
    through the ward's other patients. Start times spread over a few seconds so
    packets and falls do not arrive in lockstep. ``ble``: the gateway's BLE
    settings (default: the defaults). ``processes`` > 1: the gateway's shards,
    each in a process of its own (the replay of its wearables beside it).
    """
    config_defaults = ble or BleSettings()
    faller = next(i for i, r in enumerate(recordings) if r.fall_impacts_s)
    others = [i for i in range(len(recordings)) if i != faller]
    assignment = [
        faller if i % fall_every == 0 else others[i % len(others)] for i in range(wearables)
    ]
    # Start times spread over less than the gateway's notification watchdog
    # (a wearable silent that long after subscribing is reconnected).
    spread_s = min(0.8 * config_defaults.notify_timeout_s, seconds / 3)
    offsets = [spread_s * i / max(wearables, 1) for i in range(wearables)]
    ward = ReplayWard(recordings, assignment, offsets)
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        receipts: Any = spawn.Queue()
        ready: Any = spawn.Event()
        subscriber = spawn.Process(
            target=_subscribe, args=(broker_url, receipts, ready), daemon=True
        )
        subscriber.start()
        try:
            if not ready.wait(30.0):
                raise RuntimeError("the bench subscriber could not connect to the broker")
            config = GatewayConfig(
                gateway_id="bench",
                wearables=tuple(
                    WearableConfig(address=a, patient_id=f"b-{i:05d}")
                    for i, a in enumerate(ward.addresses)
                ),
                outbox_path=Path(tmp) / "outbox.sqlite",
                ble=config_defaults,
            )
            if processes == 1:
                measured = [_measure_in_process(config, broker_url, ward, seconds)]
            else:
                parts = shards(config, processes)
                measured = _measure_in_processes(
                    parts, broker_url, recordings, assignment, offsets, seconds
                )
            falls = {k: v for m in measured for k, v in m["falls"].items()}
            latencies = _fall_latencies(receipts, falls, deadline_s=10.0)
        finally:
            subscriber.terminate()
            subscriber.join(5.0)
    lat = np.asarray(latencies) if latencies else np.asarray([math.nan])
    share = sum(m["cpu_s"] / m["wall_s"] for m in measured) / wearables
    return GatewayBenchResult(
        wearables=wearables,
        seconds=seconds,
        cpu_share_per_wearable=share,
        wearables_per_core=1.0 / share if share > 0 else math.inf,
        packets_delivered=sum(m["delivered"] for m in measured),
        packets_dropped=sum(m["dropped"] for m in measured),
        falls_expected=len(falls),
        falls_received=len(latencies),
        fall_latency_p50_s=float(np.percentile(lat, 50)),
        fall_latency_p99_s=float(np.percentile(lat, 99)),
        loop_lag_p99_s=max(m["loop_lag_p99_s"] for m in measured),
        replay_late_max_s=max(m["replay_late_max_s"] for m in measured),
        processes=len(measured),
    )


def _measure_in_process(
    config: GatewayConfig, broker_url: str, ward: ReplayWard, seconds: float
) -> dict[str, Any]:
    """One gateway process's figures (:func:`_measure`) and the falls it should report."""
    measured = asyncio.run(_measure(config, broker_url, ward, seconds))
    measured["falls"] = _expected_falls(ward, measured["wall_minus_loop_s"], measured["end_loop_s"])
    measured["replay_late_max_s"] = ward.late_s_max
    return measured


def _measure_in_processes(
    parts: Sequence[Shard],
    broker_url: str,
    recordings: Sequence[Recording],
    assignment: Sequence[int],
    offsets: Sequence[float],
    seconds: float,
) -> list[dict[str, Any]]:
    """Each shard's gateway in a spawned process of its own; their figures."""
    spawn = multiprocessing.get_context("spawn")
    results: Any = spawn.Queue()
    workers = [
        spawn.Process(
            target=_shard_worker,
            args=(shard, broker_url, recordings, assignment, offsets, seconds, results),
            name=shard.id,
        )
        for shard in parts
    ]
    for worker in workers:
        worker.start()
    try:
        # A shard's figures come once its whole measured span and drain are done.
        measured = [results.get(timeout=seconds + 300.0) for _ in workers]
    finally:
        for worker in workers:
            worker.join(30.0)
            if worker.is_alive():
                worker.kill()
    failed = [m["error"] for m in measured if "error" in m]
    if failed:
        raise RuntimeError(f"a bench gateway process failed: {failed[0]}")
    return measured


def _shard_worker(
    shard: Shard,
    broker_url: str,
    recordings: Sequence[Recording],
    assignment: Sequence[int],
    offsets: Sequence[float],
    seconds: float,
    results: Any,
) -> None:
    """Child process: replay the ward to one shard's gateway and report its figures.

    The whole ward advertises (as every wearable in range would); the shard's
    gateway connects only its own wearables, and only they are replayed.
    """
    # A spawned process has no logging set up: warnings (a reconnecting
    # wearable) name the shard they come from.
    logging.basicConfig(
        level=logging.WARNING,
        format=f"%(asctime)s %(levelname)s [{shard.id}] %(name)s: %(message)s",
    )
    try:
        ward = ReplayWard(recordings, assignment, offsets)
        results.put(_measure_in_process(shard.config, broker_url, ward, seconds))
    except BaseException as exc:  # reported to the parent, which raises it
        results.put({"error": f"{shard.id}: {exc!r}"})
        raise


async def _measure(
    config: GatewayConfig, broker_url: str, ward: ReplayWard, seconds: float
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    async with AlertPublisher(
        MqttSettings.from_url(broker_url, protocol="5"),
        gateway_id=config.gateway_id,
        topic_root=config.topic_root,
        outbox_path=config.outbox_path,
    ) as publisher:
        gateway = Gateway(
            config,
            publisher,
            scanner_backend=ward.scanner_backend,
            client_backend=ward.client_backend,
            # In this process, no child: the bench measures the compiled
            # engine's steady state (the kernels are in the disk cache).
            prepare_kernels=lambda: asyncio.to_thread(warm_up),
        )
        async with asyncio.TaskGroup() as tasks:
            gateway_task = tasks.create_task(gateway.run(), name="gateway")
            replay_task = tasks.create_task(ward.run(), name="replay")
            while ward.subscribed_count() < len(config.wearables) or not _compiled(gateway):
                await asyncio.sleep(0.05)  # polling a count: set-up, not measured
            wall_minus_loop_s = time.time() - loop.time()
            cpu0, wall0 = time.process_time(), loop.time()
            end = wall0 + seconds
            while loop.time() < end:
                before = loop.time()
                await asyncio.sleep(0.1)
                lags.append(loop.time() - before - 0.1)
            cpu_s, wall_s = time.process_time() - cpu0, loop.time() - wall0
            end_loop_s = loop.time()
            delivered = ward.delivered
            dropped = sum(s.counters.queue_dropped for s in gateway.supervisors)
            # Let the last falls' events leave the outbox before stopping.
            await asyncio.sleep(5.0)
            gateway_task.cancel()
            replay_task.cancel()
    return {
        "cpu_s": cpu_s,
        "wall_s": wall_s,
        "delivered": delivered,
        "dropped": dropped,
        "loop_lag_p99_s": float(np.percentile(lags, 99)) if lags else math.nan,
        "wall_minus_loop_s": wall_minus_loop_s,
        "end_loop_s": end_loop_s,
    }


def _compiled(gateway: Gateway) -> bool:
    """Whether the gateway's engines compute with the compiled kernels (or
    NumPy is all there is here)."""
    tick = gateway.tick
    return tick is not None and tick.kernel is selected_kernel()


def _expected_falls(
    ward: ReplayWard, wall_minus_loop_s: float, end_loop_s: float
) -> dict[str, float]:
    """Patient id → wall time (POSIX s) of the true impact, for falls inside the run.

    A fall counts when its impact came at least ``FALL_LOOK_S`` before the
    measured span ended.
    """
    out: dict[str, float] = {}
    for i, address in enumerate(ward.addresses):
        if address not in ward.started_at:
            continue  # another gateway process's wearable
        for impact_s in ward.recording_of(address).fall_impacts_s:
            impact_loop_s = ward.started_at[address] + impact_s
            if impact_loop_s + FALL_LOOK_S <= end_loop_s:
                out[f"b-{i:05d}"] = impact_loop_s + wall_minus_loop_s
    return out


def _fall_latencies(receipts: Any, falls: dict[str, float], deadline_s: float) -> list[float]:
    latencies: list[float] = []
    waiting = dict(falls)
    end = time.monotonic() + deadline_s
    while waiting and time.monotonic() < end:
        try:
            patient_id, received = receipts.get(timeout=max(end - time.monotonic(), 0.01))
        except Exception:  # queue.Empty from the other process
            break
        if patient_id in waiting:
            latencies.append(received - waiting.pop(patient_id))
    return latencies


def _subscribe(broker_url: str, receipts: Any, ready: Any) -> None:
    """Child process: receive fall events and report (patient id, arrival wall time)."""
    import paho.mqtt.client as mqtt

    settings = MqttSettings.from_url(broker_url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)

    def on_connect(c: Any, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
        c.subscribe(f"{_TOPIC_ROOT}/patients/+/events", qos=1)

    def on_subscribe(*_: Any) -> None:
        ready.set()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        arrived = time.time()
        with contextlib.suppress(ValueError):
            event = json.loads(msg.payload)
            if event.get("type") == "fall_detected":
                receipts.put((event["patient_id"], arrived))

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(settings.host, settings.port)
    client.loop_forever()


@contextlib.contextmanager
def private_mosquitto() -> Iterator[str]:
    """A Mosquitto on a free loopback port for the run; yields its URL."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.access(binary, os.X_OK):
        raise FileNotFoundError("mosquitto is not installed: pass --broker URL")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-mosquitto-") as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n")
        proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 10.0
            while True:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", port), 0.2),
                ):
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the private mosquitto did not start")
                time.sleep(0.05)
            yield f"mqtt://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(5.0)


def configure_gateway_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wearables", default="100,500,1000", help="comma-separated wearable counts"
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="measured span per count")
    parser.add_argument("--broker", metavar="URL", help="broker (default: a private Mosquitto)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--tick",
        type=float,
        metavar="S",
        help="the gateway's engine tick, ble.engine_batch_s (default: the default)",
    )
    parser.add_argument(
        "--processes",
        default="1",
        metavar="P",
        help="gateway processes the wearables are spread over (comma-separated: each "
        "count is measured with each, alternating), as `run --processes`",
    )
    parser.add_argument(
        "--engine-on-loop",
        action="store_true",
        help="run the engine pass on the event loop, not in a worker thread",
    )


def run_gateway(args: argparse.Namespace) -> int:
    try:
        counts = [int(v) for v in str(args.wearables).split(",") if v.strip()]
        if not counts or min(counts) < 1 or max(counts) > 20_000:
            raise ValueError
    except ValueError:
        print(f"bench gateway: --wearables must be counts like 100,500, got {args.wearables!r}")
        return 2
    try:
        process_counts = [int(v) for v in str(args.processes).split(",") if v.strip()]
        if not process_counts or min(process_counts) < 1 or max(process_counts) > MAX_PROCESSES:
            raise ValueError
    except ValueError:
        print(
            f"bench gateway: --processes must be counts in 1..{MAX_PROCESSES} like 1,2, "
            f"got {args.processes!r}"
        )
        return 2
    if not (math.isfinite(args.seconds) and MIN_SECONDS <= args.seconds <= 3600.0):
        print(
            f"bench gateway: --seconds must be in {MIN_SECONDS:g}..3600 (a shorter run ends "
            f"before the ward's first fall can be timed), got {args.seconds!r}"
        )
        return 2
    ble = BleSettings(
        engine_batch_s=BleSettings().engine_batch_s if args.tick is None else args.tick,
        engine_thread=not args.engine_on_loop,
    )
    if not 0.0 <= ble.engine_batch_s <= 1.0:
        print(f"bench gateway: --tick must be in 0..1 s, got {args.tick!r}")
        return 2
    recordings = ward_recordings(args.seconds + 15.0)
    with contextlib.ExitStack() as stack:
        url = args.broker or stack.enter_context(private_mosquitto())
        results = [
            run_gateway_bench(n, args.seconds, url, recordings, ble=ble, processes=p)
            for n in counts
            for p in process_counts
        ]
    if args.json:
        print(json.dumps([{**asdict(r), "real_time": r.real_time} for r in results], indent=2))
        return 0
    print(
        "gateway path (decode, engine, outbox, MQTT to a real broker) over replayed "
        f"50 Hz wearables, {args.seconds:g} s each, engine tick {ble.engine_batch_s:g} s "
        f"{'on the loop' if args.engine_on_loop else 'in a worker thread'}, "
        "CPU time of the gateway process(es) (all their threads, summed):"
    )
    print(
        f"{'wearables':>9} {'procs':>5} {'core/wearable':>14} {'per core':>9} {'falls':>7} "
        f"{'p50 s':>6} {'p99 s':>6} {'loop lag p99':>13} {'dropped':>8} {'real time':>9}"
    )
    for r in results:
        print(
            f"{r.wearables:>9} {r.processes:>5} {r.cpu_share_per_wearable:>13.3%} "
            f"{r.wearables_per_core:>9,.0f} "
            f"{r.falls_received:>3}/{r.falls_expected:<3} {r.fall_latency_p50_s:>6.2f} "
            f"{r.fall_latency_p99_s:>6.2f} {r.loop_lag_p99_s:>12.3f}s {r.packets_dropped:>8} "
            f"{'yes' if r.real_time else 'NO':>9}"
        )
    return 0

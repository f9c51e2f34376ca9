"""What reading the MQTT contract costs, and what made-up patients cost a dashboard.

Usage::

    .venv/bin/python scripts/bench_intake.py [--messages 20000] [--patients 5000]

Prints, measured in this process (CPU time, interleaved A/B rounds):

* per payload kind, ``read_message`` (bounded decode, ranges, ids, clock)
  against a bare ``json.loads`` of the same bytes, as a ratio;
* the dashboard's receive path per message (``handle_message``: parse,
  model, day summary) on a replay of slouch events;
* the memory a dashboard keeps after states and events of ``--patients``
  made-up patient ids from one gateway, with the default caps (500 per
  gateway, 2,000 in total) and with the caps lifted (the behaviour before),
  as traced Python allocations (tracemalloc) and resident-size growth.

No broker is needed: messages are handed to the receive path directly.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import time
import tracemalloc
from collections.abc import Callable

from alerts import (
    Activity,
    AlertEvent,
    EventType,
    GatewayState,
    GatewayStatus,
    Message,
    MqttSettings,
    PatientState,
    Topics,
    read_message,
    utc_from_timestamp,
)
from physio.dashboard.service import DashboardConfig, DashboardService

TOPICS = Topics()


def _payloads(now_s: float) -> dict[str, tuple[str, bytes]]:
    now = utc_from_timestamp(now_s)
    state = PatientState(
        "p-1", "gw-1", now, 10.0, 1.0, Activity.UPRIGHT, False, True, 80, True, 25.0
    )
    event = AlertEvent(EventType.FALL_DETECTED, "p-1", "gw-1", now, 70.0, 2.0, 3.0, {"g": 4.0})
    devices = {f"p-{i}": {"packets": 1000, "lost": 0, "reconnects": 0} for i in range(50)}
    status = GatewayStatus("gw-1", GatewayState.ONLINE, now, {"devices": devices})
    return {
        "state": (TOPICS.state("p-1"), state.to_json()),
        "event": (TOPICS.events("p-1"), event.to_json()),
        "status (50 wearables)": (TOPICS.status("gw-1"), status.to_json()),
    }


def _cpu(run: Callable[[], object]) -> float:
    started = time.process_time()
    run()
    return time.process_time() - started


def bench_parsers(n: int) -> None:
    now_s = time.time()
    print(f"read_message vs json.loads, {n} messages each, CPU time, 5 interleaved rounds:")
    for kind, (topic, payload) in _payloads(now_s).items():
        ours: list[float] = []
        reference: list[float] = []

        def parse_json(payload: bytes = payload) -> None:
            for _ in range(n):
                json.loads(payload)

        def parse_contract(topic: str = topic, payload: bytes = payload) -> None:
            for _ in range(n):
                read_message(TOPICS, topic, payload, retained=False, received_s=now_s)

        for _ in range(5):  # interleaved, so load on the machine hits both alike
            reference.append(_cpu(parse_json))
            ours.append(_cpu(parse_contract))
        per_us = min(ours) / n * 1e6
        print(
            f"  {kind:24} {per_us:7.1f} us/message   {min(ours) / min(reference):5.1f}x json.loads"
        )


def _service(max_patients: int, per_gateway: int) -> DashboardService:
    config = DashboardConfig(
        broker=MqttSettings.from_url("mqtt://127.0.0.1:1"),
        listen_port=0,
        max_patients=max_patients,
        max_patients_per_gateway=per_gateway,
    )
    return DashboardService(config)


async def bench_receive_path(n: int) -> None:
    service = _service(2000, 500)
    async with service.record:  # the in-memory SQLite record a dashboard writes to
        _receive_path(service, n)


def _receive_path(service: DashboardService, n: int) -> None:
    now_s = time.time()
    messages = []
    for i in range(n):
        kind = EventType.SLOUCH_STARTED if (i // 50) % 2 == 0 else EventType.SLOUCH_ENDED
        event = AlertEvent(kind, f"p-{i % 50}", "gw-1", utc_from_timestamp(now_s - 60 + i * 1e-3))
        messages.append(Message(TOPICS.events(event.patient_id), event.to_json(), 1, False))

    def receive() -> None:
        for message in messages:
            service.handle_message(message, now_s)

    cpu_s = _cpu(receive)
    assert not service.drops.total, service.drops.by_reason
    print(f"dashboard receive path: {cpu_s / n * 1e6:.1f} us CPU per slouch event ({n} events)")


def _flood(service: DashboardService, patients: int) -> None:
    now_s = time.time()
    now = utc_from_timestamp(now_s)
    for i in range(patients):
        pid = f"made-up-{i:05d}"
        for t in range(3):  # three states a second apart, then a slouch event
            state = PatientState(
                pid,
                "evil-gw",
                utc_from_timestamp(now_s - 3 + t),
                30.0,
                0.0,
                Activity.UPRIGHT,
                True,
                True,
                50,
                True,
                25.0,
            )
            service.handle_message(Message(TOPICS.state(pid), state.to_json(), 0, False), now_s)
        event = AlertEvent(EventType.SLOUCH_STARTED, pid, "evil-gw", now)
        service.handle_message(Message(TOPICS.events(pid), event.to_json(), 1, False), now_s)


async def bench_memory(patients: int) -> None:
    print(f"memory after {patients} made-up patient ids from one gateway:")
    for label, caps in (("caps 500/gw, 2000 total", (2000, 500)), ("caps lifted", (10**9, 10**9))):
        gc.collect()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        service = _service(*caps)
        async with service.record:
            _flood(service, patients)
            current, _peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kept = len(service.model.snapshot()["patients"])
        shed = service.drops.by_reason.get("over_capacity", 0)
        print(
            f"  {label:24} {current / 2**20:7.1f} MiB kept (tracemalloc), max RSS +"
            f"{(rss_after - rss_before) / 1024:6.1f} MiB, {kept} tiles, {shed} messages shed"
        )
        del service


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--patients", type=int, default=5_000)
    args = parser.parse_args()
    bench_parsers(args.messages)
    asyncio.run(bench_receive_path(args.messages))
    asyncio.run(bench_memory(args.patients))


if __name__ == "__main__":
    main()

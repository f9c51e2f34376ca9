"""How fast the dashboard's alert record writes, claims and restores (SQLite and PostgreSQL).

    .venv/bin/python scripts/bench_record.py [--events 2000] [--pg postgresql://postgres@127.0.0.1/postgres]

For each database (a SQLite file in a temporary folder; a PostgreSQL database
made for the run and dropped after, when a server answers at ``--pg``):

* events + acks queued through ``AlertRecord.write`` (what the receive loop
  does) until committed: records per second, wall and CPU time of this process;
* escalation claims (``claim_escalation``, one transaction each): p50/p99 ms;
* the restore at start (``open_alerts``) of every open alert: ms.

Both databases run in the same process, interleaved round by round, so their
ratio holds on a busy machine; absolute figures depend on the disk (SQLite
commits with ``synchronous=FULL``: one fsync per write).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from physio.dashboard import record_ops as ops
from physio.dashboard.record import AlertRecord
from physio.dashboard.store import SqlStore


def _event(n: int, t_s: float) -> dict[str, object]:
    return {
        "event_id": f"e{n:06d}",
        "type": "fall_detected" if n % 10 == 0 else "slouch_started",
        "patient_id": f"p-{n % 50:03d}",
        "gateway_id": "ward-3",
        "time": "2026-12-06T08:00:00.000Z",
        "severity": "high" if n % 10 == 0 else "low",
        "details": {},
    }


def _add_event(store: SqlStore, *, n: int, t0_s: float) -> bool:
    data = _event(n, t0_s + n)
    return ops.add_event(
        store,
        data,
        time_s=t0_s + n,
        received_s=t0_s + n,
        severity=str(data["severity"]),
        source="gateway ward-3",
        recorded_s=t0_s + n,
    )


def _add_ack(store: SqlStore, *, n: int, t0_s: float) -> bool:
    return ops.add_ack(
        store,
        event_id=f"e{n:06d}",
        patient_id=f"p-{n % 50:03d}",
        action="acknowledged",
        by="anna",
        time_s=t0_s + n + 1,
        source="bench",
        recorded_s=t0_s + n + 1,
    )


async def _writes(database: str, events: int) -> tuple[float, float]:
    """(records/s wall, records/s per CPU second) for events + one ack each."""
    t0_s = time.time()
    async with AlertRecord(database) as record:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for n in range(events):
            record.write(functools.partial(_add_event, n=n, t0_s=t0_s))
            record.write(functools.partial(_add_ack, n=n, t0_s=t0_s))
        await record.flush()
        wall_s, cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0
    return 2 * events / wall_s, 2 * events / max(cpu_s, 1e-9)


def _claims(database: str, falls: int) -> list[float]:
    store = SqlStore(database)
    try:
        times_ms = []
        for n in range(0, falls * 10, 10):
            start = time.perf_counter()
            ops.claim_escalation(store, f"e{n:06d}", 9, "bench", time.time(), 10.0)
            times_ms.append((time.perf_counter() - start) * 1000)
        return times_ms
    finally:
        store.close()


def _restore_ms(database: str) -> tuple[float, int]:
    store = SqlStore(database)
    try:
        start = time.perf_counter()
        alerts = ops.open_alerts(store, since_s=0)
        return (time.perf_counter() - start) * 1000, len(alerts)
    finally:
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000, help="events per round (2000)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (2)")
    parser.add_argument(
        "--pg",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL server to make a scratch database on ('' to skip)",
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-record-"))
    targets: dict[str, list[str]] = {"sqlite": []}
    admin = None
    if args.pg:
        try:
            import psycopg

            admin = psycopg.connect(args.pg, autocommit=True, connect_timeout=3)
            targets["postgresql"] = []
        except Exception as exc:  # no driver or no server: SQLite only
            print(f"PostgreSQL skipped: {exc}")
    names: list[str] = []
    results: dict[str, dict[str, list[float]]] = {k: {} for k in targets}
    try:
        for round_no in range(args.rounds):
            for kind in targets:
                if kind == "sqlite":
                    database = str(folder / f"r{round_no}.sqlite3")
                else:
                    name = f"bench_record_{uuid.uuid4().hex[:10]}"
                    assert admin is not None
                    admin.execute(f'CREATE DATABASE "{name}"')
                    names.append(name)
                    database = args.pg.rsplit("/", 1)[0] + f"/{name}"
                wall, cpu = asyncio.run(_writes(database, args.events))
                claims = _claims(database, min(200, args.events // 10))
                restore_ms, restored = _restore_ms(database)
                r = results[kind]
                r.setdefault("wall", []).append(wall)
                r.setdefault("cpu", []).append(cpu)
                r.setdefault("claim_p50", []).append(statistics.median(claims))
                r.setdefault("claim_p99", []).append(sorted(claims)[int(0.99 * len(claims))])
                r.setdefault("restore_ms", []).append(restore_ms)
                r.setdefault("restored", []).append(float(restored))
    finally:
        if admin is not None:
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.close()
    print(f"{args.events} events + {args.events} acks per round, {args.rounds} rounds interleaved")
    for kind, r in results.items():
        print(
            f"{kind:10s} writes {min(r['wall']):8.0f}-{max(r['wall']):8.0f} records/s wall, "
            f"{min(r['cpu']):8.0f}-{max(r['cpu']):8.0f} per CPU s of this process; "
            f"claim p50 {statistics.median(r['claim_p50']):.2f} ms, "
            f"p99 {max(r['claim_p99']):.2f} ms; restore of {int(r['restored'][0])} open "
            f"alerts {statistics.median(r['restore_ms']):.1f} ms"
        )
    if "postgresql" in results:
        ratio = statistics.median(results["postgresql"]["wall"]) / statistics.median(
            results["sqlite"]["wall"]
        )
        print(f"PostgreSQL / SQLite write throughput: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``posture-monitor status``: the gateways' retained status and metrics.

Connects, reads the retained ``{root}/gateways/+/status`` messages (they
arrive right after the subscription), prints them as a table or JSON, and
exits (for scripts and monitoring checks): 0 when every gateway found is
online, 3 when one or more is offline (its patients are not monitored) or
online but degraded (e.g. it cannot scan for wearables), 1
when none was found (or not the asked gateway), 2 when the broker cannot be
reached. Statuses are read through the one contract (``alerts.intake``); bad
ones are dropped and counted, and a line on stderr says how many.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from alerts.intake import DropCounter, read_message
from alerts.mqtt import MqttClient
from alerts.settings import MqttSettings
from alerts.state import GatewayStatus
from alerts.topics import DEFAULT_TOPIC_ROOT, TopicKind, Topics, validate_id
from alerts.wire import PayloadError, format_utc_ms
from common.errors import PostureMonitorError
from physio.broker_args import add_broker_arguments, add_connection_arguments, broker_settings

__all__ = ["collect_statuses", "configure_parser", "format_statuses", "run"]

_log = logging.getLogger(__name__)
_MAX_GATEWAYS = 1000


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``posture-monitor status``."""
    parser.epilog = (
        "Exit status: 0 every gateway found is online; 3 one or more is offline (its "
        "patients are not monitored) or degraded (e.g. cannot scan); 1 no status found; "
        "2 the broker cannot be reached."
    )
    add_broker_arguments(parser, local_default=True)
    add_connection_arguments(parser)
    parser.add_argument("--gateway", default=None, metavar="ID", help="only this gateway")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--wait",
        type=float,
        default=1.0,
        metavar="S",
        help="how long to wait for retained statuses (default 1 s)",
    )


async def collect_statuses(
    settings: MqttSettings,
    *,
    topic_root: str = DEFAULT_TOPIC_ROOT,
    gateway_id: str | None = None,
    wait_s: float = 1.0,
    drops: DropCounter | None = None,
) -> dict[str, GatewayStatus]:
    """Read retained gateway statuses for ``wait_s`` seconds (less if the one
    asked for arrived); bad ones are counted in ``drops``.

    Raises:
        BrokerError: when the broker cannot be reached.
        ConfigError: on an invalid gateway id or topic root.
    """
    topics = Topics(topic_root)
    topic_filter = (
        topics.all_status
        if gateway_id is None
        else topics.status(validate_id(gateway_id, "gateway"))
    )
    drops = drops if drops is not None else DropCounter(_log)
    found: dict[str, GatewayStatus] = {}
    async with MqttClient(settings) as client:
        await client.subscribe(topic_filter, qos=1)
        try:
            async with asyncio.timeout(wait_s):
                async for message in client.messages():
                    info = topics.parse(message.topic)
                    if info is None or info.kind is not TopicKind.STATUS or not message.payload:
                        continue
                    try:
                        inbound = read_message(
                            topics,
                            message.topic,
                            message.payload,
                            retained=message.retain,
                            received_s=time.time(),
                        )
                    except PayloadError as exc:
                        drops.drop(exc.reason, info, str(exc))
                        continue
                    status = None if inbound is None else inbound.payload
                    if isinstance(status, GatewayStatus) and (
                        info.id in found or len(found) < _MAX_GATEWAYS
                    ):
                        found[info.id] = status
                    if gateway_id is not None and info.id == gateway_id:
                        break
        except TimeoutError:
            pass
    return found


def _fmt(value: object, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}{unit}"
    return f"{value}{unit}"


def format_statuses(statuses: Mapping[str, GatewayStatus], *, now_s: float | None = None) -> str:
    """A table: one row per gateway, then one per wearable's device metrics."""
    now_s = time.time() if now_s is None else now_s
    header = (
        f"{'GATEWAY':14}{'STATUS':9}{'SINCE':26}{'PENDING':9}{'OLDEST':9}"
        f"{'PUBLISHED':11}{'LAT LAST':10}{'LAT AVG':9}{'RECONN':7}"
    )
    lines = [header]
    for gateway_id in sorted(statuses):
        status = statuses[gateway_id]
        m: Mapping[str, Any] = status.metrics
        age_s = max(0.0, now_s - status.time.timestamp())
        lines.append(
            f"{gateway_id[:13]:14}{status.status.upper():9}"
            f"{format_utc_ms(status.time)[:19] + f' ({age_s:.0f}s)':26}"
            f"{_fmt(m.get('events_pending')):9}{_fmt(m.get('oldest_pending_age_s'), 's'):9}"
            f"{_fmt(m.get('events_published')):11}{_fmt(m.get('publish_latency_last_ms'), 'ms'):10}"
            f"{_fmt(m.get('publish_latency_avg_ms'), 'ms'):9}{_fmt(m.get('reconnects')):7}"
        )
        degraded = m.get("degraded")
        if degraded:
            lines.append(f"  DEGRADED: {str(degraded)[:500]}")
        devices = m.get("devices")
        if isinstance(devices, Mapping):
            for patient_id in sorted(devices):
                values = devices[patient_id]
                if isinstance(values, Mapping):
                    text = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(values.items()))
                    lines.append(f"  {patient_id}: {text}")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Entry point of ``posture-monitor status`` (exit codes in the module doc)."""
    out = sys.stdout if out is None else out
    drops = DropCounter(_log)
    try:
        statuses = asyncio.run(
            collect_statuses(
                broker_settings(args, insecure=True),  # read-only: warn, do not refuse
                topic_root=args.topic_root,
                gateway_id=args.gateway,
                wait_s=args.wait,
                drops=drops,
            )
        )
    except PostureMonitorError as exc:
        print(f"posture-monitor status: error: {exc}", file=sys.stderr)
        return 2
    if drops.total:
        print(f"posture-monitor status: {drops.line()}", file=sys.stderr)
    if args.json:
        out.write(json.dumps([statuses[g].to_dict() for g in sorted(statuses)], indent=2) + "\n")
    elif statuses:
        out.write(format_statuses(statuses))
    if not statuses:
        what = f"gateway {args.gateway!r}" if args.gateway else "any gateway"
        print(
            f"posture-monitor status: no retained status of {what} under {args.topic_root}",
            file=sys.stderr,
        )
        return 1
    offline = sorted(g for g, status in statuses.items() if not status.online)
    if offline:
        print(
            f"posture-monitor status: offline: {', '.join(offline)} "
            "(their patients are not monitored)",
            file=sys.stderr,
        )
        return 3
    degraded = sorted(g for g, status in statuses.items() if status.metrics.get("degraded"))
    if degraded:
        # Online but, e.g., unable to scan: wearables that drop cannot come back.
        print(f"posture-monitor status: degraded: {', '.join(degraded)}", file=sys.stderr)
        return 3
    return 0

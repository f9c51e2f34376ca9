"""``posture-monitor watch``: the physiotherapist's live terminal view.

A table of every patient's latest state (flexion, lateral bend, activity,
slouching, device, battery, gateway online) and the alert feed, redrawn
about twice a second with ANSI escapes (no curses). When stdout is not a
terminal it prints plain lines instead: one per new alert and one per change
of a patient's activity, slouching, device or gateway status.

``WatchModel`` is the testable core: it consumes ``alerts.Message`` objects
and renders strings; events are de-duplicated by ``event_id`` (QoS 1 is
at-least-once). Every message is read through the one contract
(``alerts.intake``): what breaks it is dropped, counted per reason (a footer
line) and never shown as a patient, alert or gateway; a bug while applying
one message is logged and skipped. The watcher keeps an MQTT session for a
few minutes so a network blip does not lose the alerts sent meanwhile.

It also reads each patient's retained open falls (``{root}/patients/{id}/alerts``,
``alerts.open_falls.OpenFalls``, kept by the gateway until a person answers
them), so falls that were open before it
started are shown, marked RESTORED; and the dashboards' escalations
(``.../escalations``). On a terminal it rings the bell (BEL) for every new
fall, restored or live, and for every escalation of one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from typing import TextIO

from alerts.mqtt import Message, MqttClient
from alerts.settings import MqttSettings
from alerts.topics import DEFAULT_TOPIC_ROOT, Topics
from common.errors import PostureMonitorError
from common.shutdown import run_until_terminated
from physio.broker_args import add_broker_arguments, add_connection_arguments, broker_settings
from physio.watch_view import WatchModel

__all__ = ["WatchModel", "configure_parser", "run", "watch_live"]

# Keep the broker session this long over a disconnect, so alerts sent while
# the watcher's network blips are delivered when it comes back.
_SESSION_EXPIRY_S = 300


# ------------------------------------------------------------------- CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``posture-monitor watch``."""
    add_broker_arguments(parser, local_default=True)
    add_connection_arguments(parser)
    parser.add_argument("--max-events", type=int, default=20, help="alert feed length")
    parser.add_argument(
        "--no-bell",
        action="store_true",
        help="do not ring the terminal bell for a new or escalated fall",
    )
    parser.add_argument("--refresh-hz", type=float, default=2.0, help="redraw rate (TTY)")
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="S",
        help="stop after S seconds (default: until Ctrl-C)",
    )


async def watch_live(
    settings: MqttSettings,
    *,
    topic_root: str = DEFAULT_TOPIC_ROOT,
    out: TextIO | None = None,
    tty: bool | None = None,
    refresh_hz: float = 2.0,
    duration_s: float | None = None,
    max_events: int = 20,
    bell: bool = True,
) -> WatchModel:
    """Run the view until ``duration_s`` passes (or forever); return the model.

    Raises:
        BrokerError: when the broker cannot be reached at start.
    """
    out = sys.stdout if out is None else out
    tty = out.isatty() if tty is None else tty
    color = tty and "NO_COLOR" not in os.environ
    topics = Topics(topic_root)
    model = WatchModel(topics, max_events=max_events)
    client_id = f"{settings.client_id_prefix}-watch-{socket.gethostname()[:16]}-{os.getpid()}"
    client_id = "".join(c if c.isalnum() or c in "-_" else "-" for c in client_id)
    async with MqttClient(
        settings, client_id=client_id, session_expiry_s=_SESSION_EXPIRY_S
    ) as client:
        # Messages taken (and so acknowledged) before every filter is
        # subscribed wait here, and are shown once all are: the view starts
        # complete, and a "watching" line means it sees every topic.
        early: list[Message] | None = []

        async def subscribe() -> None:
            nonlocal early
            for topic_filter in (
                topics.all_status,
                topics.all_states,
                topics.all_events,
                topics.all_acks,
                topics.all_alerts,
                topics.all_escalations,
            ):
                await client.subscribe(topic_filter, qos=1)
            waiting, early = early or [], None
            for message in waiting:
                show(message)
            if not tty:
                # Plain lines come only when something changes: say at once that
                # the view is live (and a script can wait for this line).
                out.write(f"watching {settings.display_url} (Ctrl-C stops)\n")
                out.flush()

        def show(message: Message) -> None:
            model.handle(message)
            if model.take_bells() and tty and bell:
                out.write("\a")  # the terminal's bell: a fall, or one escalated
                out.flush()
            lines = model.take_lines()  # taken in TTY mode too, or they pile up
            if lines and not tty:
                out.write("".join(line + "\n" for line in lines))
                out.flush()

        async def consume() -> None:
            async for message in client.messages():
                if early is not None:
                    early.append(message)
                else:
                    show(message)

        async def redraw() -> None:
            period_s = 1.0 / max(0.1, refresh_hz)
            out.write("\x1b[?25l")  # hide the cursor while redrawing
            try:
                while True:
                    link = "" if client.connected else "  [broker disconnected, reconnecting]"
                    screen = model.render(color=color, header=f"{settings.display_url}{link}")
                    out.write("\x1b[H" + screen.replace("\n", "\x1b[K\n") + "\x1b[J")
                    out.flush()
                    await asyncio.sleep(period_s)
            finally:
                out.write("\x1b[?25h\n")
                out.flush()

        try:
            async with asyncio.timeout(duration_s), asyncio.TaskGroup() as tasks:
                # Consume before subscribing: a QoS 1 message is acknowledged
                # only once consumed, and a broker may hold our next SUBACK
                # until the retained messages of the previous filter are
                # acknowledged (amqtt does, for 5 s: the demo's embedded broker).
                tasks.create_task(consume(), name="watch-consume")
                await subscribe()
                if tty:
                    tasks.create_task(redraw(), name="watch-redraw")
        except TimeoutError:
            pass
    return model


def run(args: argparse.Namespace) -> int:
    """Entry point of ``posture-monitor watch``: 0 on a normal end, 2 when the
    broker is unreachable or the arguments are invalid (no traceback)."""
    try:
        # SIGTERM (timeout, a service manager) ends it as Ctrl-C does: exit 0.
        asyncio.run(
            run_until_terminated(
                watch_live(
                    broker_settings(args, insecure=True),  # a viewer: warn, do not refuse
                    topic_root=args.topic_root,
                    refresh_hz=args.refresh_hz,
                    duration_s=args.duration,
                    max_events=args.max_events,
                    bell=not getattr(args, "no_bell", False),
                )
            )
        )
    except PostureMonitorError as exc:
        print(f"posture-monitor watch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0

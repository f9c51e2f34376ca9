"""The ``posture-monitor`` command.

Each subcommand lives in the package it belongs to and offers
``configure_parser(parser)`` and ``run(args) -> int``; this module only
assembles them, configures logging (libraries never do) and turns the
service's own errors into one clear line and exit status 2, without a
traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from importlib import metadata

from common.errors import PostureMonitorError

__all__ = ["build_parser", "main", "own_error"]

# (command, "module:configure_function:run_function", one-line help).
_COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("demo", "posture_monitor.demo", "simulated patients end to end, with a live view"),
    ("run", "posture_monitor.service", "the production gateway (real BLE or a simulated scenario)"),
    ("scan", "device_gateway.scan", "list Bluetooth adapters and the wearables in range"),
    ("watch", "physio.watch", "live terminal view of every patient and the alert feed"),
    ("status", "physio.status", "gateway status and delivery metrics from the broker"),
    ("dashboard", "physio.dashboard.cli", "the physiotherapist's web dashboard"),
    (
        "report",
        "physio.dashboard.cli:configure_report_parser:run_report",
        "a patient's daily posture report (PNG or HTML)",
    ),
    ("evaluate", "lab.evaluate", "measure the engine on public datasets"),
    ("bench", "lab.bench", "measure the engine's throughput and memory"),
)
# Long-running services log at INFO without -v: a gateway that prints nothing
# looks dead (its start, its broker and wearable links and every event it
# queues are worth a line each). The one-shot commands stay quiet.
_SERVICES = frozenset({"run", "dashboard"})


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported to add its options.

    Importing every subcommand's module would make ``--help`` pay for SciPy,
    aiohttp and paho (seconds on a gateway board). With ``command=None`` every
    subcommand is configured (for documentation and tests).
    """
    parser = argparse.ArgumentParser(
        prog="posture-monitor",
        description="Wearable posture monitoring: BLE gateway, posture engine, MQTT alerts.",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more log output (-vv for debug; run and dashboard log at info without it, "
        "debug with -v)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, target, help_text in _COMMANDS:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if command is not None and name != command:
            continue
        module_name, configure, run = ([*target.split(":"), "configure_parser", "run"])[:3]
        module = importlib.import_module(module_name)
        getattr(module, configure)(sub)
        sub.set_defaults(handler=getattr(module, run))
    return parser


def _chosen_command(argv: Sequence[str]) -> str:
    """The subcommand named in ``argv`` ("" when none is).

    The top-level options (``-v``, ``--version``, ``--help``) take no value, so
    the subcommand is the first word that is not an option.
    """
    return next((arg for arg in argv if not arg.startswith("-")), "")


def _version() -> str:
    try:
        return metadata.version("posture-monitor")
    except metadata.PackageNotFoundError:  # running from a source tree without install
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_chosen_command(words)).parse_args(words)
    verbosity = args.verbose + (1 if args.command in _SERVICES else 0)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbosity, 2)]
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        return int(args.handler(args))
    except (PostureMonitorError, BaseExceptionGroup) as exc:
        # A TaskGroup wraps what its tasks raise: find our own error inside.
        ours = own_error(exc)
        if ours is None:
            raise
        print(f"posture-monitor {args.command}: error: {ours}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def own_error(exc: BaseException) -> PostureMonitorError | None:
    """The service error in ``exc`` (possibly nested in exception groups), if any."""
    if isinstance(exc, PostureMonitorError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = own_error(inner)
            if found is not None:
                return found
    return None


if __name__ == "__main__":
    sys.exit(main())

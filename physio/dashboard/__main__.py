"""``python -m physio.dashboard {dashboard,report} ...``: the same as the
``posture-monitor`` sub-commands, usable before they are wired in."""

from __future__ import annotations

import argparse
import logging
import sys

from physio.dashboard.cli import configure_parser, configure_report_parser, run, run_report


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, configure logging (this is a program) and run."""
    parser = argparse.ArgumentParser(prog="python -m physio.dashboard")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    configure_parser(commands.add_parser("dashboard", help="serve the web dashboard"))
    configure_report_parser(commands.add_parser("report", help="write a clinic report"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return run(args) if args.command == "dashboard" else run_report(args)


if __name__ == "__main__":
    sys.exit(main())

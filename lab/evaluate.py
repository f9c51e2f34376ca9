"""``posture-monitor evaluate``: measure the engine on public datasets.

* ``evaluate orientation --broad DIR [--rate HZ] [--json]``: BROAD trials
  (Laidig et al., Data 6(7), 2021), resampled as a wearable at ``HZ`` would
  have measured them (:mod:`lab.resample`), through the engine's gravity
  filter with gyroscope and accelerometer-only; VQF (if installed) on the
  same resampled data. Metric: the angle between the estimated up direction
  and the optical one in the sensor frame, RMSE over samples with
  ``movement == 1`` and a valid optical quaternion, per trial and mean.
* ``evaluate falls --sisfall DIR [--rate HZ] [--json]``: every SisFall
  recording (Sucerquia et al., Sensors 17(1), 2017), resampled to ``HZ``,
  streamed in packet-sized blocks through the full :class:`PostureEngine`
  (``nominal_up_sensor=(0, -1, 0)``, SisFall's waist mounting). Reports
  sensitivity (fall recordings with a detection), specificity (ADL recordings
  without a fall alert), false alarms per hour of ADL, results per activity
  code and the detection latency after the impact.

The CLI wires these in with :func:`configure_parser` and :func:`run`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from lab.datasets import DatasetError
from lab.eval_falls import FallReport, evaluate_falls
from lab.eval_orientation import OrientationReport, evaluate_orientation

__all__ = ["configure_parser", "format_falls", "format_orientation", "run"]

_log = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``orientation`` and ``falls`` subcommands to ``parser``."""
    sub = parser.add_subparsers(dest="evaluate_command", metavar="{orientation,falls}")
    sub.required = True
    orient = sub.add_parser(
        "orientation",
        help="inclination error on BROAD trials (ours with/without gyroscope, VQF)",
        description="Inclination RMSE on BROAD trials at a wearable's sample rate.",
    )
    orient.add_argument("--broad", type=Path, required=True, help="folder of BROAD .mat trials")
    orient.add_argument("--rate", type=float, default=50.0, help="wearable rate in Hz (50)")
    orient.add_argument("--json", action="store_true", help="print JSON instead of a table")
    falls = sub.add_parser(
        "falls",
        help="fall detection on SisFall through the full posture engine",
        description="Sensitivity, specificity, false alarms/hour and latency on SisFall.",
    )
    falls.add_argument("--sisfall", type=Path, required=True, help="SisFall folder")
    falls.add_argument("--rate", type=float, default=50.0, help="wearable rate in Hz (50)")
    falls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    falls.add_argument(
        "--block", type=int, default=10, help="samples per engine call, like a BLE packet (10)"
    )
    falls.add_argument(
        "--acc-only", action="store_true", help="run the engine without the gyroscope"
    )
    falls.add_argument(
        "--gyro-range",
        type=float,
        default=None,
        metavar="DPS",
        help="clip the gyroscope at ± DPS °/s, as a saturating wearable reads it",
    )
    falls.add_argument(
        "--subjects", default=None, help="comma-separated subjects (e.g. SE01,SE02); default all"
    )


def run(args: argparse.Namespace) -> int:
    """Run the chosen evaluation; print the report; return the exit status (0 ok, 2 bad input)."""
    started = time.perf_counter()
    try:
        if args.evaluate_command == "orientation":
            report: OrientationReport | FallReport = evaluate_orientation(args.broad, args.rate)
        elif args.evaluate_command == "falls":
            if args.block < 1:
                raise ValueError(f"--block must be >= 1, got {args.block}")
            subjects = None if args.subjects is None else args.subjects.split(",")
            report = evaluate_falls(
                args.sisfall,
                args.rate,
                block=args.block,
                has_gyro=not args.acc_only,
                subjects=subjects,
                gyro_range_dps=args.gyro_range,
            )
        else:
            print(f"unknown evaluation {args.evaluate_command!r}", file=sys.stderr)
            return 2
    except (DatasetError, ValueError) as exc:
        print(f"evaluate {args.evaluate_command}: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    if args.json:
        out: dict[str, Any] = report.to_dict()
        out["elapsed_s"] = round(elapsed, 2)
        print(json.dumps(out, indent=2))
    elif isinstance(report, OrientationReport):
        print(format_orientation(report))
        print(f"({elapsed:.1f} s)")
    else:
        print(format_falls(report))
        print(f"({elapsed:.1f} s)")
    return 0


def _deg(value: float) -> str:
    return "   n/a" if not np.isfinite(value) else f"{value:6.2f}"


def format_orientation(report: OrientationReport) -> str:
    """Human-readable table of an orientation report."""
    head = f"{'trial':<46} {'ours 6D':>8} {'ours acc':>9}"
    if report.vqf_available:
        head += f" {'VQF 6D':>8}"
    lines = [
        f"BROAD inclination RMSE (deg) at {report.rate_hz:g} Hz, "
        f"{len(report.trials)} trials (Laidig et al., Data 2021)",
        head,
    ]
    for tr in report.trials:
        row = f"{tr.name:<46} {_deg(tr.rmse_gyro_deg):>8} {_deg(tr.rmse_acc_only_deg):>9}"
        if report.vqf_available:
            row += f" {_deg(tr.rmse_vqf_deg):>8}"
        lines.append(row)
    mean = report.means()
    row = f"{'mean':<46} {_deg(mean['gyro']):>8} {_deg(mean['acc_only']):>9}"
    if report.vqf_available:
        row += f" {_deg(mean['vqf']):>8}"
    lines.append(row)
    if not report.vqf_available:
        lines.append("(VQF not installed: pip install vqf to compare)")
    return "\n".join(lines)


def format_falls(report: FallReport) -> str:
    """Human-readable summary of a fall report."""
    s = report.summary()
    lat = s["latency_s"]
    clip = (
        "" if report.gyro_range_dps is None else f", gyro clipped at ±{report.gyro_range_dps:g} °/s"
    )
    lines = [
        f"SisFall fall detection at {report.rate_hz:g} Hz through PostureEngine "
        f"({'gyroscope + accelerometer' if report.has_gyro else 'accelerometer only'}"
        f"{clip}), "
        f"{s['recordings']} recordings (Sucerquia et al., Sensors 2017)",
        f"sensitivity  {s['sensitivity']:.2%}  ({s['falls_detected']}/{s['fall_recordings']} "
        "fall recordings with a detection)",
        f"specificity  {s['specificity']:.2%}  ({s['adl_clean']}/{s['adl_recordings']} "
        "ADL recordings without a fall alert)",
        f"false alarms {s['false_alarms_per_hour']:.3f} per hour of ADL "
        f"({s['false_alarms']} in {s['adl_hours']:.2f} h); cancelled: {s['cancelled']}",
        f"latency after impact: median {lat['median']:.2f} s, 95th pct {lat['p95']:.2f} s, "
        f"max {lat['max']:.2f} s",
        "",
        f"{'code':<5} {'recordings':>10} {'alerted':>8} {'rate':>7}",
    ]
    for code, row in s["per_code"].items():
        lines.append(
            f"{code:<5} {row['recordings']:>10} {row['alerted']:>8} {row['alert_rate']:>7.1%}"
        )
    lines += [
        "",
        f"{'family / group':<42} {'recordings':>10} {'sens.':>8} {'spec.':>8} {'FA/h':>7}",
    ]
    rows = [*s["per_family"].items(), *s["per_group"].items()]
    for name, row in rows:
        sens = f"{row['sensitivity']:.2%}" if "sensitivity" in row else "-"
        spec = f"{row['specificity']:.2%}" if "specificity" in row else "-"
        fah = f"{row['false_alarms_per_hour']:.2f}" if "false_alarms_per_hour" in row else "-"
        lines.append(f"{name:<42} {row['recordings']:>10} {sens:>8} {spec:>8} {fah:>7}")
    missed = [r.name for r in report.recordings if r.is_fall and r.detections == 0]
    false = [r.name for r in report.recordings if not r.is_fall and r.detections > 0]
    lines.append(f"missed falls: {', '.join(missed) or 'none'}")
    lines.append(f"false alarms: {', '.join(false) or 'none'}")
    return "\n".join(lines)

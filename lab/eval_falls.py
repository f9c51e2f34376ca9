"""Fall detection on SisFall through the full engine (``evaluate falls``).

Every recording is resampled to the wearable's rate
(:func:`lab.resample.resample_imu`) and streamed through a fresh
:class:`posture.PostureEngine` in ``block``-sample calls, as the gateway
feeds BLE packets, with ``nominal_up_sensor=(0, -1, 0)`` (SisFall's sensor
is at the waist, Y up). A fall recording counts as detected if at least one
``fall_detected`` event occurs; an ADL recording is clean if none does
(a detection later cancelled still counts as a false alarm: the alert went
out). Latency is the detection time minus the impact time the detector
reports; as a check that does not trust the detector, the report also gives
it relative to the largest ``|a|`` of the recording at its native rate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lab.datasets import SISFALL_NOMINAL_UP_SENSOR, SisFallRecording, list_sisfall, read_sisfall
from lab.resample import resample_imu
from posture.config import EngineConfig
from posture.engine import PostureEngine
from posture.falls import FallSettings
from posture.types import PostureEventKind

__all__ = [
    "FAMILIES",
    "FallReport",
    "RecordingResult",
    "evaluate_falls",
    "family_of",
    "run_recording",
]

FAMILIES: dict[str, tuple[str, ...]] = {
    "fall: backward from a seat (F11, F14)": ("F11", "F14"),
    "fall: slow collapse (F09, F10, F13)": ("F09", "F10", "F13"),
    "fall: other (F01-F08, F12, F15)": (
        "F01",
        "F02",
        "F03",
        "F04",
        "F05",
        "F06",
        "F07",
        "F08",
        "F12",
        "F15",
    ),
    "ADL: slow knee bend (D15)": ("D15",),
    "ADL: quick sitting (D08, D10)": ("D08", "D10"),
    "ADL: turning in bed (D14)": ("D14",),
    "ADL: lying down (D12, D13)": ("D12", "D13"),
    "ADL: other": (),
}
"""SisFall codes of each family (docs/falls.md); two-stage falls and falls out
of bed have no SisFall code and are tested on simulated patients."""


def family_of(code: str) -> str:
    """The :data:`FAMILIES` name of a SisFall activity code."""
    for name, codes in FAMILIES.items():
        if code in codes:
            return name
    return "ADL: other" if code.startswith("D") else "fall: other (F01-F08, F12, F15)"


@dataclass(frozen=True)
class RecordingResult:
    """What the engine reported on one recording."""

    name: str
    code: str
    subject: str
    is_fall: bool
    duration_s: float
    detections: int
    cancellations: int
    first_detection_t_s: float
    """NaN if none."""
    latency_s: float
    """First detection minus the impact time the detector reported (NaN if none)."""
    after_peak_s: float
    """First detection minus the time of the recording's largest |a| (NaN if none)."""


@dataclass(frozen=True)
class FallReport:
    """All recordings' results at ``rate_hz``."""

    rate_hz: float
    has_gyro: bool
    block: int
    recordings: list[RecordingResult]
    gyro_range_dps: float | None = None

    def summary(self) -> dict[str, Any]:
        """Sensitivity, specificity, false alarms/hour, latency stats, per-code table."""
        falls = [r for r in self.recordings if r.is_fall]
        adls = [r for r in self.recordings if not r.is_fall]
        detected = sum(r.detections > 0 for r in falls)
        clean = sum(r.detections == 0 for r in adls)
        adl_hours = sum(r.duration_s for r in adls) / 3600.0
        false_alarms = sum(r.detections for r in adls)
        lat = np.array([r.latency_s for r in falls if r.detections > 0])
        per_code: dict[str, dict[str, Any]] = {}
        for code in sorted({r.code for r in self.recordings}):
            rows = [r for r in self.recordings if r.code == code]
            alerted = sum(r.detections > 0 for r in rows)
            per_code[code] = {
                "recordings": len(rows),
                "alerted": alerted,
                "alert_rate": alerted / len(rows),
            }

        def stat(values: np.ndarray, q: float | None) -> float:
            if values.size == 0:
                return math.nan
            return float(np.max(values) if q is None else np.quantile(values, q))

        after = np.array([r.after_peak_s for r in falls if r.detections > 0])
        per_family: dict[str, dict[str, Any]] = {}
        for name in FAMILIES:
            rows = [r for r in self.recordings if family_of(r.code) == name]
            if rows:
                per_family[name] = _rates(rows)
        per_group = {
            group: _rates([r for r in self.recordings if r.subject.startswith(prefix)])
            for group, prefix in (("young (SA)", "SA"), ("elderly (SE)", "SE"))
            if any(r.subject.startswith(prefix) for r in self.recordings)
        }
        return {
            "recordings": len(self.recordings),
            "fall_recordings": len(falls),
            "falls_detected": detected,
            "sensitivity": detected / len(falls) if falls else math.nan,
            "adl_recordings": len(adls),
            "adl_clean": clean,
            "specificity": clean / len(adls) if adls else math.nan,
            "false_alarms": false_alarms,
            "adl_hours": adl_hours,
            "false_alarms_per_hour": false_alarms / adl_hours if adl_hours else math.nan,
            "cancelled": sum(r.cancellations for r in self.recordings),
            "latency_s": {"median": stat(lat, 0.5), "p95": stat(lat, 0.95), "max": stat(lat, None)},
            "after_peak_s": {
                "median": stat(after, 0.5),
                "p95": stat(after, 0.95),
                "max": stat(after, None),
            },
            "per_code": per_code,
            "per_family": per_family,
            "per_group": per_group,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes None)."""

        def clean(x: Any) -> Any:
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, float) and not math.isfinite(x):
                return None
            return x

        return {
            "dataset": "SisFall",
            "rate_hz": self.rate_hz,
            "has_gyro": self.has_gyro,
            "gyro_range_dps": self.gyro_range_dps,
            "block": self.block,
            "summary": clean(self.summary()),
            "missed_falls": [r.name for r in self.recordings if r.is_fall and not r.detections],
            "false_alarm_recordings": [
                r.name for r in self.recordings if not r.is_fall and r.detections
            ],
            "recordings": [clean(asdict(r)) for r in self.recordings],
        }


def _rates(rows: list[RecordingResult]) -> dict[str, Any]:
    """Recordings, alerts, sensitivity or specificity, false alarms per hour."""
    falls = [r for r in rows if r.is_fall]
    adls = [r for r in rows if not r.is_fall]
    hours = sum(r.duration_s for r in adls) / 3600.0
    out: dict[str, Any] = {"recordings": len(rows)}
    if falls:
        out["falls_detected"] = sum(r.detections > 0 for r in falls)
        out["sensitivity"] = out["falls_detected"] / len(falls)
    if adls:
        alarms = sum(r.detections for r in adls)
        out["adl_alerted"] = sum(r.detections > 0 for r in adls)
        out["specificity"] = 1.0 - out["adl_alerted"] / len(adls)
        out["false_alarms_per_hour"] = alarms / hours if hours else math.nan
        out["adl_hours"] = hours
    return out


def run_recording(
    rec: SisFallRecording,
    rate_hz: float,
    *,
    block: int = 10,
    has_gyro: bool = True,
    gyro_range_dps: float | None = None,
    fall: FallSettings | None = None,
) -> RecordingResult:
    """Stream one recording through a fresh engine at ``rate_hz``.

    ``gyro_range_dps``: clip the gyroscope at ± this (a saturating wearable).
    """
    data = np.hstack([rec.acc_g, rec.gyr_dps])
    data = resample_imu(data, rec.sample_rate_hz, rate_hz)
    if gyro_range_dps is not None:
        data[:, 3:] = np.clip(data[:, 3:], -gyro_range_dps, gyro_range_dps)
    acc, gyr = data[:, :3], data[:, 3:] if has_gyro else None
    t = np.arange(acc.shape[0]) / rate_hz
    engine = PostureEngine(
        EngineConfig(
            sample_rate_hz=rate_hz,
            has_gyro=has_gyro,
            nominal_up_sensor=SISFALL_NOMINAL_UP_SENSOR,
            fall=FallSettings() if fall is None else fall,
        )
    )
    detected: list[tuple[float, float]] = []
    cancelled = 0
    for i in range(0, acc.shape[0], block):
        out = engine.process(
            t[i : i + block], acc[i : i + block], None if gyr is None else gyr[i : i + block]
        )
        for ev in out.events:
            if ev.kind == PostureEventKind.FALL_DETECTED:
                detected.append((ev.t_s, float(ev.details.get("latency_s", math.nan))))
            elif ev.kind == PostureEventKind.FALL_CANCELLED:
                cancelled += 1
    peak_t = float(np.argmax(np.linalg.norm(rec.acc_g, axis=1))) / rec.sample_rate_hz
    first_t, latency = detected[0] if detected else (math.nan, math.nan)
    return RecordingResult(
        name=rec.name,
        code=rec.code,
        subject=rec.subject,
        is_fall=rec.is_fall,
        duration_s=rec.duration_s,
        detections=len(detected),
        cancellations=cancelled,
        first_detection_t_s=first_t,
        latency_s=latency,
        after_peak_s=first_t - peak_t,
    )


def evaluate_falls(
    sisfall_dir: str | Path,
    rate_hz: float = 50.0,
    *,
    block: int = 10,
    has_gyro: bool = True,
    subjects: Iterable[str] | None = None,
    gyro_range_dps: float | None = None,
    fall: FallSettings | None = None,
) -> FallReport:
    """Evaluate every recording under ``sisfall_dir`` (optionally only some subjects).

    Raises:
        DatasetError: the folder or a recording cannot be read.
        ValueError: a bad rate or block size.
    """
    if not (math.isfinite(rate_hz) and 10.0 <= rate_hz <= 2000.0):
        raise ValueError(f"--rate must be in 10..2000 Hz, got {rate_hz!r}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    if gyro_range_dps is not None and not (math.isfinite(gyro_range_dps) and gyro_range_dps > 0):
        raise ValueError(f"--gyro-range must be > 0 °/s, got {gyro_range_dps!r}")
    wanted = None if subjects is None else set(subjects)
    results = []
    for path in list_sisfall(sisfall_dir):
        if wanted is not None and path.parent.name not in wanted:
            continue
        rec = read_sisfall(path)
        results.append(
            run_recording(
                rec,
                rate_hz,
                block=block,
                has_gyro=has_gyro,
                gyro_range_dps=gyro_range_dps,
                fall=fall,
            )
        )
    return FallReport(
        rate_hz=rate_hz,
        has_gyro=has_gyro,
        block=block,
        recordings=results,
        gyro_range_dps=gyro_range_dps,
    )

"""Inclination accuracy on BROAD at a wearable's sample rate (``evaluate orientation``).

Each trial's IMU signals are low-pass filtered and resampled to the
wearable's rate (:func:`lab.resample.resample_imu`); the optical
reference is turned into the vertical axis in sensor coordinates at every
native sample and interpolated linearly to the resampled instants (an
instant next to a lost optical sample gets no reference). The error at an
instant is the angle between the estimated and the reference vertical; a
trial's figure is the RMSE over instants with ``movement == 1`` (both
neighbouring native samples) and a valid reference.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lab.datasets import BroadTrial, list_broad, read_broad
from lab.resample import resample_imu
from posture.orientation import estimate_up
from posture.types import OrientationSettings

__all__ = [
    "OrientationReport",
    "TrialResult",
    "evaluate_orientation",
    "inclination_rmse_deg",
    "reference_up",
    "vqf_up",
]

FloatArray = NDArray[np.float64]
_G_MPS2 = 9.81


@dataclass(frozen=True)
class TrialResult:
    """Inclination RMSE of one trial, degrees (NaN: not computed)."""

    name: str
    samples: int
    """Resampled instants that count (movement, valid reference)."""
    rmse_gyro_deg: float
    rmse_acc_only_deg: float
    rmse_vqf_deg: float


@dataclass(frozen=True)
class OrientationReport:
    """Per-trial results at ``rate_hz``."""

    rate_hz: float
    vqf_available: bool
    trials: list[TrialResult]

    def means(self) -> dict[str, float]:
        """Mean RMSE over trials (deg) for ``gyro``, ``acc_only`` and ``vqf``."""
        cols = {
            "gyro": [t.rmse_gyro_deg for t in self.trials],
            "acc_only": [t.rmse_acc_only_deg for t in self.trials],
            "vqf": [t.rmse_vqf_deg for t in self.trials],
        }
        return {k: float(np.mean(v)) if v else math.nan for k, v in cols.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes None)."""

        def clean(x: Any) -> Any:
            return None if isinstance(x, float) and not math.isfinite(x) else x

        return {
            "dataset": "BROAD",
            "rate_hz": self.rate_hz,
            "vqf_available": self.vqf_available,
            "mean_rmse_deg": {k: clean(v) for k, v in self.means().items()},
            "trials": [{k: clean(v) for k, v in asdict(t).items()} for t in self.trials],
        }


def reference_up(
    trial: BroadTrial, rate_hz: float, n_out: int
) -> tuple[FloatArray, NDArray[np.bool_]]:
    """Optical vertical in sensor axes at the resampled instants, and the counted mask.

    Returns:
        ``up`` (n_out, 3) unit vectors (NaN where the optical system lost the
        body) and ``mask`` (n_out,) true where the instant counts.
    """
    q = trial.opt_quat_wxyz
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    # Third row of the sensor->ENU rotation: ENU "up" in sensor coordinates.
    up_native = np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], 1)
    pos = np.arange(n_out) * (trial.sample_rate_hz / rate_hz)
    i0 = np.minimum(np.floor(pos).astype(np.intp), up_native.shape[0] - 1)
    i1 = np.minimum(i0 + 1, up_native.shape[0] - 1)
    frac = (pos - i0)[:, None]
    up = (1.0 - frac) * up_native[i0] + frac * up_native[i1]
    norm = np.linalg.norm(up, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        up = up / norm
    valid = np.isfinite(up).all(axis=1)
    mask = valid & trial.movement[i0] & trial.movement[i1]
    return up, mask


def inclination_rmse_deg(est_up: FloatArray, ref_up: FloatArray, mask: NDArray[np.bool_]) -> float:
    """RMSE in degrees of the angle between two (n, 3) up directions over ``mask``."""
    e = est_up[mask] / np.linalg.norm(est_up[mask], axis=1, keepdims=True)
    cos = np.clip(np.sum(e * ref_up[mask], axis=1), -1.0, 1.0)
    if cos.size == 0:
        return math.nan
    return float(np.sqrt(np.mean(np.degrees(np.arccos(cos)) ** 2)))


def vqf_up(acc_g: FloatArray, gyr_dps: FloatArray, rate_hz: float) -> FloatArray | None:
    """VQF's 6D up direction (n, 3) with default parameters, or None if vqf is absent."""
    try:
        from vqf import VQF
    except ImportError:
        return None
    out = VQF(1.0 / rate_hz).updateBatch(
        np.ascontiguousarray(np.radians(gyr_dps)), np.ascontiguousarray(acc_g * _G_MPS2)
    )
    q = out["quat6D"]
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    return np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], 1)


def evaluate_trial(trial: BroadTrial, rate_hz: float, settings: OrientationSettings) -> TrialResult:
    """Resample one trial to ``rate_hz`` and measure the three estimators on it."""
    acc = resample_imu(trial.acc_g, trial.sample_rate_hz, rate_hz)
    gyr = resample_imu(trial.gyr_dps, trial.sample_rate_hz, rate_hz)
    ref, mask = reference_up(trial, rate_hz, acc.shape[0])
    kwargs = {
        "tau_acc_s": settings.tau_acc_s,
        "acc_only_cutoff_hz": min(settings.acc_only_cutoff_hz, 0.4 * rate_hz),
        "gyr_delay_s": settings.gyr_delay_s,
    }
    ours = estimate_up(acc, gyr, rate_hz, **kwargs)
    acc_only = estimate_up(acc, None, rate_hz, **kwargs)
    vqf = vqf_up(acc, gyr, rate_hz)
    return TrialResult(
        name=trial.name,
        samples=int(mask.sum()),
        rmse_gyro_deg=inclination_rmse_deg(ours, ref, mask),
        rmse_acc_only_deg=inclination_rmse_deg(acc_only, ref, mask),
        rmse_vqf_deg=math.nan if vqf is None else inclination_rmse_deg(vqf, ref, mask),
    )


def evaluate_orientation(
    broad_dir: str | Path, rate_hz: float = 50.0, settings: OrientationSettings | None = None
) -> OrientationReport:
    """Evaluate every trial in ``broad_dir`` at ``rate_hz``.

    Raises:
        DatasetError: the folder or a trial cannot be read.
        ValueError: a bad rate.
    """
    if not (math.isfinite(rate_hz) and 10.0 <= rate_hz <= 2000.0):
        raise ValueError(f"--rate must be in 10..2000 Hz, got {rate_hz!r}")
    cfg = settings or OrientationSettings()
    results = [evaluate_trial(read_broad(p), rate_hz, cfg) for p in list_broad(broad_dir)]
    try:
        import vqf  # noqa: F401

        has_vqf = True
    except ImportError:
        has_vqf = False
    return OrientationReport(rate_hz=rate_hz, vqf_available=has_vqf, trials=results)

"""The fall detector's impact model: a logistic regression on impact features.

``p(fall | lying after impact) = 1 / (1 + exp(-(w · (x - mean) / scale + b)))``
with ``x`` some of the candidate's impact features (:data:`FEATURE_NAMES`, see
:mod:`posture.falls`; the model file names the ones it uses). The parameters
are plain NumPy arrays in a small ``.npz`` shipped with the package (``model.npz``), written by
``python -m lab.train_falls`` (leave-one-subject-out validated on SisFall);
no learning library is needed at run time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from common.errors import ConfigError

__all__ = [
    "DEFAULT_MODEL_PATH",
    "FEATURE_NAMES",
    "FallModel",
    "load_fall_model",
    "save_fall_model",
]

FEATURE_NAMES: tuple[str, ...] = (
    "log_impulse_gs",
    "log_impulse_short_gs",
    "peak_lp_acc_g",
    "min_acc_before_g",
)
"""Features a model may use: ln of the ±0.5 s and ±0.25 s impulses (g·s), the
peak of the 5 Hz low-passed ``|a|`` (g) and the lowest ``|a|`` in the 1.5 s before (g)."""

DEFAULT_MODEL_PATH = Path(__file__).with_name("model.npz")


@dataclass(frozen=True)
class FallModel:
    """Standardised logistic regression; arrays are (len(feature_names),)."""

    feature_names: tuple[str, ...]
    mean: NDArray[np.float64]
    scale: NDArray[np.float64]
    weights: NDArray[np.float64]
    bias: float
    threshold: float
    """Recommended probability threshold (chosen by leave-one-subject-out validation)."""

    def probability(self, features: dict[str, float]) -> float:
        """Fall probability of one candidate from its features by name.

        Raises:
            KeyError: a feature the model uses is missing.
        """
        raw = np.array([features[name] for name in self.feature_names], dtype=np.float64)
        z = float(np.sum((raw - self.mean) / self.scale * self.weights)) + self.bias
        # Numerically safe sigmoid for large |z|.
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        ez = math.exp(z)
        return ez / (1.0 + ez)


def save_fall_model(model: FallModel, path: str | Path) -> None:
    """Write ``model`` as a small ``.npz`` (the feature names go with it)."""
    np.savez(
        path,
        feature_names=np.array(model.feature_names),
        mean=model.mean,
        scale=model.scale,
        weights=model.weights,
        bias=np.float64(model.bias),
        threshold=np.float64(model.threshold),
    )


@lru_cache(maxsize=8)
def load_fall_model(path: str | None = None) -> FallModel:
    """Load a model written by :func:`save_fall_model`; None loads the shipped one.

    Raises:
        ConfigError: the file is missing, unreadable, or for other features.
    """
    file_path = DEFAULT_MODEL_PATH if path is None else Path(path)
    try:
        with np.load(file_path, allow_pickle=False) as data:
            names = tuple(str(v) for v in data["feature_names"])
            model = FallModel(
                feature_names=names,
                mean=np.asarray(data["mean"], dtype=np.float64),
                scale=np.asarray(data["scale"], dtype=np.float64),
                weights=np.asarray(data["weights"], dtype=np.float64),
                bias=float(data["bias"]),
                threshold=float(data["threshold"]),
            )
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigError(f"{file_path}: cannot load fall model: {exc}") from exc
    k = len(names)
    unknown = set(names) - set(FEATURE_NAMES)
    if k == 0 or unknown:
        raise ConfigError(f"{file_path}: model features must be among {FEATURE_NAMES}, got {names}")
    for label, arr in (("mean", model.mean), ("scale", model.scale), ("weights", model.weights)):
        if arr.shape != (k,) or not np.isfinite(arr).all():
            raise ConfigError(f"{file_path}: {label} must be {k} finite numbers, got {arr!r}")
    if not (np.all(model.scale > 0) and 0.0 <= model.threshold <= 1.0):
        raise ConfigError(f"{file_path}: scale must be > 0 and threshold in [0, 1]")
    return model

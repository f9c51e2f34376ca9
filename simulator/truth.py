"""What really happened to a simulated patient, for tests and evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from simulator.trajectory import FallTruth

__all__ = ["SampleBlock", "Truth"]


@dataclass(frozen=True, slots=True)
class Truth:
    """True trunk state at scenario times.

    ``t_s`` (n,) scenario seconds; ``device_t_s`` (n,) the wearable's clock
    at those times (seconds, unwrapped; NaN while it is off);
    ``flexion_deg``/``lateral_deg`` (n,) the trunk inclinations
    (docs/scenarios.md: + forward, + to the patient's right, from the true
    vertical); ``activity`` (n,) labels; ``falls`` the falls whose onset is
    within ``t_s``.
    """

    t_s: NDArray[np.float64]
    device_t_s: NDArray[np.float64]
    flexion_deg: NDArray[np.float64]
    lateral_deg: NDArray[np.float64]
    activity: NDArray[np.str_]
    falls: tuple[FallTruth, ...]

    @property
    def fall_impact_s(self) -> tuple[float, ...]:
        """Scenario times of the fall impacts."""
        return tuple(f.impact_s for f in self.falls)


@dataclass(frozen=True, slots=True)
class SampleBlock:
    """Samples as the gateway decodes them, with their scenario times.

    ``t_s`` (n,) scenario s; ``device_t_s`` (n,) device clock s;
    ``acc_g`` (n, 3) g; ``gyr_dps`` (n, 3) °/s or None (accelerometer only).
    """

    t_s: NDArray[np.float64]
    device_t_s: NDArray[np.float64]
    acc_g: NDArray[np.float64]
    gyr_dps: NDArray[np.float64] | None
    sample_rate_hz: int

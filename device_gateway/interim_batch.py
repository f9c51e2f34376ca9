"""A stand-in for the device-subset API of ``posture.batch.BatchEngine``, until it lands.

``EngineSlots`` is written against ``BatchEngine.add_device / reset_device /
process(..., devices=...)`` (branch ``state``). Until that is on main, this
class gives the same API with one :class:`posture.PostureEngine` per device,
so the gateway's tick runs and is tested; it saves nothing in the engine.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from posture import EngineConfig, EngineStats, PostureEngine, SlouchSettings
from posture.batch import BatchBlock
from posture.calibration import Calibration

__all__ = ["InterimBatchEngine"]


class InterimBatchEngine:
    """``BatchEngine``'s subset API over one ``PostureEngine`` per device."""

    def __init__(self, config: EngineConfig, devices: int = 0) -> None:
        self.config = config
        self._engines: list[PostureEngine] = []
        for _ in range(devices):
            self.add_device()

    def add_device(self, slouch: SlouchSettings | None = None) -> int:
        self._engines.append(PostureEngine(self._config(slouch)))
        return len(self._engines) - 1

    def reset_device(self, device: int, slouch: SlouchSettings | None = None) -> None:
        self._engines[device] = PostureEngine(self._config(slouch))

    def calibration(self, device: int) -> Calibration | None:
        return self._engines[device].calibration

    def request_calibration(self, device: int) -> None:
        self._engines[device].request_calibration()

    def set_calibration(self, device: int, calibration: Calibration) -> None:
        self._engines[device].set_calibration(calibration)

    def stats(self, device: int) -> EngineStats:
        return self._engines[device].stats

    def process(
        self,
        t_s: NDArray[np.float64],
        acc_g: NDArray[np.float64],
        gyr_dps: NDArray[np.float64] | None = None,
        *,
        devices: NDArray[np.intp],
    ) -> BatchBlock:
        blocks = [
            self._engines[int(d)].process(t_s[i], acc_g[i], None if gyr_dps is None else gyr_dps[i])
            for i, d in enumerate(devices)
        ]
        return BatchBlock(
            t_s=np.stack([b.t_s for b in blocks]),
            flexion_deg=np.stack([b.flexion_deg for b in blocks]),
            lateral_deg=np.stack([b.lateral_deg for b in blocks]),
            activity=np.stack([b.activity for b in blocks]),
            slouching=np.stack([b.slouching for b in blocks]),
            events=tuple(b.events for b in blocks),
            dropped=np.zeros(len(blocks), dtype=bool),
        )

    def _config(self, slouch: SlouchSettings | None) -> EngineConfig:
        if slouch is None:
            return self.config
        return EngineConfig(
            sample_rate_hz=self.config.sample_rate_hz, has_gyro=self.config.has_gyro, slouch=slouch
        )

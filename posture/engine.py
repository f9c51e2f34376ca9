"""The per-wearable posture engine: samples in, angles, activity and events out.

One :class:`PostureEngine` per wearable. Each :meth:`PostureEngine.process`
call takes a block of samples (any length) and returns an
:class:`~posture.types.EngineBlock`. Sample timestamps are the only clock.
Inside, per gap-free segment: the gravity filter (:mod:`posture.orientation`)
gives the up-direction; calibration (:mod:`posture.calibration`) waits for a
still upright period; angles follow from the calibration; the activity
classifier (:mod:`posture.activity`), the slouch detector
(:mod:`posture.slouch`) and the fall detector (:mod:`posture.falls`) run on
them. Output is the same for any split of the stream into blocks.

Discontinuities: a step between consecutive samples of more than 2.5
nominal intervals (lost packets) resets the gravity filter, the activity
filters and a calibration still period in progress, and keeps the
calibration. A step of zero or backwards (the wearable's clock restarted)
is handled the same way and counted in :attr:`PostureEngine.stats`.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from posture.activity import ActivityClassifier
from posture.calibration import Calibration, CalibrationCapture, inclination_deg
from posture.config import EngineConfig
from posture.falls import FallDetector, FallFinding
from posture.orientation import GravityFilter, GravityFilterParams
from posture.slouch import SlouchDetector
from posture.types import (
    EngineBlock,
    PostureEvent,
    PostureEventKind,
    SampleError,
)

__all__ = ["EngineStats", "PostureEngine"]

_log = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]

GAP_INTERVALS = 2.5
"""A step longer than this many nominal sample intervals is a gap."""


@dataclass
class EngineStats:
    """Counters for the gateway's status metrics."""

    samples: int = 0
    blocks: int = 0
    gaps: int = 0
    clock_resets: int = 0


class PostureEngine:
    """Streaming posture engine for one wearable (see the module docstring).

    Raises:
        ConfigError: from :class:`EngineConfig` if the configuration is bad.
    """

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        fs = float(config.sample_rate_hz)
        self._max_interval_s = GAP_INTERVALS / fs
        o = config.orientation
        self._gravity = GravityFilter(
            GravityFilterParams(
                sample_rate_hz=fs,
                has_gyro=config.has_gyro,
                tau_acc_s=o.tau_acc_s,
                acc_only_cutoff_hz=min(o.acc_only_cutoff_hz, 0.35 * fs),
                gyr_delay_s=o.gyr_delay_s,
            )
        )
        self._capture = CalibrationCapture(
            config.calibration, fs, config.nominal_up_sensor, auto=config.auto_calibrate
        )
        self._activity = ActivityClassifier(config.activity, fs, config.has_gyro)
        self._slouch = SlouchDetector(config.slouch, self._max_interval_s)
        self._falls = FallDetector(config.fall, fs)
        nominal = np.asarray(config.nominal_up_sensor, dtype=np.float64)
        self._nominal_up = nominal / np.linalg.norm(nominal)
        self._falls.set_reference_up(self._nominal_up)
        self._calibration: Calibration | None = None
        self._last_t_s = math.nan
        self._last_angles = (math.nan, math.nan)
        self.stats = EngineStats()

    # -- public ------------------------------------------------------------

    @property
    def calibrated(self) -> bool:
        """True once an upright posture has been captured (or restored)."""
        return self._calibration is not None

    @property
    def calibration(self) -> Calibration | None:
        """The current calibration, e.g. to store it for the next session."""
        return self._calibration

    def request_calibration(self) -> None:
        """Capture the upright posture at the next still period.

        The still period must begin after this call (the clinician has just
        asked the patient to sit up straight). Until it comes, the previous
        calibration stays in use.
        """
        self._capture.request()

    def set_calibration(self, calibration: Calibration) -> None:
        """Use a stored calibration (same wearable, same mounting) from now on.

        Cancels a pending automatic capture; a requested one stays pending.
        """
        self._calibration = calibration
        self._capture.cancel_auto()
        self._falls.set_reference_up(np.asarray(calibration.up_sensor))

    def process(
        self, t_s: ArrayLike, acc_g: ArrayLike, gyr_dps: ArrayLike | None = None
    ) -> EngineBlock:
        """Process one block of samples.

        Args:
            t_s: (n,) float seconds on the wearable's clock.
            acc_g: (n, 3) accelerometer in g, sensor axes.
            gyr_dps: (n, 3) gyroscope in °/s, or None for a wearable without
                one (must match ``config.has_gyro``).

        Returns:
            The block's angles, activity, slouch flags and events. Inputs are
            never mutated.

        Raises:
            SampleError: wrong shapes, non-finite values, or gyroscope data
                present/absent against the configuration. The engine state is
                unchanged then.
        """
        t, acc, gyr = self._validate(t_s, acc_g, gyr_dps)
        n = t.size
        self.stats.blocks += 1
        if n == 0:
            empty = np.zeros(0)
            return EngineBlock(t, empty, empty.copy(), np.zeros(0, np.int8), np.zeros(0, bool), ())
        self.stats.samples += n
        dt = np.empty(n)
        dt[0] = t[0] - self._last_t_s if math.isfinite(self._last_t_s) else math.inf
        dt[1:] = t[1:] - t[:-1]
        breaks = (dt > self._max_interval_s) | (dt <= 0.0)
        starts = np.flatnonzero(breaks)
        self._count_breaks(dt[starts])
        bounds = [0, *(int(i) for i in starts if i > 0), n]

        flexion = np.full(n, np.nan)
        lateral = np.full(n, np.nan)
        activity = np.empty(n, dtype=np.int8)
        vigorous = np.empty(n, dtype=bool)
        events: list[tuple[int, int, PostureEvent]] = []
        findings: list[FallFinding] = []
        for a, b in itertools.pairwise(bounds):
            if breaks[a]:
                self._gravity.reset()
                self._capture.reset()
                self._activity.reset()
            seg = slice(a, b)
            g_seg = None if gyr is None else gyr[seg]
            grav = self._gravity.process(acc[seg], g_seg, dt[seg])
            up = grav.up_sensor
            capture = self._capture.process(t[seg], acc[seg], g_seg)
            split = b - a if capture is None else capture.index
            incl = np.empty(b - a)
            # Before the capture: the previous calibration (or none).
            self._angles(up[:split], flexion[a : a + split], lateral[a : a + split], incl[:split])
            if split > 0:
                findings += self._falls.process(
                    t[a : a + split],
                    acc[a : a + split],
                    None if g_seg is None else g_seg[:split],
                    up[:split],
                )
            if capture is not None:
                self._apply_capture(capture.calibration)
                self._angles(
                    up[split:], flexion[a + split : b], lateral[a + split : b], incl[split:]
                )
                findings += self._falls.process(
                    t[a + split : b],
                    acc[a + split : b],
                    None if g_seg is None else g_seg[split:],
                    up[split:],
                )
                events.append(
                    (
                        a + split,
                        0,
                        self._calibrated_event(
                            capture.calibration,
                            capture.tilt_from_nominal_deg,
                            float(flexion[a + split]),
                            float(lateral[a + split]),
                        ),
                    )
                )
            act = self._activity.process(acc[seg], g_seg, up, grav.settled, incl)
            activity[seg] = act.activity
            vigorous[seg] = act.vigorous

        slouching, transitions = self._slouch.process(t, flexion, lateral, activity, vigorous)
        for tr in transitions:
            kind = PostureEventKind.SLOUCH_STARTED if tr.started else PostureEventKind.SLOUCH_ENDED
            events.append(
                (
                    tr.index,
                    1,
                    PostureEvent(
                        kind,
                        float(t[tr.index]),
                        float(flexion[tr.index]),
                        float(lateral[tr.index]),
                        {"duration_s": tr.duration_s},
                    ),
                )
            )
        for f in findings:
            events.append(self._fall_event(f, t, flexion, lateral))
        events.sort(key=lambda e: (e[0], e[1]))
        self._last_t_s = float(t[-1])
        self._last_angles = (float(flexion[-1]), float(lateral[-1]))
        return EngineBlock(
            t_s=t.copy(),
            flexion_deg=flexion,
            lateral_deg=lateral,
            activity=activity,
            slouching=slouching,
            events=tuple(e[2] for e in events),
        )

    # -- internals ---------------------------------------------------------

    def _validate(
        self, t_s: ArrayLike, acc_g: ArrayLike, gyr_dps: ArrayLike | None
    ) -> tuple[FloatArray, FloatArray, FloatArray | None]:
        try:
            t = np.asarray(t_s, dtype=np.float64)
            acc = np.asarray(acc_g, dtype=np.float64)
            gyr = None if gyr_dps is None else np.asarray(gyr_dps, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise SampleError(f"samples must be numeric arrays: {exc}") from exc
        if t.ndim != 1:
            raise SampleError(f"t_s must have shape (n,), got {t.shape}")
        n = t.size
        if acc.shape != (n, 3):
            raise SampleError(f"acc_g must have shape ({n}, 3), got {acc.shape}")
        if self.config.has_gyro and gyr is None:
            raise SampleError("this engine is configured with a gyroscope; gyr_dps is None")
        if not self.config.has_gyro and gyr is not None:
            raise SampleError("this engine is configured without a gyroscope; got gyr_dps")
        if gyr is not None and gyr.shape != (n, 3):
            raise SampleError(f"gyr_dps must have shape ({n}, 3), got {gyr.shape}")
        finite = bool(np.isfinite(t).all() and np.isfinite(acc).all())
        if gyr is not None:
            finite = finite and bool(np.isfinite(gyr).all())
        if not finite:
            raise SampleError("t_s, acc_g and gyr_dps must be finite (no NaN or inf)")
        return t, acc, gyr

    def _count_breaks(self, steps_s: FloatArray) -> None:
        for step in steps_s.tolist():
            if not math.isfinite(step):
                continue
            if step <= 0.0:
                self.stats.clock_resets += 1
                _log.warning("wearable clock went back by %.3f s; filters restart", -step)
            else:
                self.stats.gaps += 1
                _log.debug("gap of %.3f s in the samples; filters restart", step)

    def _angles(
        self, up: FloatArray, flexion: FloatArray, lateral: FloatArray, incl: FloatArray
    ) -> None:
        """Fill angle views for up-directions under the current calibration."""
        if up.shape[0] == 0:
            return
        cal = self._calibration
        if cal is None:
            incl[:] = inclination_deg(up, self._nominal_up)
            return
        flexion[:], lateral[:], incl[:] = cal.angles_and_tilt_deg(up)

    def _apply_capture(self, calibration: Calibration) -> None:
        self._calibration = calibration
        self._falls.set_reference_up(np.asarray(calibration.up_sensor))
        _log.info(
            "calibrated to upright at t=%.2f s (%s)",
            calibration.t_s,
            "requested" if calibration.requested else "automatic",
        )

    def _calibrated_event(
        self, cal: Calibration, tilt_deg: float, flexion_deg: float, lateral_deg: float
    ) -> PostureEvent:
        return PostureEvent(
            PostureEventKind.CALIBRATED,
            cal.t_s,
            flexion_deg,
            lateral_deg,
            {
                "tilt_from_nominal_deg": tilt_deg,
                "still_s": self.config.calibration.still_s,
                "requested": 1.0 if cal.requested else 0.0,
            },
        )

    def _fall_event(
        self, f: FallFinding, t: FloatArray, flexion: FloatArray, lateral: FloatArray
    ) -> tuple[int, int, PostureEvent]:
        hits = np.flatnonzero(t == f.t_s)
        if hits.size:
            i = int(hits[0])
            angles = (float(flexion[i]), float(lateral[i]))
        else:  # a finding about an earlier block's sample
            i, angles = -1, self._last_angles
        kind = (
            PostureEventKind.FALL_DETECTED
            if f.kind == "detected"
            else PostureEventKind.FALL_CANCELLED
        )
        return i, 2, PostureEvent(kind, float(f.t_s), angles[0], angles[1], dict(f.details))

"""The engine's numerics for ``D`` wearables of one configuration, side by side.

:class:`EngineCore` is what :class:`~posture.engine.PostureEngine` (``D =
1``) and :class:`~posture.batch.BatchEngine` (many devices) both run, so the
two give the same numbers by construction. Its state is laid out across
devices (one array per quantity, a column per device) and a block of samples
of every device goes through one array operation per step: the gravity
filter (:mod:`posture.orientation`), activity (:mod:`posture.activity`),
calibration (:mod:`posture.capture`), angles, slouch
(:mod:`posture.slouch`) and the fall detector (:mod:`posture.falls`: its
per-sample stage and impact screen across devices, the rest only for the
devices with an impact that could be a fall, or a fall under way).

Discontinuities: a step between consecutive samples of more than 2.5
nominal intervals (lost packets) resets the gravity filter, the activity
filters and the calibration's still period and walking bout in progress,
and keeps the calibration. A step of zero or backwards (the wearable's clock
restarted) is handled the same way and counted. When devices of a batch
break at different samples, the block is cut at each such sample and the
pieces run one after the other (every part is block-split invariant).
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from posture.activity import ActivityClassifier
from posture.calibration import Calibration, angles_tcd, face_tilt_deg
from posture.capture import CalibrationCapture, Capture
from posture.config import EngineConfig
from posture.devstate import restore, snapshot
from posture.falls import FallFinding, FallStage
from posture.orientation import GravityFilter, GravityFilterParams
from posture.slouch import SlouchDetector
from posture.types import PostureEvent, PostureEventKind

__all__ = ["GAP_INTERVALS", "CoreBlock", "EngineCore"]

_log = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]

GAP_INTERVALS = 2.5
"""A step longer than this many nominal sample intervals is a gap."""

# (sample index, order at that sample, event): calibration, slouch, falls.
Ordered = tuple[int, int, PostureEvent]


@dataclass(slots=True)
class CoreBlock:
    """One block's results: arrays (n, D) and the events in time order of the
    devices that have any."""

    flexion_deg: FloatArray
    lateral_deg: FloatArray
    activity: NDArray[np.int8]
    slouching: BoolArray
    events: dict[int, list[PostureEvent]]


class EngineCore:
    """State and numerics of ``devices`` engines (module docstring)."""

    def __init__(self, config: EngineConfig, devices: int) -> None:
        self.config = config
        self.devices = devices
        fs = float(config.sample_rate_hz)
        self.max_interval_s = GAP_INTERVALS / fs
        o = config.orientation
        params = GravityFilterParams(
            sample_rate_hz=fs,
            has_gyro=config.has_gyro,
            tau_acc_s=o.tau_acc_s,
            acc_only_cutoff_hz=min(o.acc_only_cutoff_hz, 0.35 * fs),
            gyr_delay_s=o.gyr_delay_s,
        )
        self.gravity = GravityFilter(params, devices)
        self.capture = CalibrationCapture(
            config.calibration,
            fs,
            config.nominal_up_sensor,
            auto=config.auto_calibrate,
            devices=devices,
        )
        self.activity = ActivityClassifier(config.activity, fs, config.has_gyro, devices)
        self.slouch = SlouchDetector(config.slouch, self.max_interval_s, devices)
        nominal = np.asarray(config.nominal_up_sensor, dtype=np.float64)
        self.nominal_up = nominal / np.linalg.norm(nominal)
        # Until calibrated, the nominal upright is unmeasured: the fall
        # detector then judges an impact whose trunk was far from it against
        # the trunk's direction before the impact.
        self.falls = FallStage(config.fall, fs, devices, self.nominal_up)
        self.calibrations: list[Calibration | None] = [None] * devices
        self._matrix = np.zeros((3, 3, devices))
        self._calibrated = np.zeros(devices, dtype=bool)
        self.last_t_s = np.full(devices, math.nan)
        self._last_angles = np.full((2, devices), math.nan)
        self.samples = np.zeros(devices, dtype=np.int64)
        self.blocks = np.zeros(devices, dtype=np.int64)
        self.gaps = np.zeros(devices, dtype=np.int64)
        self.clock_resets = np.zeros(devices, dtype=np.int64)

    # -- calibration control -----------------------------------------------

    def request_calibration(self, device: int) -> None:
        self.capture.request(device)

    def set_calibration(self, device: int, calibration: Calibration) -> None:
        self.capture.restore(device, calibration)
        self._use(device, calibration)
        up = np.asarray(calibration.up_sensor, dtype=np.float64)
        self.falls.set_reference_up(device, up / np.linalg.norm(up), calibrated=True)

    def _use(self, device: int, calibration: Calibration) -> None:
        """Angles use ``calibration`` from now on (the fall detector's
        reference changes where its samples reach the capture)."""
        self.calibrations[device] = calibration
        self._matrix[:, :, device] = calibration.matrix
        self._calibrated[device] = True

    # -- processing ----------------------------------------------------------

    def process(
        self,
        t_s: FloatArray,
        acc_g: FloatArray,
        gyr_dps: FloatArray | None,
        active: BoolArray | None = None,
    ) -> CoreBlock:
        """Process one block of ``n >= 1`` samples of every device.

        Args:
            t_s: (n, D) sample times; acc_g: (n, 3, D) in g; gyr_dps: (n, 3, D)
                in °/s or None. All finite; validated by the caller.
            active: (D,) devices whose block counts (None: all). The others'
                state is left as it was and their outputs are empty (NaN
                angles, UNKNOWN, no events); their samples must still be
                finite (any values).
        """
        if active is not None and not active.all():
            idle = np.flatnonzero(~active)
            saved = snapshot(self, idle)
            out = self._process(t_s, acc_g, gyr_dps, active)
            restore(self, idle, saved)
            out.flexion_deg[:, idle] = math.nan
            out.lateral_deg[:, idle] = math.nan
            out.activity[:, idle] = 0
            out.slouching[:, idle] = False
            for dev in idle.tolist():
                out.events.pop(dev, None)
            return out
        return self._process(t_s, acc_g, gyr_dps, None)

    def _process(
        self,
        t_s: FloatArray,
        acc_g: FloatArray,
        gyr_dps: FloatArray | None,
        active: BoolArray | None,
    ) -> CoreBlock:
        n, d = t_s.shape
        self.blocks += 1
        self.samples += n
        dt = np.empty((n, d))
        np.subtract(t_s[0], self.last_t_s, out=dt[0])
        np.subtract(t_s[1:], t_s[:-1], out=dt[1:])
        breaks = dt > self.max_interval_s
        breaks |= dt <= 0.0
        fresh = np.isnan(dt[0])
        if np.count_nonzero(fresh):
            dt[0, fresh] = math.inf
            breaks[0, fresh] = True
        if np.count_nonzero(breaks):
            self._count_breaks(dt, breaks, fresh)
            cuts = np.flatnonzero(breaks[1:].any(axis=1)) + 1
            bounds = [0, *cuts.tolist(), n]
        else:
            bounds = [0, n]

        captures: list[Capture] = []
        if len(bounds) == 2:  # the usual block: no gap inside
            up, flexion, lateral, activity, vigorous = self._segment(
                t_s, acc_g, gyr_dps, dt, breaks[0], 0, captures, active
            )
        else:
            flexion = np.empty((n, d))
            lateral = np.empty((n, d))
            activity = np.empty((n, d), dtype=np.int8)
            vigorous = np.empty((n, d), dtype=bool)
            up = np.empty((n, 3, d))
            for a, b in itertools.pairwise(bounds):
                seg = slice(a, b)
                (up[seg], flexion[seg], lateral[seg], activity[seg], vigorous[seg]) = self._segment(
                    t_s[seg],
                    acc_g[seg],
                    None if gyr_dps is None else gyr_dps[seg],
                    dt[seg],
                    breaks[a],
                    a,
                    captures,
                    active,
                )

        slouching, transitions = self.slouch.process(t_s, flexion, lateral, activity, vigorous)
        events: dict[int, list[Ordered]] = {}
        for c in captures:
            event = self._calibrated_event(c, flexion, lateral)
            events.setdefault(c.device, []).append((c.index, 0, event))
        for tr in transitions:
            kind = PostureEventKind.SLOUCH_STARTED if tr.started else PostureEventKind.SLOUCH_ENDED
            i, dev = tr.index, tr.device
            event = PostureEvent(
                kind,
                float(t_s[i, dev]),
                float(flexion[i, dev]),
                float(lateral[i, dev]),
                {"duration_s": tr.duration_s},
            )
            events.setdefault(dev, []).append((i, 1, event))
        self._falls(t_s, acc_g, gyr_dps, up, captures, flexion, lateral, events, active)
        self.last_t_s = t_s[-1].copy()
        self._last_angles = np.array((flexion[-1], lateral[-1]))
        ordered: dict[int, list[PostureEvent]] = {}
        for dev, evs in events.items():
            evs.sort(key=lambda e: (e[0], e[1]))
            ordered[dev] = [e[2] for e in evs]
        return CoreBlock(flexion, lateral, activity, slouching, ordered)

    def _segment(
        self,
        t_s: FloatArray,
        acc_g: FloatArray,
        gyr_dps: FloatArray | None,
        dt: FloatArray,
        breaks: BoolArray,
        offset: int,
        captures: list[Capture],
        active: BoolArray | None,
    ) -> tuple[FloatArray, FloatArray, FloatArray, NDArray[np.int8], BoolArray]:
        """One gap-free stretch of every device (starting at sample ``offset``
        of the block); resets the devices that break at its first sample."""
        if np.count_nonzero(breaks):
            resets = np.flatnonzero(breaks)
            self.gravity.reset(resets)
            self.capture.reset(resets)
            self.activity.reset(resets)
        grav = self.gravity.process(acc_g, gyr_dps, dt)
        up = grav.up_sensor
        feats = self.activity.features(acc_g, gyr_dps, up, grav.settled)
        found = self.capture.process(
            t_s, acc_g, gyr_dps, grav.acc_lp_g, grav.acc_dev2_g2, feats.walking, feats.gait
        )
        flexion, lateral, incl = self._angles(up)
        if active is not None:  # a dropped block's state is restored afterwards
            found = [c for c in found if active[c.device]]
        for c in found:
            self._use(c.device, c.calibration)
            self._log_capture(c)
            j, dev = c.index, c.device
            f, lat, tilt = angles_tcd(up[j:, :, dev : dev + 1], self._matrix[:, :, dev : dev + 1])
            flexion[j:, dev] = f[:, 0]
            lateral[j:, dev] = lat[:, 0]
            incl[j:, dev] = tilt[:, 0]
            captures.append(replace(c, index=offset + j))
        activity = self.activity.classify(feats, incl)
        return up, flexion, lateral, activity, feats.vigorous

    # -- internals -----------------------------------------------------------

    def _angles(self, up: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Flexion, lateral (n, D) under the current calibrations (NaN without
        one) and the inclination from upright (n, D): calibrated, or the
        back's tilt from vertical before."""
        cal = self._calibrated
        count = np.count_nonzero(cal)
        if count == cal.size:
            return angles_tcd(up, self._matrix)
        incl = face_tilt_deg(up)
        shape = incl.shape
        if count == 0:
            return np.full(shape, math.nan), np.full(shape, math.nan), incl
        flexion, lateral, tilt = angles_tcd(up, self._matrix)
        flexion[:, ~cal] = math.nan
        lateral[:, ~cal] = math.nan
        incl[:, cal] = tilt[:, cal]
        return flexion, lateral, incl

    def _falls(
        self,
        t_s: FloatArray,
        acc_g: FloatArray,
        gyr_dps: FloatArray | None,
        up: FloatArray,
        captures: list[Capture],
        flexion: FloatArray,
        lateral: FloatArray,
        events: dict[int, list[Ordered]],
        active: BoolArray | None,
    ) -> None:
        """The block through the fall detector of the active devices; a
        calibration captured in the block is its reference from that sample."""
        if active is None:
            cols = None
            column = np.arange(self.devices)
        else:
            column = np.flatnonzero(active)
            cols = column
            t_s, acc_g, up = t_s[:, cols], acc_g[:, :, cols], up[:, :, cols]
            gyr_dps = None if gyr_dps is None else gyr_dps[:, :, cols]
        references: dict[int, list[tuple[int, FloatArray]]] = {}
        for c in sorted(captures, key=lambda c: c.index):
            j = int(np.searchsorted(column, c.device))
            up_ref = np.asarray(c.calibration.up_sensor, dtype=np.float64)
            references.setdefault(j, []).append((c.index, up_ref))
        found = self.falls.process(t_s, acc_g, gyr_dps, up, cols, references)
        for j, findings in found.items():
            dev = int(column[j])
            for f in findings:
                events.setdefault(dev, []).append(
                    self._fall_event(dev, f, t_s[:, j], flexion, lateral)
                )

    def _count_breaks(self, dt: FloatArray, breaks: BoolArray, fresh: BoolArray) -> None:
        counted = breaks.copy()
        counted[0] &= ~fresh  # the first sample of a stream is no gap
        back = counted & (dt <= 0.0)
        self.clock_resets += back.sum(axis=0)
        self.gaps += (counted & ~back).sum(axis=0)
        for i, dev in zip(*np.nonzero(back), strict=True):
            _log.warning(
                "device %d: wearable clock went back by %.3f s; filters restart",
                dev,
                -float(dt[i, dev]),
            )
        if _log.isEnabledFor(logging.DEBUG):
            for i, dev in zip(*np.nonzero(counted & ~back), strict=True):
                _log.debug("device %d: gap of %.3f s; filters restart", dev, float(dt[i, dev]))

    def _log_capture(self, c: Capture) -> None:
        cal = c.calibration
        how = (
            "requested"
            if cal.requested
            else "provisional, from walking"
            if cal.provisional
            else "refined"
            if c.refined
            else "automatic"
        )
        _log.info("device %d: calibrated to upright at t=%.2f s (%s)", c.device, cal.t_s, how)

    def _calibrated_event(
        self, c: Capture, flexion: FloatArray, lateral: FloatArray
    ) -> PostureEvent:
        cal = c.calibration
        return PostureEvent(
            PostureEventKind.CALIBRATED,
            cal.t_s,
            float(flexion[c.index, c.device]),
            float(lateral[c.index, c.device]),
            {
                "tilt_from_nominal_deg": c.tilt_from_nominal_deg,
                "still_s": c.still_s,
                "gait_s": c.gait_s,
                "requested": 1.0 if cal.requested else 0.0,
                "provisional": 1.0 if cal.provisional else 0.0,
                "refined": 1.0 if c.refined else 0.0,
            },
        )

    def _fall_event(
        self, dev: int, f: FallFinding, t: FloatArray, flexion: FloatArray, lateral: FloatArray
    ) -> Ordered:
        hits = np.flatnonzero(t == f.t_s)
        if hits.size:
            i = int(hits[0])
            angles = (float(flexion[i, dev]), float(lateral[i, dev]))
        else:  # a finding about an earlier block's sample
            i = -1
            angles = (float(self._last_angles[0, dev]), float(self._last_angles[1, dev]))
        kind = (
            PostureEventKind.FALL_DETECTED
            if f.kind == "detected"
            else PostureEventKind.FALL_CANCELLED
        )
        return i, 2, PostureEvent(kind, float(f.t_s), angles[0], angles[1], dict(f.details))

"""Activity of the wearer per sample: upright, moving, walking or lying.

Features, all from streaming LTI filters (:class:`~posture.lti.SosFilter`):

* vertical dynamic acceleration ``acc·up - 1`` (g; ``|acc| - 1`` without a
  gyroscope), band-passed to the gait band (0.7-3.5 Hz); its RMS envelope
  and its zero-crossing rate (crossings of a ±``crossing_deadband_g`` band,
  so sensor noise does not count). Steps bounce the trunk vertically at the
  step frequency, 1-2.5 Hz, so walking shows a strong, regular vertical
  signal; a bend to pick something up shows one slow swing.
* RMS of the whole dynamic acceleration ``acc - up`` (g; without a
  gyroscope the up-direction follows slow changes, so this measures the
  magnitude's deviation from 1 g and the fast changes of direction).
* tilt rate of the trunk (°/s): the gyroscope's rate across the up axis,
  or the rate of change of the up-direction without a gyroscope.

Two stages. :meth:`ActivityClassifier.features` needs only the gravity
filter's up-direction, never the calibration nor a nominal mounting: gait
(walking) and stillness come from it, so the calibration may use them. The
up-direction is the wearable's own estimate of the vertical, so "vertical
bounce" is vertical whatever the mounting. :meth:`ActivityClassifier.classify`
then adds the trunk's inclination from upright (from the calibration, or a
spin-free estimate before it; see :mod:`posture.calibration`).

Rules (thresholds in :class:`ActivitySettings`):

* UNKNOWN until the gravity filter has settled after the start or a gap.
* gait once the gait criteria held for ``walk_enter_s``; it lasts
  ``walk_hold_s`` after they stop (the pause between steps or a turn).
  WALKING is gait with the trunk less than ``lying_enter_deg`` from upright;
  still means quiet and not WALKING.
* LYING once still for ``lying_enter_s`` more than ``lying_enter_deg`` from
  the reference upright; it lasts until the trunk comes within
  ``lying_exit_deg`` or the wearer walks.
* UPRIGHT when still and less than ``lying_enter_deg`` from upright
  otherwise (sitting or standing, slouched too).
* MOVING otherwise.

``vigorous`` marks samples whose dynamic acceleration RMS exceeds
``vigorous_acc_g``; the slouch detector pauses its dwell timer there.

One classifier serves ``devices`` wearables of the same rate side by side
(arrays ``(n, D)`` and ``(n, 3, D)``, see :mod:`posture.rotation`); it holds
the thresholds and filter coefficients, and what it remembers per device is
its :class:`ActivityState` (:mod:`posture.state`).

``kernel`` picks the implementation (:func:`posture.kernels.selected_kernel`);
the NumPy code here is the reference that :mod:`posture.kernels.activity` is
tested against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import signal

from posture.kernels import Kernel, contiguous_fields, selected_kernel
from posture.lti import SosFilter
from posture.rotation import dot_tcd
from posture.runs import forward_fill, run_length
from posture.types import Activity, check_positive_fields

__all__ = ["ActivityClassifier", "ActivitySettings", "ActivityState", "GaitBlock"]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class ActivitySettings:
    """Thresholds of :class:`ActivityClassifier` (units in the names)."""

    gait_band_hz: tuple[float, float] = (0.7, 3.5)
    envelope_tau_s: float = 0.8
    walk_min_rms_g: float = 0.04
    walk_min_crossings_per_s: float = 1.4
    walk_max_crossings_per_s: float = 8.0
    walk_min_vertical_share: float = 0.15
    crossing_deadband_g: float = 0.015
    walk_enter_s: float = 1.0
    walk_hold_s: float = 1.5
    still_max_acc_g: float = 0.08
    still_max_tilt_dps: float = 10.0
    lying_enter_deg: float = 60.0
    lying_exit_deg: float = 45.0
    lying_enter_s: float = 2.0
    vigorous_acc_g: float = 0.15

    def __post_init__(self) -> None:
        check_positive_fields(self)
        low, high = self.gait_band_hz
        if not 0.0 < low < high:
            raise ValueError(f"ActivitySettings.gait_band_hz must be (low, high), got {low, high}")
        if not 0.0 < self.lying_exit_deg <= self.lying_enter_deg < 180.0:
            raise ValueError("ActivitySettings needs 0 < lying_exit_deg <= lying_enter_deg < 180")


@dataclass(slots=True)
class GaitBlock:
    """Posture-free activity features of one block, each (n, D).

    ``walking``: gait detected (entry delay and hold applied); ``gait``: the
    gait criteria hold at the sample; ``quiet``: little dynamic acceleration
    and tilting; ``vigorous``: strong dynamic acceleration; ``settled``: the
    gravity filter has settled.
    """

    walking: BoolArray
    gait: BoolArray
    quiet: BoolArray
    vigorous: BoolArray
    settled: BoolArray


@dataclass(slots=True)
class ActivityState:
    """What :class:`ActivityClassifier` carries between blocks, one column per
    device (:mod:`posture.state`).

    ``gait_lp`` (order, 1, D) and ``envelope_lp`` (order, 4, D): the gait
    band-pass and envelope filters' states; ``prev_up`` (3, D) the last
    up-direction and ``fresh`` (D,) whether there is none yet (tilt rate
    without a gyroscope); ``sign`` (D,) the side of the crossing band last
    left; ``walk_run``, ``since_walk``, ``still_run`` (D,) run lengths in
    samples; ``lying`` (D,) 1 while lying.
    """

    gait_lp: FloatArray
    envelope_lp: FloatArray
    prev_up: FloatArray
    fresh: BoolArray
    sign: IntArray
    walk_run: IntArray
    since_walk: IntArray
    still_run: IntArray
    lying: IntArray

    @classmethod
    def fresh_state(cls, devices: int, gait_order: int, envelope_order: int) -> ActivityState:
        return cls(
            gait_lp=np.zeros((gait_order, 1, devices)),
            envelope_lp=np.zeros((envelope_order, 4, devices)),
            prev_up=np.zeros((3, devices)),
            fresh=np.ones(devices, dtype=bool),
            sign=np.zeros(devices, dtype=np.int64),
            walk_run=np.zeros(devices, dtype=np.int64),
            since_walk=np.full(devices, _NO_WALK, dtype=np.int64),
            still_run=np.zeros(devices, dtype=np.int64),
            lying=np.zeros(devices, dtype=np.int64),
        )


# Samples since walking, for a device that has not walked.
_NO_WALK = 1 << 30


class ActivityClassifier:
    """Streaming activity classification of ``devices`` wearables (module docstring)."""

    def __init__(
        self,
        settings: ActivitySettings,
        sample_rate_hz: float,
        has_gyro: bool,
        devices: int = 1,
        kernel: Kernel | str | None = None,
    ) -> None:
        self.settings = settings
        self.kernel = selected_kernel(kernel)
        self.has_gyro = has_gyro
        fs = sample_rate_hz
        self._fs = fs
        low, high = settings.gait_band_hz
        high = min(high, 0.45 * fs)
        # The filters' own states are unused: blocks run from self.state.
        self._gait = SosFilter(
            np.asarray(signal.butter(2, (low, high), "bandpass", fs=fs, output="sos")), 0
        )
        cutoff = math.sqrt(2.0) / (2.0 * math.pi * settings.envelope_tau_s)
        self._envelope = SosFilter(np.asarray(signal.butter(2, cutoff, fs=fs, output="sos")), 0)
        self._walk_enter = max(1, round(settings.walk_enter_s * fs))
        self._walk_hold = round(settings.walk_hold_s * fs)
        self._lying_enter = max(1, round(settings.lying_enter_s * fs))
        # Thresholds on squared and per-sample quantities, computed once.
        self._walk_ms = settings.walk_min_rms_g**2
        self._still_ms = settings.still_max_acc_g**2
        self._vigorous_ms = settings.vigorous_acc_g**2
        self._min_cross = settings.walk_min_crossings_per_s / fs
        self._max_cross = settings.walk_max_crossings_per_s / fs
        if self.kernel is Kernel.COMPILED:
            self._coefficients = _KernelCoefficients.of(self)
            from posture.kernels import activity

            self._kernels = activity
        self.state = self.fresh_state(devices)

    @property
    def state(self) -> ActivityState:
        """What the classifier remembers per device; the engine may swap it
        between blocks. Its arrays are updated in place: a field replaced by
        another array takes effect once the state is assigned here again (the
        compiled kernels' arguments are made from the state bound)."""
        return self._state

    @state.setter
    def state(self, state: ActivityState) -> None:
        self._state = state
        self._args: tuple[tuple[object, ...], tuple[object, ...]] = ((), ())
        self._args_devices = -1

    def fresh_state(self, devices: int) -> ActivityState:
        """The state of ``devices`` wearables never seen."""
        return ActivityState.fresh_state(devices, self._gait.order, self._envelope.order)

    def reset(self, devices: IntArray | None = None) -> None:
        """Start over (after a gap): filters and runs restart, envelopes at rest."""
        d = slice(None) if devices is None else devices
        st = self.state
        st.gait_lp[:, :, d] = 0.0
        st.envelope_lp[:, :, d] = 0.0
        st.fresh[d] = True
        st.sign[d] = 0
        st.walk_run[d] = 0
        st.since_walk[d] = _NO_WALK
        st.still_run[d] = 0
        st.lying[d] = 0

    def features(
        self,
        acc_g: FloatArray,
        gyr_dps: FloatArray | None,
        up_sensor: FloatArray,
        settled: BoolArray,
    ) -> GaitBlock:
        """Gait, stillness and vigour of one gap-free block (no posture needed).

        Args:
            acc_g: (n, 3, D) accelerometer in g.
            gyr_dps: (n, 3, D) gyroscope in °/s or None.
            up_sensor: (n, 3, D) unit up-directions from the gravity filter.
            settled: (n, D) whether the gravity filter has settled.
        """
        if self.kernel is Kernel.COMPILED:
            return self._features_compiled(acc_g, gyr_dps, up_sensor, settled)
        s = self.settings
        n, _, d = acc_g.shape
        if self.has_gyro:
            vertical = dot_tcd(acc_g, up_sensor)
            vertical -= 1.0
        else:
            # Without a gyroscope the up-direction follows the gait bounce
            # and lags posture changes; the magnitude is vertical enough
            # (steps accelerate the trunk mostly up and down) and does not
            # depend on the tilt.
            vertical = np.sqrt(dot_tcd(acc_g, acc_g))
            vertical -= 1.0
        st = self.state
        gait, zf = self._gait.run(vertical, st.gait_lp.reshape(-1, d))
        st.gait_lp = zf.reshape(-1, 1, d)
        raw = np.empty((n, 4, d))
        np.multiply(gait, gait, out=raw[:, 0])
        dyn = acc_g - up_sensor
        np.add.reduce(dyn * dyn, axis=1, out=raw[:, 1])
        raw[:, 2] = self._tilt_rate_dps(gyr_dps, up_sensor)
        raw[:, 3] = self._crossings(gait)
        env, zf = self._envelope.run(raw.reshape(n, 4 * d), st.envelope_lp.reshape(-1, 4 * d))
        st.envelope_lp = zf.reshape(-1, 4, d)
        env = env.reshape(n, 4, d)
        gait_ms, dyn_ms, tilt_lp, crossings = env[:, 0], env[:, 1], env[:, 2], env[:, 3]

        gait_now = gait_ms > self._walk_ms
        if np.count_nonzero(gait_now):
            gait_now &= crossings >= self._min_cross
            gait_now &= crossings <= self._max_cross
            gait_now &= gait_ms >= s.walk_min_vertical_share * dyn_ms
            gait_now &= settled
        walk_run = run_length(gait_now, st.walk_run)
        st.walk_run = walk_run[-1].copy()
        since = run_length(walk_run < self._walk_enter, st.since_walk)
        st.since_walk = since[-1].copy()
        walking = since <= self._walk_hold
        quiet = dyn_ms < self._still_ms
        quiet &= tilt_lp < s.still_max_tilt_dps
        return GaitBlock(
            walking=walking,
            gait=gait_now,
            quiet=quiet,
            vigorous=dyn_ms > self._vigorous_ms,
            settled=settled,
        )

    def classify(self, gait: GaitBlock, inclination_deg: FloatArray) -> NDArray[np.int8]:
        """Activity (n, D) int8 from the block's features and the trunk's
        inclination (n, D) in degrees from upright."""
        if self.kernel is Kernel.COMPILED:
            return self._classify_compiled(gait, inclination_deg)
        s = self.settings
        upright = inclination_deg < s.lying_enter_deg
        # Gait with the trunk far from upright (a rhythmic motion while bent
        # over or lying) is no walking, and does not keep the trunk from being
        # still either.
        walking = gait.walking & upright
        still = gait.quiet & ~walking
        st = self.state
        still_run = run_length(still, st.still_run)
        st.still_run = still_run[-1].copy()
        enter = still_run >= self._lying_enter
        enter &= inclination_deg > s.lying_enter_deg
        activity = np.full(inclination_deg.shape, int(Activity.MOVING), dtype=np.int8)
        activity[still & upright] = Activity.UPRIGHT
        if np.count_nonzero(enter) or np.count_nonzero(st.lying):
            leave = (inclination_deg < s.lying_exit_deg) | walking
            lying = forward_fill(enter.astype(np.int64), enter | leave, st.lying)
            st.lying = lying[-1].copy()
            activity[lying.astype(bool)] = Activity.LYING
        if np.count_nonzero(walking):
            activity[walking] = Activity.WALKING
        if np.count_nonzero(gait.settled) < activity.size:
            activity[~gait.settled] = Activity.UNKNOWN
        return activity

    def _tilt_rate_dps(self, gyr_dps: FloatArray | None, up_sensor: FloatArray) -> FloatArray:
        if gyr_dps is not None:
            # The rate about the vertical (turning) does not tilt the trunk:
            # |cross(ω, up)|² = |ω|² - (ω·up)² for a unit up.
            along = dot_tcd(gyr_dps, up_sensor)
            across2 = dot_tcd(gyr_dps, gyr_dps)
            across2 -= along * along
            return np.sqrt(np.maximum(across2, 0.0, out=across2), out=across2)
        st = self.state
        fresh = st.fresh
        if fresh.any():
            st.prev_up[:, fresh] = up_sensor[0][:, fresh]
            fresh[:] = False
        prev = np.concatenate((st.prev_up[None], up_sensor[:-1]))
        st.prev_up = up_sensor[-1].copy()
        cos = dot_tcd(prev, up_sensor)
        return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))) * self._fs

    def _crossings(self, gait: FloatArray) -> FloatArray:
        """1.0 where the gait signal crossed the dead band, else 0.0."""
        h = self.settings.crossing_deadband_g
        above = gait > h
        below = gait < -h
        if np.count_nonzero(above) + np.count_nonzero(below) == 0:
            return np.zeros(gait.shape)  # inside the band: no crossing (at rest)
        sign = above.astype(np.int64)
        sign -= below
        # The side of the band last left, carried; a crossing is a change of
        # side (+1 to -1 or back), a step of 2.
        st = self.state
        filled = forward_fill(sign, above | below, st.sign)
        steps = np.diff(filled, axis=0, prepend=st.sign[None])
        st.sign = filled[-1].copy()
        return (np.abs(steps) == 2).astype(np.float64)

    # -- the compiled kernels (posture.kernels.activity) ------------------------

    def _features_compiled(
        self,
        acc_g: FloatArray,
        gyr_dps: FloatArray | None,
        up_sensor: FloatArray,
        settled: BoolArray,
    ) -> GaitBlock:
        """:meth:`features` by the compiled kernel: the same stages, one pass per sample."""
        if self.has_gyro and gyr_dps is None:
            raise ValueError("this classifier was configured with a gyroscope; gyr_dps is None")
        n, _, d = acc_g.shape
        args = self._args if self._args_devices == d else self._bound_args(d)
        if (
            up_sensor.shape != acc_g.shape
            or settled.shape != (n, d)
            or (self.has_gyro and gyr_dps is not None and gyr_dps.shape != acc_g.shape)
        ):
            # The kernel indexes without bounds checks: never run it on a mismatch.
            raise ValueError(
                f"activity features of a block of shape {acc_g.shape} "
                f"(up {up_sensor.shape}, settled {settled.shape})"
            )
        out = GaitBlock(
            walking=np.empty((n, d), dtype=bool),
            gait=np.empty((n, d), dtype=bool),
            quiet=np.empty((n, d), dtype=bool),
            vigorous=np.empty((n, d), dtype=bool),
            settled=settled,
        )
        self._kernels.activity_features(
            np.ascontiguousarray(acc_g),
            _NO_GYRO if gyr_dps is None or not self.has_gyro else np.ascontiguousarray(gyr_dps),
            np.ascontiguousarray(up_sensor),
            np.ascontiguousarray(settled),
            self.has_gyro,
            out.walking,
            out.gait,
            out.quiet,
            out.vigorous,
            *args[0],
        )
        return out

    def _classify_compiled(self, gait: GaitBlock, inclination_deg: FloatArray) -> NDArray[np.int8]:
        """:meth:`classify` by the compiled kernel."""
        n, d = inclination_deg.shape
        args = self._args if self._args_devices == d else self._bound_args(d)
        shape = (n, d)
        if not (gait.walking.shape == gait.quiet.shape == gait.settled.shape == shape):
            raise ValueError(f"activity flags {gait.walking.shape} for a block of shape {shape}")
        activity = np.empty(shape, dtype=np.int8)
        self._kernels.activity_classify(
            np.ascontiguousarray(gait.walking),
            np.ascontiguousarray(gait.quiet),
            np.ascontiguousarray(gait.settled),
            np.ascontiguousarray(np.asarray(inclination_deg, dtype=np.float64)),
            activity,
            *args[1],
        )
        return activity

    def _bound_args(self, devices: int) -> tuple[tuple[object, ...], tuple[object, ...]]:
        """The kernels' state and coefficient arguments (features, classify)
        for blocks of ``devices`` devices: the bound state's arrays, made
        C-contiguous once (the kernels update them in place), kept while
        blocks of as many devices come.

        Raises:
            ValueError: the state is not of ``devices`` devices.
        """
        st, co, d = self._state, self._coefficients, devices
        contiguous_fields(st, _STATE_FIELDS)
        sizes = {name: getattr(st, name).size for name in _STATE_FIELDS}
        expected = {
            "gait_lp": 2 * co.gait_sos.shape[0] * d,
            "envelope_lp": 2 * 4 * co.envelope_sos.shape[0] * d,
            "prev_up": 3 * d,
        }
        if any(
            getattr(st, name).shape[-1] != d or sizes[name] != expected.get(name, d)
            for name in _STATE_FIELDS
        ):
            # The kernels index without bounds checks: never run them on a mismatch.
            raise ValueError(
                f"activity state of {st.walk_run.shape[0]} devices for a block of {d} devices"
            )
        features = (
            st.gait_lp.reshape(-1, d),
            st.envelope_lp.reshape(-1, 4 * d),
            st.prev_up,
            st.fresh,
            st.sign,
            st.walk_run,
            st.since_walk,
            co.gait_sos,
            co.envelope_sos,
            co.thresholds,
            co.samples,
        )
        classify = (
            st.still_run,
            st.lying,
            co.lying_deg,
            self._lying_enter,
            _CLASSIFY_CODES,
        )
        self._args, self._args_devices = (features, classify), d
        return features, classify


# The state the kernels update in place (made C-contiguous first).
_STATE_FIELDS = (
    "gait_lp",
    "envelope_lp",
    "prev_up",
    "fresh",
    "sign",
    "walk_run",
    "since_walk",
    "still_run",
    "lying",
)
# What the features kernel takes for the gyroscope without one (never read).
_NO_GYRO = np.zeros((1, 3, 1))
_CLASSIFY_CODES = np.array(
    [Activity.UNKNOWN, Activity.UPRIGHT, Activity.MOVING, Activity.WALKING, Activity.LYING],
    dtype=np.int8,
)


@dataclass(frozen=True)
class _KernelCoefficients:
    """What the compiled kernels take besides data and state: the filters as
    (S, 5) rows ``(b0, b1, b2, a1, a2)``, the thresholds and sample counts in
    the order :func:`posture.kernels.activity.activity_features` reads them,
    and the lying angles (enter, exit) in degrees."""

    gait_sos: FloatArray
    envelope_sos: FloatArray
    thresholds: FloatArray
    samples: IntArray
    lying_deg: FloatArray

    @staticmethod
    def of(c: ActivityClassifier) -> _KernelCoefficients:
        s = c.settings
        return _KernelCoefficients(
            # The kernel holds each filter's state in registers: the second-
            # order band-pass is two biquads, the envelope low-pass one.
            gait_sos=_sections(c._gait.sos, 2),
            envelope_sos=_sections(c._envelope.sos, 1),
            thresholds=np.array(
                [
                    c._walk_ms,
                    c._still_ms,
                    c._vigorous_ms,
                    c._min_cross,
                    c._max_cross,
                    s.walk_min_vertical_share,
                    s.still_max_tilt_dps,
                    s.crossing_deadband_g,
                    c._fs,
                ]
            ),
            samples=np.array([c._walk_enter, c._walk_hold], dtype=np.int64),
            lying_deg=np.array([s.lying_enter_deg, s.lying_exit_deg]),
        )


def _sections(sos: FloatArray, count: int) -> FloatArray:
    """``sos`` (count, 6) as the kernel's (count, 5) rows ``(b0, b1, b2, a1, a2)``."""
    if sos.shape != (count, 6) or not np.all(sos[:, 3] == 1.0):
        raise ValueError(
            f"the compiled kernel runs {count} normalised biquad(s) here, got sos {sos!r}"
        )
    return np.ascontiguousarray(sos[:, [0, 1, 2, 4, 5]])

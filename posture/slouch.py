"""Slouch detection: flexion (or lateral bend) beyond a threshold for a dwell.

Per sample, from the calibrated angles and the activity:

* **beyond**: ``flexion > threshold_deg`` or ``|lateral| > lateral_threshold_deg``;
* **clear**: flexion below ``threshold_deg - hysteresis_deg`` and ``|lateral|``
  below ``lateral_threshold_deg - hysteresis_deg``.

The dwell timer (the decision, documented for the physiotherapists):

* counts sample time while beyond and UPRIGHT, MOVING or WALKING (moving
  into a slouch counts: the alert comes ``dwell_s`` after the threshold is
  truly crossed, within one sample; walking hunched counts: hunched gait
  is the posture that loads osteoporotic vertebrae most);
* fires only on a sample that is beyond and UPRIGHT (still) or WALKING:
  someone in the middle of lying down, getting up or bending is not told to
  sit up; if the count is complete, the alert comes as soon as they hold
  still or walk on;
* **resets** when clear or LYING (lying is not slouching; a brief bend to
  pick something up, standing or while walking, comes back below the
  threshold long before a dwell and resets it), or while uncalibrated;
* **pauses** (keeps its count, does not run) in the hysteresis band, in
  vigorous motion other than walking (dynamic acceleration above the
  activity's vigorous level), while the activity is UNKNOWN (after a gap)
  and across gaps.

With ``SlouchSettings.while_walking = False`` (a per-patient setting, e.g.
a patient who walks with a frame and is told so) WALKING resets the count
and ends a slouch, as LYING does.

A slouch starts when the count has reached ``dwell_s`` (SLOUCH_STARTED at
that sample) and ends at the first sample that is clear or LYING (or
WALKING, when walking does not count; SLOUCH_ENDED, with ``duration_s``
since the start).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from posture.kernels import Kernel, contiguous_fields, selected_kernel
from posture.types import Activity, SlouchSettings

__all__ = ["SlouchDetector", "SlouchParams", "SlouchState", "SlouchTransition"]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

_WALKING = int(Activity.WALKING)
_LYING = int(Activity.LYING)
_UPRIGHT = int(Activity.UPRIGHT)
_MOVING = int(Activity.MOVING)

# Up to this many devices loop over plain floats per device; beyond, over
# array steps (see posture.rotation for the same choice).
_SCALAR_LOOP_MAX_DEVICES = 8


@dataclass(frozen=True)
class SlouchTransition:
    """A slouch of ``device`` started (``started``) or ended at sample ``index``."""

    index: int
    started: bool
    duration_s: float
    device: int = 0


@dataclass(slots=True)
class SlouchParams:
    """Each device's :class:`~posture.types.SlouchSettings` (a per-patient
    rule), one column per device: ``threshold_deg``, ``hysteresis_deg``,
    ``dwell_s``, ``lateral_threshold_deg`` (D,) float and ``while_walking``
    (D,) bool.

    Parameters, not memory; they are laid out like a state
    (:mod:`posture.state`) so that a subset of devices carries its own.
    """

    threshold_deg: FloatArray
    hysteresis_deg: FloatArray
    dwell_s: FloatArray
    lateral_threshold_deg: FloatArray
    while_walking: BoolArray

    @classmethod
    def fresh(cls, devices: int, settings: SlouchSettings) -> SlouchParams:
        """``devices`` devices that all use ``settings``."""
        return cls(
            threshold_deg=np.full(devices, settings.threshold_deg, dtype=np.float64),
            hysteresis_deg=np.full(devices, settings.hysteresis_deg, dtype=np.float64),
            dwell_s=np.full(devices, settings.dwell_s, dtype=np.float64),
            lateral_threshold_deg=np.full(
                devices, settings.lateral_threshold_deg, dtype=np.float64
            ),
            while_walking=np.full(devices, settings.while_walking, dtype=bool),
        )

    def set(self, device: int, settings: SlouchSettings) -> None:
        """Device ``device`` uses ``settings`` from now on."""
        self.threshold_deg[device] = settings.threshold_deg
        self.hysteresis_deg[device] = settings.hysteresis_deg
        self.dwell_s[device] = settings.dwell_s
        self.lateral_threshold_deg[device] = settings.lateral_threshold_deg
        self.while_walking[device] = settings.while_walking


@dataclass(slots=True)
class SlouchState:
    """What :class:`SlouchDetector` carries between blocks, one column per
    device (:mod:`posture.state`): ``slouching`` and ``timing`` (D,) bool,
    the dwell count ``count_s``, the slouch's start ``started_t_s`` and the
    last sample's time ``last_t_s`` (D,) seconds."""

    slouching: BoolArray
    count_s: FloatArray
    timing: BoolArray
    started_t_s: FloatArray
    last_t_s: FloatArray

    @classmethod
    def fresh(cls, devices: int) -> SlouchState:
        return cls(
            slouching=np.zeros(devices, dtype=bool),
            count_s=np.zeros(devices),
            timing=np.zeros(devices, dtype=bool),
            started_t_s=np.full(devices, math.nan),
            last_t_s=np.full(devices, math.nan),
        )


class SlouchDetector:
    """Streaming slouch state machine of ``devices`` wearables (module docstring).

    The rule is per device (:attr:`params`, from ``settings`` until changed);
    the memory is :attr:`state`. A block runs as a few array operations over
    all devices, and the per-sample loop only for devices whose state may
    change in it. ``kernel`` picks the implementation
    (:func:`posture.kernels.selected_kernel`); this NumPy code is the
    reference that :mod:`posture.kernels.slouch` is tested against.
    """

    def __init__(
        self,
        settings: SlouchSettings,
        max_interval_s: float,
        devices: int = 1,
        kernel: Kernel | str | None = None,
    ) -> None:
        self.settings = settings
        self.kernel = selected_kernel(kernel)
        self._max_interval_s = max_interval_s
        if self.kernel is Kernel.COMPILED:
            from posture.kernels import slouch

            self._kernels = slouch
        # Room for a transition at every sample of the compiled kernel's block;
        # only the rows written are touched (a transition is rare), so the
        # pages of the rest never are. Kept from block to block.
        self._transitions = np.empty((0, 4))
        self._params = SlouchParams.fresh(devices, settings)
        self.state = SlouchState.fresh(devices)

    @property
    def state(self) -> SlouchState:
        """What the detector remembers per device; the engine may swap it
        between blocks. Its arrays are updated in place: a field replaced by
        another array takes effect once the state is assigned here again (the
        compiled kernel's arguments are made from the state and rule bound)."""
        return self._state

    @state.setter
    def state(self, state: SlouchState) -> None:
        self._state = state
        self._args: tuple[object, ...] = ()
        self._args_devices = -1

    @property
    def params(self) -> SlouchParams:
        """Each device's rule (changed in place by :meth:`SlouchParams.set`, or
        swapped with the state)."""
        return self._params

    @params.setter
    def params(self, params: SlouchParams) -> None:
        self._params = params
        self._args = ()
        self._args_devices = -1

    def process(
        self,
        t_s: FloatArray,
        flexion_deg: FloatArray,
        lateral_deg: FloatArray,
        activity: NDArray[np.int8],
        vigorous: BoolArray,
    ) -> tuple[BoolArray, list[SlouchTransition]]:
        """Run over one block, arrays (n, D); returns ``slouching`` (n, D) and
        the transitions (by device, in time order).

        NaN angles (uncalibrated) count as not beyond and clear.
        """
        if self.kernel is Kernel.COMPILED:
            return self._process_compiled(t_s, flexion_deg, lateral_deg, activity, vigorous)
        p, st = self.params, self.state
        # NaN angles compare False: never beyond (and clear, below). The
        # rule's (D,) arrays broadcast over the samples.
        lateral_abs = np.abs(lateral_deg)
        beyond = (flexion_deg > p.threshold_deg) | (lateral_abs > p.lateral_threshold_deg)
        out = np.zeros(beyond.shape, dtype=bool)
        busy = st.slouching | st.timing
        if not (busy.any() or beyond.any()):  # the common case: nothing can change
            st.last_t_s = t_s[-1].copy()
            return out, []
        walking = activity == _WALKING
        resetting = activity == _LYING
        if not p.while_walking.all():
            resetting = resetting | (walking & ~p.while_walking)
        loop = busy | (beyond & ~resetting).any(axis=0)
        if st.slouching.any():
            clear = self._clear(flexion_deg, lateral_abs, resetting)
            steady = st.slouching & ~clear.any(axis=0)  # slouching all through
            out[:, steady] = True
            loop &= ~steady
        else:
            clear = None
        transitions: list[SlouchTransition] = []
        if loop.any():
            if clear is None:
                clear = self._clear(flexion_deg, lateral_abs, resetting)
            upright = activity == _UPRIGHT
            if p.while_walking.any():
                # Gait is vigorous by nature: it does not pause the count.
                walk_counts = walking & p.while_walking
                upright = upright | walk_counts
                vigorous = vigorous & ~walk_counts
            counting = beyond & ~resetting & ~vigorous & (upright | (activity == _MOVING))
            may_start = counting & upright
            devices = np.flatnonzero(loop)
            if devices.size > _SCALAR_LOOP_MAX_DEVICES:
                transitions += self._steps(devices, t_s, may_start, clear, counting, out)
            else:
                for d in devices.tolist():
                    transitions += self._loop(
                        d, t_s[:, d], may_start[:, d], clear[:, d], counting[:, d], out[:, d]
                    )
        st.last_t_s = t_s[-1].copy()
        return out, transitions

    def _process_compiled(
        self,
        t_s: FloatArray,
        flexion_deg: FloatArray,
        lateral_deg: FloatArray,
        activity: NDArray[np.int8],
        vigorous: BoolArray,
    ) -> tuple[BoolArray, list[SlouchTransition]]:
        """:meth:`process` by the compiled kernel (:mod:`posture.kernels.slouch`)."""
        n, d = t_s.shape
        if not (
            flexion_deg.shape == lateral_deg.shape == activity.shape == vigorous.shape == (n, d)
        ):
            # The kernel indexes without bounds checks: never run it on a mismatch.
            raise ValueError(
                f"slouch inputs {flexion_deg.shape}, {lateral_deg.shape}, {activity.shape}, "
                f"{vigorous.shape} for a block of shape {(n, d)}"
            )
        args = self._args if self._args_devices == d else self._bound_args(d)
        out = np.empty((n, d), dtype=bool)
        if self._transitions.shape[0] < n * d:
            self._transitions = np.empty((n * d, 4))
        transitions = self._transitions
        found = self._kernels.slouch_steps(
            np.ascontiguousarray(t_s),
            np.ascontiguousarray(flexion_deg),
            np.ascontiguousarray(lateral_deg),
            np.ascontiguousarray(np.asarray(activity, dtype=np.int8)),
            np.ascontiguousarray(vigorous),
            out,
            transitions,
            *args,
        )
        if not found:
            return out, []
        # By device, in time order (the reference's order; the kernel's is by time).
        return out, [
            SlouchTransition(int(i), started == 1.0, round(duration, 6), device=int(dev))
            for dev, i, started, duration in sorted(transitions[:found].tolist())
        ]

    def _bound_args(self, devices: int) -> tuple[object, ...]:
        """The kernel's state and rule arguments for blocks of ``devices``
        devices: the bound arrays, made C-contiguous once (the kernel updates
        the state's in place), kept while blocks of as many devices come.

        Raises:
            ValueError: the state or the rule is not of ``devices`` devices.
        """
        p, st = self._params, self._state
        contiguous_fields(st, _STATE_FIELDS)
        contiguous_fields(p, _PARAM_FIELDS)
        if any(getattr(st, name).shape != (devices,) for name in _STATE_FIELDS) or any(
            getattr(p, name).shape != (devices,) for name in _PARAM_FIELDS
        ):
            # The kernel indexes without bounds checks: never run it on a mismatch.
            raise ValueError(
                f"slouch state of {st.slouching.shape[0]} devices (rule "
                f"{p.dwell_s.shape[0]}) for a block of {devices} devices"
            )
        args = (
            st.slouching,
            st.count_s,
            st.timing,
            st.started_t_s,
            st.last_t_s,
            p.threshold_deg,
            p.hysteresis_deg,
            p.dwell_s,
            p.lateral_threshold_deg,
            p.while_walking,
            self._max_interval_s,
            _KERNEL_CODES,
        )
        self._args, self._args_devices = args, devices
        return args

    def _clear(
        self, flexion_deg: FloatArray, lateral_abs_deg: FloatArray, resetting: BoolArray
    ) -> BoolArray:
        p = self.params
        inside = (flexion_deg < p.threshold_deg - p.hysteresis_deg) & (
            lateral_abs_deg < p.lateral_threshold_deg - p.hysteresis_deg
        )
        return inside | np.isnan(flexion_deg) | resetting

    def _steps(
        self,
        devices: NDArray[np.intp],
        t_s: FloatArray,
        may_start: BoolArray,
        clear: BoolArray,
        counting: BoolArray,
        out: BoolArray,
    ) -> list[SlouchTransition]:
        """:meth:`_loop` for many devices at once: one array step per sample,
        the same decisions and the same arithmetic (so the same numbers)."""
        st = self.state
        dwell_s = self.params.dwell_s[devices] - 1e-9
        slouching = st.slouching[devices]
        timing = st.timing[devices]
        count_s = st.count_s[devices]
        started_t_s = st.started_t_s[devices]
        last = st.last_t_s[devices]
        t_all, start_all = t_s[:, devices], may_start[:, devices]
        clear_all, counting_all = clear[:, devices], counting[:, devices]
        transitions: list[SlouchTransition] = []
        for i in range(t_all.shape[0]):
            t = t_all[i]
            interval = t - last
            last = t
            is_clear = clear_all[i]
            idle = ~slouching
            end = slouching & is_clear
            reset = idle & is_clear
            active = idle & ~is_clear & counting_all[i]
            first = active & ~timing
            grow = active & timing & (interval > 0.0) & (interval <= self._max_interval_s)
            timing[reset | end] = False
            count_s[reset | end | first] = 0.0
            timing[first] = True
            count_s[grow] += interval[grow]
            begin = active & start_all[i] & (count_s >= dwell_s)
            for j in np.flatnonzero(end).tolist():
                d = int(devices[j])
                duration = round(float(t[j]) - float(started_t_s[j]), 6)
                transitions.append(SlouchTransition(i, False, duration, device=d))
            for j in np.flatnonzero(begin).tolist():
                transitions.append(
                    SlouchTransition(i, True, round(float(count_s[j]), 6), device=int(devices[j]))
                )
            slouching[end] = False
            slouching[begin] = True
            started_t_s[begin] = t[begin]
            out[i, devices] = slouching
        st.slouching[devices] = slouching
        st.timing[devices] = timing
        st.count_s[devices] = count_s
        st.started_t_s[devices] = started_t_s
        return transitions

    def _loop(
        self,
        d: int,
        t_s: FloatArray,
        may_start: BoolArray,
        clear: BoolArray,
        counting: BoolArray,
        out: BoolArray,
    ) -> list[SlouchTransition]:
        st = self.state
        dwell_s = float(self.params.dwell_s[d])
        slouching = bool(st.slouching[d])
        timing = bool(st.timing[d])
        count_s = float(st.count_s[d])
        started_t_s = float(st.started_t_s[d])
        transitions: list[SlouchTransition] = []
        last = float(st.last_t_s[d])
        for i, (t, can_start, is_clear, is_counting) in enumerate(
            zip(t_s.tolist(), may_start.tolist(), clear.tolist(), counting.tolist(), strict=True)
        ):
            interval = t - last
            last = t
            if slouching:
                if is_clear:
                    slouching = False
                    timing = False
                    count_s = 0.0
                    transitions.append(
                        SlouchTransition(i, False, round(t - started_t_s, 6), device=d)
                    )
                out[i] = slouching
                continue
            if is_clear:
                timing = False
                count_s = 0.0
                continue
            if not is_counting:
                continue  # paused
            if not timing:
                # The first sample beyond starts the clock at zero.
                timing = True
                count_s = 0.0
            elif 0.0 < interval <= self._max_interval_s:
                count_s += interval
            if can_start and count_s >= dwell_s - 1e-9:
                slouching = True
                started_t_s = t
                # Rounded to the microsecond: a sum of intervals is not exact.
                transitions.append(SlouchTransition(i, True, round(count_s, 6), device=d))
                out[i] = True
        st.slouching[d] = slouching
        st.timing[d] = timing
        st.count_s[d] = count_s
        st.started_t_s[d] = started_t_s
        return transitions


# The state and rule the kernel reads and updates in place (made C-contiguous first).
_STATE_FIELDS = ("slouching", "count_s", "timing", "started_t_s", "last_t_s")
_PARAM_FIELDS = (
    "threshold_deg",
    "hysteresis_deg",
    "dwell_s",
    "lateral_threshold_deg",
    "while_walking",
)
_KERNEL_CODES = np.array([_UPRIGHT, _MOVING, _WALKING, _LYING], dtype=np.int8)

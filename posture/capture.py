"""Finding the upright pose of many wearables: the rules of :mod:`posture.calibration`.

:class:`CalibrationCapture` keeps, per device (in a :class:`CaptureState`),
a stage (:class:`Stage`), the current still run, the last still pose with a
vertical back and the walking bout in progress, and turns each block's
samples into :class:`Capture` records. The per-sample tests are array
operations over all devices; the few devices where something may happen are
then resolved in time order one by one, so a device's captures depend
neither on the other devices nor on where its stream is cut into blocks.
Nothing runs for a device once it is confirmed and no request is pending.

``kernel`` picks the implementation (:func:`posture.kernels.selected_kernel`).
Compiled, one call (:func:`posture.kernels.capture.capture_block`) does the
whole block, captures included, and hands back a record of each capture
(device, sample, kind, up); only the :class:`Capture` objects are built
here (:meth:`CalibrationCapture._record`, shared with the reference). This
NumPy code is the reference it is tested against. Both sum every dot
product and norm in one order (x, then y, then z), never by BLAS, whose
order and fused multiply-adds vary by build: the captures and the state are
identical, not just close.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from posture.calibration import MIN_FORWARD_NORM, Calibration, CalibrationSettings
from posture.kernels import Kernel, contiguous_fields, selected_kernel
from posture.rotation import dot_tcd
from posture.runs import last_true, run_length

__all__ = ["CalibrationCapture", "Capture", "CaptureState", "Stage"]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]

# |pose·z| below this leaves "forward" defined (Calibration.from_up).
_MAX_FORWARD_Z = math.sqrt(1.0 - MIN_FORWARD_NORM**2)


class Stage(enum.IntEnum):
    """Where a device stands in the calibration rules."""

    WAITING = 0  # automatic calibration pending, nothing captured
    PROVISIONAL = 1  # calibrated from walking; waiting for a still upright
    CONFIRMED = 2  # calibrated (still upright, refined, requested or restored)
    OFF = 3  # automatic calibration off and nothing captured yet


class _Kind(enum.IntEnum):
    """Capture kinds; the value breaks ties at the same sample (lower first)."""

    REQUESTED = 0
    STILL = 1
    GAIT = 2
    REFINED = 3


# The kinds by value (0, 1, 2, 3): an index instead of the enum's call.
_KINDS = tuple(_Kind)


@dataclass(frozen=True)
class Capture:
    """A calibration of ``device`` in use from sample ``index`` of the block on.

    ``still_s`` and ``gait_s`` say what it was measured on (seconds of still
    pose and of walking); ``refined`` that it replaced a provisional one.
    """

    device: int
    index: int
    calibration: Calibration
    tilt_from_nominal_deg: float
    still_s: float
    gait_s: float
    refined: bool


@dataclass(slots=True)
class CaptureState:
    """What :class:`CalibrationCapture` carries between blocks, one column per
    device (:mod:`posture.state`).

    ``stage`` (D,) a :class:`Stage`; ``requested`` (D,) a request is pending;
    ``provisional_up`` (3, D) the up of the calibration in use; ``still_run``
    (D,) samples of the current quiet run; ``bout_run`` (D,) samples of the
    walking bout in progress, ``bout_sum`` (3, D) its accelerometer sum and
    ``bout_start_t`` (D,) its start; ``last_still_t`` (D,) and
    ``last_still_up`` (3, D) the last still upright pose of a waiting device.
    """

    stage: NDArray[np.int8]
    requested: BoolArray
    provisional_up: FloatArray
    still_run: IntArray
    bout_run: IntArray
    bout_sum: FloatArray
    bout_start_t: FloatArray
    last_still_t: FloatArray
    last_still_up: FloatArray

    @classmethod
    def fresh(cls, devices: int, auto: bool) -> CaptureState:
        return cls(
            stage=np.full(devices, Stage.WAITING if auto else Stage.OFF, dtype=np.int8),
            requested=np.zeros(devices, dtype=bool),
            provisional_up=np.zeros((3, devices)),
            still_run=np.zeros(devices, dtype=np.int64),
            bout_run=np.zeros(devices, dtype=np.int64),
            bout_sum=np.zeros((3, devices)),
            bout_start_t=np.full(devices, math.nan),
            last_still_t=np.full(devices, math.nan),
            last_still_up=np.zeros((3, devices)),
        )


@dataclass
class _Block:
    """One block's per-sample inputs: (n, D) and (n, 3, D)."""

    t: FloatArray
    acc: FloatArray
    pose: FloatArray  # unit direction of the low-passed accelerometer
    still: BoolArray  # still for still_s (any pose)
    upright_still: BoolArray  # ... with the back vertical
    walking: BoolArray  # walking, for devices still waiting
    gait: BoolArray
    bout: IntArray  # length of the walking run


class CalibrationCapture:
    """Calibration rules for ``devices`` wearables of one rate (module docstring).

    Args:
        settings: thresholds.
        sample_rate_hz: nominal rate; durations become sample counts.
        nominal_up_sensor: up of an upright wearer in the nominal mounting.
        auto: whether automatic calibration is on (else only requests).
        devices: number of devices side by side.
        kernel: the per-sample runs in NumPy (the reference) or compiled
            (:mod:`posture.kernels.capture`); None:
            :func:`posture.kernels.selected_kernel`.
    """

    def __init__(
        self,
        settings: CalibrationSettings,
        sample_rate_hz: float,
        nominal_up_sensor: tuple[float, float, float],
        *,
        auto: bool,
        devices: int = 1,
        kernel: Kernel | str | None = None,
    ) -> None:
        s = self.settings = settings
        self.kernel = selected_kernel(kernel)
        self.sample_rate_hz = sample_rate_hz
        self._still_samples = max(2, round(s.still_s * sample_rate_hz))
        self._gait_samples = max(2, round(s.gait_s * sample_rate_hz))
        nominal = np.asarray(nominal_up_sensor, dtype=np.float64)
        self._nominal_up = nominal / np.linalg.norm(nominal)
        self._cos_auto = math.cos(math.radians(s.max_auto_tilt_deg))
        self._sin_face = math.sin(math.radians(s.max_face_tilt_deg))
        self._cos_refine = math.cos(math.radians(s.max_refine_deg))
        self._acc_lo2 = (1.0 - s.gravity_tolerance_g) ** 2
        self._acc_hi2 = (1.0 + s.gravity_tolerance_g) ** 2
        self.auto = auto
        if self.kernel is Kernel.COMPILED:
            from posture.kernels import capture

            self._kernels = capture
        # What the compiled kernel takes, in its order.
        self._limits = np.array(
            [
                s.still_acc_g**2,
                self._acc_lo2,
                self._acc_hi2,
                s.still_gyr_dps**2,
                self._sin_face,
                self._cos_auto,
                self._cos_refine,
                s.pre_walk_gap_s,
                _MAX_FORWARD_Z,
            ]
        )
        self._counts = np.array([self._still_samples, self._gait_samples], dtype=np.int64)
        # The compiled kernel's capture records (_process_compiled).
        self._records = (np.empty((0, 5), dtype=np.int64), np.empty((0, 3)))
        self.state = self.fresh_state(devices)

    @property
    def state(self) -> CaptureState:
        """What the capture remembers per device; the engine may swap it between
        blocks. Its arrays are updated in place: a field replaced by another
        array takes effect once the state is assigned here again (the compiled
        kernel's arguments are made from the state bound)."""
        return self._state

    @state.setter
    def state(self, state: CaptureState) -> None:
        self._state = state
        self._args: tuple[object, ...] = ()
        self._args_devices = -1

    def fresh_state(self, devices: int) -> CaptureState:
        """The state of ``devices`` wearables never seen."""
        return CaptureState.fresh(devices, self.auto)

    # -- control -------------------------------------------------------------

    def pending(self) -> BoolArray:
        """(D,) whether a device may still capture something."""
        return self.state.requested | (self.state.stage <= Stage.PROVISIONAL)

    def request(self, device: int) -> None:
        """Capture at the next still period of ``device`` (all its samples later)."""
        self.state.requested[device] = True
        self.state.still_run[device] = 0

    def restore(self, device: int, calibration: Calibration) -> None:
        """A stored calibration is in use; a provisional one still waits for refinement."""
        self.state.stage[device] = Stage.PROVISIONAL if calibration.provisional else Stage.CONFIRMED
        self.state.provisional_up[:, device] = calibration.up_sensor

    def reset(self, devices: IntArray) -> None:
        """A gap or clock reset: still periods and walking bouts start again."""
        self.state.still_run[devices] = 0
        self.state.bout_run[devices] = 0
        self.state.bout_sum[:, devices] = 0.0
        self.state.bout_start_t[devices] = math.nan
        self.state.last_still_t[devices] = math.nan

    # -- per block -------------------------------------------------------------

    def process(
        self,
        t_s: FloatArray,
        acc_g: FloatArray,
        gyr_dps: FloatArray | None,
        acc_lp_g: FloatArray,
        acc_dev2_g2: FloatArray,
        walking: BoolArray,
        gait: BoolArray,
    ) -> list[Capture]:
        """Captures in one gap-free block of every device, in time order per device.

        Args:
            t_s: (n, D) sample times.
            acc_g: (n, 3, D) accelerometer in g.
            gyr_dps: (n, 3, D) gyroscope in °/s or None.
            acc_lp_g: (n, 3, D) low-passed accelerometer (gravity filter's rest low-pass).
            acc_dev2_g2: (n, D) squared distance of ``acc_g`` from ``acc_lp_g``.
            walking: (n, D) gait detected; gait: (n, D) gait criteria hold now.
        """
        if self.kernel is Kernel.COMPILED:
            return self._process_compiled(t_s, acc_g, gyr_dps, acc_lp_g, acc_dev2_g2, walking, gait)
        return self._process_numpy(t_s, acc_g, gyr_dps, acc_lp_g, acc_dev2_g2, walking, gait)

    def _process_numpy(
        self,
        t_s: FloatArray,
        acc_g: FloatArray,
        gyr_dps: FloatArray | None,
        acc_lp_g: FloatArray,
        acc_dev2_g2: FloatArray,
        walking: BoolArray,
        gait: BoolArray,
        carry: bool | None = None,
    ) -> list[Capture]:
        """:meth:`process` in NumPy (the reference). ``carry``: whether the
        walking bouts and still poses are carried (None: when a device of
        the block waits; the compiled path passes whether one of the whole
        block does, for the part of it it hands over)."""
        pending = self.pending()
        if not pending.any():
            return []
        waiting = self.state.stage == Stage.WAITING
        any_waiting = bool(waiting.any())
        run, bout = self._runs(acc_g, gyr_dps, acc_dev2_g2, walking, waiting, any_waiting)
        self.state.still_run = run[-1].copy()
        still = run >= self._still_samples
        any_still = bool(still.any())
        if any_waiting:
            walking = walking & waiting
            checks = self._gait_checks(bout) & gait
            any_gait = bool(checks.any())
        else:
            checks = np.zeros(walking.shape, dtype=bool)
            any_gait = False
        if any_still:
            pose = acc_lp_g / np.sqrt(dot_tcd(acc_lp_g, acc_lp_g))[:, None]
            upright_still = still & (np.abs(pose[:, 2]) <= self._sin_face)
        else:
            pose, upright_still = acc_lp_g, still  # pose is never read then
        b = _Block(t_s, acc_g, pose, still, upright_still, walking, gait, bout)
        captures: list[Capture] = []
        if any_still or any_gait:
            found = checks.any(axis=0) if any_gait else np.zeros(self.state.stage.size, dtype=bool)
            if any_still:
                found |= self._still_candidates(b)
            for d in np.flatnonzero(found & pending).tolist():
                captures += self._resolve(b, d)
        if any_waiting if carry is None else carry:
            self._carry(b, waiting)
        return captures

    def _process_compiled(
        self,
        t_s: FloatArray,
        acc_g: FloatArray,
        gyr_dps: FloatArray | None,
        acc_lp_g: FloatArray,
        acc_dev2_g2: FloatArray,
        walking: BoolArray,
        gait: BoolArray,
    ) -> list[Capture]:
        """:meth:`process` by the compiled kernel (:mod:`posture.kernels.capture`):
        every device, the captures resolved in the kernel; the records become
        :class:`Capture` objects here."""
        n, _, d = acc_g.shape
        if not (
            t_s.shape == acc_dev2_g2.shape == walking.shape == gait.shape == (n, d)
            and acc_lp_g.shape == acc_g.shape
            and (gyr_dps is None or gyr_dps.shape == acc_g.shape)
        ):
            # The kernel indexes without bounds checks: never run it on a mismatch.
            raise ValueError(f"capture block {acc_g.shape} with mismatched inputs")
        args = self._args if self._args_devices == d else self._bound_args(d)
        record_int = self._records[0]
        found = self._kernels.capture_block(
            np.ascontiguousarray(t_s),
            np.ascontiguousarray(acc_g),
            _NO_GYRO if gyr_dps is None else np.ascontiguousarray(gyr_dps),
            gyr_dps is not None,
            np.ascontiguousarray(acc_lp_g),
            np.ascontiguousarray(acc_dev2_g2),
            np.ascontiguousarray(walking),
            np.ascontiguousarray(gait),
            *args,
        )
        if found <= 0:
            return []
        if found > record_int.shape[0]:  # pragma: no cover - see record_int
            raise RuntimeError(f"{found} captures in a block of {d} devices")
        out = []
        for (dev, j, kind, bout, retro), up in zip(
            record_int[:found].tolist(), self._records[1][:found], strict=True
        ):
            out.append(self._record(dev, j, _KINDS[kind], up, float(t_s[j, dev]), bout, retro))
        return out

    def _bound_args(self, devices: int) -> tuple[object, ...]:
        """The kernel's arguments after the block's: the bound state (its arrays
        made C-contiguous once, as the kernel updates them in place), the
        limits and the capture records, for blocks of ``devices`` devices; kept
        while blocks of as many devices come.

        Raises:
            ValueError: the state is not of ``devices`` devices.
        """
        st, d = self._state, devices
        contiguous_fields(st, _STATE_FIELDS)
        if any(
            getattr(st, name).shape != ((3, d) if name in _VECTORS else (d,))
            for name in _STATE_FIELDS
        ):
            # The kernel indexes without bounds checks: never run it on a mismatch.
            raise ValueError(
                f"capture state of {st.still_run.shape} devices for a block of {d} devices"
            )
        # Three rows a device: its captures in a block are at most a gait,
        # its refinement and a request. Kept from block to block (the kernel
        # writes only the rows it returns).
        if self._records[0].shape[0] != 3 * d:
            self._records = (
                np.empty((3 * d, len(self._kernels.RECORD_FIELDS)), dtype=np.int64),
                np.empty((3 * d, 3)),
            )
        args = (
            st.stage,
            st.requested,
            st.provisional_up,
            self._nominal_up,
            self._limits,
            self._counts,
            st.still_run,
            st.bout_run,
            st.bout_sum,
            st.bout_start_t,
            st.last_still_t,
            st.last_still_up,
            *self._records,
        )
        self._args, self._args_devices = args, d
        return args

    def _runs(
        self,
        acc_g: FloatArray,
        gyr_dps: FloatArray | None,
        acc_dev2_g2: FloatArray,
        walking: BoolArray,
        waiting: BoolArray,
        any_waiting: bool,
    ) -> tuple[IntArray, IntArray]:
        """(n, D) the quiet run and the walking bout (of waiting devices) at
        each sample (NumPy, the reference)."""
        s = self.settings
        mag2 = dot_tcd(acc_g, acc_g)
        quiet = acc_dev2_g2 < s.still_acc_g**2
        quiet &= mag2 > self._acc_lo2
        quiet &= mag2 < self._acc_hi2
        if gyr_dps is not None:
            quiet &= dot_tcd(gyr_dps, gyr_dps) < s.still_gyr_dps**2
        run = run_length(quiet, self.state.still_run)
        if not any_waiting:
            # Only waiting devices follow walking bouts (and none can wait again).
            return run, np.zeros(walking.shape, dtype=np.int64)
        return run, run_length(walking & waiting, self.state.bout_run)

    def _still_candidates(self, b: _Block) -> BoolArray:
        """(D,) devices with a still sample where a capture may happen (a superset)."""
        stage = self.state.stage
        found = self.state.requested & b.still.any(axis=0)
        waiting = stage == Stage.WAITING
        if waiting.any():
            near = dot_tcd(b.pose, self._nominal_up[None, :, None]) >= self._cos_auto
            found |= (b.upright_still & near).any(axis=0) & waiting
        provisional = stage == Stage.PROVISIONAL
        if provisional.any():
            near = dot_tcd(b.pose, self.state.provisional_up[None]) >= self._cos_refine
            found |= (b.upright_still & near).any(axis=0) & provisional
        return found

    def _resolve(self, b: _Block, d: int) -> list[Capture]:
        """Apply device ``d``'s captures in this block in time order."""
        out: list[Capture] = []
        pose = b.pose[:, :, d]
        pos = 0
        while True:
            options: list[tuple[int, _Kind]] = []
            if self.state.requested[d]:
                ok = b.still[pos:, d] & (np.abs(pose[pos:, 2]) < _MAX_FORWARD_Z)
                options.append((_first(ok, pos), _Kind.REQUESTED))
            stage = self.state.stage[d]
            if stage == Stage.WAITING:
                near = _dot(pose[pos:], self._nominal_up) >= self._cos_auto
                options.append((_first(b.upright_still[pos:, d] & near, pos), _Kind.STILL))
                options.append((self._first_gait(b, d, pos), _Kind.GAIT))
            elif stage == Stage.PROVISIONAL:
                near = _dot(pose[pos:], self.state.provisional_up[:, d]) >= self._cos_refine
                options.append((_first(b.upright_still[pos:, d] & near, pos), _Kind.REFINED))
            options = [o for o in options if o[0] >= 0]
            if not options:
                return out
            j, kind = min(options)
            out.append(self._capture(b, d, j, kind))
            pos = j + 1

    def _gait_checks(self, bout: IntArray) -> BoolArray:
        """(n, D) samples where a walking bout's mean is looked at: when the
        bout reaches ``gait_s`` and every ``gait_s`` after."""
        g = self._gait_samples
        return (bout >= g) & (bout % g == 0)

    def _first_gait(self, b: _Block, d: int, pos: int) -> int:
        """First sample >= pos where the walking bout is checked, the gait
        criteria hold and the bout's mean direction has a vertical back, or -1."""
        checks = self._gait_checks(b.bout[pos:, d]) & b.gait[pos:, d]
        ready = np.flatnonzero(checks) + pos
        if ready.size == 0:
            return -1
        mean = self._bout_sums(b, np.full(ready.size, d), ready)
        norm = np.sqrt(mean[:, 0] ** 2 + mean[:, 1] ** 2 + mean[:, 2] ** 2)
        ok = np.abs(mean[:, 2]) <= self._sin_face * norm
        return int(ready[np.argmax(ok)]) if ok.any() else -1

    def _bout_sums(self, b: _Block, devices: IntArray, at: IntArray) -> FloatArray:
        """Sum (k, 3) of the accelerometer over the walking bout of ``devices[i]``
        that ends at sample ``at[i]``."""
        k = np.arange(devices.size)
        csum = np.cumsum(b.acc[:, :, devices] * b.walking[:, None, devices], axis=0)
        run = b.bout[at, devices]
        start = at - run  # the sample before the bout; < 0 if it began earlier
        sums = csum[at, :, k] - np.where(
            (start >= 0)[:, None], csum[np.maximum(start, 0), :, k], 0.0
        )
        # The bout began in an earlier block: run covers more than samples
        # 0..at (a bout that began at sample 0 has run == at + 1, and the
        # carried sum is then an older bout's).
        began_before = run > at + 1
        sums[began_before] += self.state.bout_sum[:, devices[began_before]].T
        return sums

    def _capture(self, b: _Block, d: int, j: int, kind: _Kind) -> Capture:
        bout, retro = 0, False
        if kind is _Kind.GAIT:
            up = self._bout_sums(b, np.array([d]), np.array([j]))[0]
            bout = int(b.bout[j, d])
            still_up = self._preceding_still(b, d, j, up)
            if still_up is not None:
                up, retro = still_up, True
        else:
            up = b.pose[j, :, d].copy()
        c = self._record(d, j, kind, up, float(b.t[j, d]), bout, retro)
        if kind is _Kind.REQUESTED:
            self.state.requested[d] = False
        self.state.stage[d] = Stage.PROVISIONAL if c.calibration.provisional else Stage.CONFIRMED
        self.state.provisional_up[:, d] = c.calibration.up_sensor
        return c

    def _record(
        self, d: int, j: int, kind: _Kind, up: FloatArray, t_s: float, bout: int, retro: bool
    ) -> Capture:
        """The capture of ``kind`` at sample ``j`` of device ``d`` from ``up``
        (a still pose, or a walking bout's sum over ``bout`` samples, or with
        ``retro`` the still pose just before that bout)."""
        s = self.settings
        provisional = kind is _Kind.GAIT and not retro
        # Every candidate pose has a defined forward (back within 50-60° of
        # vertical; CalibrationSettings checks the limit), so this cannot fail.
        cal = Calibration.from_up(
            up, t_s=t_s, requested=kind is _Kind.REQUESTED, provisional=provisional
        )
        u, nominal = cal.up_sensor, self._nominal_up
        cos = float((u[0] * nominal[0] + u[1] * nominal[1]) + u[2] * nominal[2])
        return Capture(
            device=d,
            index=j,
            calibration=cal,
            tilt_from_nominal_deg=math.degrees(math.acos(max(-1.0, min(1.0, cos)))),
            still_s=0.0 if provisional else s.still_s,
            gait_s=bout / self.sample_rate_hz if kind is _Kind.GAIT else 0.0,
            refined=kind is _Kind.REFINED,
        )

    def _preceding_still(self, b: _Block, d: int, j: int, gait_up: FloatArray) -> FloatArray | None:
        """The still upright pose that ended just before the walking bout
        ending at ``j``, if it agrees with the gait direction."""
        start = j - int(b.bout[j, d]) + 1
        start_t = float(b.t[start, d]) if start >= 0 else float(self.state.bout_start_t[d])
        before = np.flatnonzero(b.upright_still[: max(start, 0), d])
        if before.size:
            still_t, still_up = float(b.t[before[-1], d]), b.pose[before[-1], :, d].copy()
        else:
            still_t, still_up = (
                float(self.state.last_still_t[d]),
                self.state.last_still_up[:, d].copy(),
            )
        if not (
            math.isfinite(still_t) and 0.0 <= start_t - still_t <= self.settings.pre_walk_gap_s
        ):
            return None
        # Summed in the compiled kernel's order (not BLAS's), so both decide alike.
        g0, g1, g2 = (float(x) for x in gait_up)
        s0, s1, s2 = (float(x) for x in still_up)
        norm = math.sqrt((g0 * g0 + g1 * g1) + g2 * g2)
        cos = ((s0 * g0 + s1 * g1) + s2 * g2) / max(norm, 1e-12)
        return still_up if cos >= self._cos_refine else None

    def _carry(self, b: _Block, waiting: BoolArray) -> None:
        """Carry the walking bout and the last still upright pose to the next block."""
        n = b.t.shape[0]
        bout_end = b.bout[-1]
        walking_end = (bout_end > 0) & waiting
        if walking_end.any():
            devs = np.flatnonzero(walking_end)
            self.state.bout_sum[:, devs] = self._bout_sums(b, devs, np.full(devs.size, n - 1)).T
            fresh = devs[bout_end[devs] <= n]
            self.state.bout_start_t[fresh] = b.t[n - bout_end[fresh], fresh]
        self.state.bout_run = np.where(waiting, bout_end, 0)
        if not b.upright_still.any():
            return
        last = last_true(b.upright_still)
        # Only a waiting device reads its last still pose (a walk's capture
        # confirmed by the still upright before it); no other carries one.
        seen = np.flatnonzero((last >= 0) & waiting)
        if seen.size:
            self.state.last_still_t[seen] = b.t[last[seen], seen]
            self.state.last_still_up[:, seen] = b.pose[last[seen], :, seen].T


def _dot(rows: FloatArray, v: FloatArray) -> FloatArray:
    """(n,) dot products of rows (n, 3) with ``v`` (3,), summed as
    :func:`posture.rotation.dot_tcd` and the compiled kernel sum (a matrix
    product may round otherwise)."""
    return (rows[:, 0] * v[0] + rows[:, 1] * v[1]) + rows[:, 2] * v[2]


def _first(flags: BoolArray, offset: int) -> int:
    """Index of the first True in ``flags`` plus ``offset``, or -1."""
    i = int(np.argmax(flags)) if flags.size else 0
    return i + offset if flags.size and flags[i] else -1


# The gyroscope the compiled kernel is given when there is none.
_NO_GYRO = np.zeros((1, 3, 1))
# The state the compiled kernel reads and updates in place (made C-contiguous first).
_STATE_FIELDS = (
    "stage",
    "requested",
    "provisional_up",
    "still_run",
    "bout_run",
    "bout_sum",
    "bout_start_t",
    "last_still_t",
    "last_still_up",
)
# Its fields of shape (3, D); the others are (D,).
_VECTORS = frozenset({"provisional_up", "bout_sum", "last_still_up"})

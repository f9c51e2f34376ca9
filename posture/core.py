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

State: the components hold their parameters; what they remember per device
is one :class:`~posture.corestate.EngineState` (:mod:`posture.state`), kept
for ``capacity`` devices of which the first :attr:`EngineCore.devices` are
in use (the rest are fresh, so devices are added at amortised cost). A
block of a subset of the devices runs on a :func:`~posture.state.take` of
their columns, bound to the components for the call and
:func:`~posture.state.put` back after; the other devices are untouched.
The fall detector's state (:class:`~posture.falls.history.FallState`, the
largest: a ring of recent samples) follows the same protocol but is kept
beside, at the same capacity: a subset's columns are updated in place
(:meth:`~posture.falls.FallStage.process` with the devices' indices)
instead of being copied out and back every call.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from posture import state as st
from posture.activity import ActivityClassifier
from posture.calibration import Calibration, TrunkAngles
from posture.capture import CalibrationCapture, Capture
from posture.config import EngineConfig
from posture.corestate import CoreState, EngineState
from posture.falls import FallFinding, FallStage
from posture.kernels import Kernel, selected_kernel
from posture.orientation import GravityFilter, GravityFilterParams
from posture.slouch import SlouchDetector, SlouchParams, SlouchState
from posture.steps import BlockSteps, block_steps
from posture.types import PostureEvent, PostureEventKind, SlouchSettings

__all__ = ["GAP_INTERVALS", "CoreBlock", "EngineCore"]

_log = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]
IndexArray = NDArray[np.intp]

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

    def __init__(
        self, config: EngineConfig, devices: int, kernel: Kernel | str | None = None
    ) -> None:
        self.config = config
        self.devices = devices
        """Devices in use (indices 0 .. devices-1)."""
        fs = float(config.sample_rate_hz)
        self.max_interval_s = GAP_INTERVALS / fs
        nominal = np.asarray(config.nominal_up_sensor, dtype=np.float64)
        self.nominal_up = nominal / np.linalg.norm(nominal)
        self._build(selected_kernel(kernel), devices)
        # Every device's state (capacity columns; the first `devices` in use)
        # and the state bound to the components (the store, or a part of it
        # during a call on a subset).
        self._store = self.fresh_state(devices)
        self._capacity = devices
        self.state = self._store
        self._bind(self._store)

    def _build(self, kernel: Kernel, devices: int) -> None:
        """The components, computing with ``kernel``, with fresh state for
        ``devices`` devices (the engine binds its own state to them)."""
        config, fs = self.config, float(self.config.sample_rate_hz)
        self.kernel = kernel
        """Which implementation every component computes with."""
        o = config.orientation
        params = GravityFilterParams(
            sample_rate_hz=fs,
            has_gyro=config.has_gyro,
            tau_acc_s=o.tau_acc_s,
            acc_only_cutoff_hz=min(o.acc_only_cutoff_hz, 0.35 * fs),
            gyr_delay_s=o.gyr_delay_s,
        )
        self.gravity = GravityFilter(params, devices, kernel)
        self.capture = CalibrationCapture(
            config.calibration,
            fs,
            config.nominal_up_sensor,
            auto=config.auto_calibrate,
            devices=devices,
            kernel=kernel,
        )
        self.activity = ActivityClassifier(config.activity, fs, config.has_gyro, devices, kernel)
        self.slouch = SlouchDetector(config.slouch, self.max_interval_s, devices, kernel)
        self.angles = TrunkAngles(kernel)
        # Until calibrated, the nominal upright is unmeasured: the fall
        # detector then judges an impact whose trunk was far from it against
        # the trunk's direction before the impact.
        self.falls = FallStage(config.fall, fs, devices, self.nominal_up, kernel=kernel)

    @property
    def steps_kernel(self) -> Kernel:
        """Which implementation computes a block's :func:`~posture.steps.block_steps`."""
        return self.kernel

    def use_kernel(self, kernel: Kernel | str) -> Kernel:
        """Compute with ``kernel`` from the next block on; returns the one in
        use (compiled falls back to NumPy where numba does not import).

        Every device carries on where it was: the state is the same for both
        implementations (each kernel is tested against the NumPy reference
        on it), so the components are rebuilt for the other implementation
        and bound to the same state. A gateway starts on NumPy while the
        kernels compile and moves over once they are ready.
        """
        chosen = selected_kernel(kernel)
        if chosen is not self.kernel:
            falls, runs = self.falls.state, self.falls.device_runs
            self._build(chosen, 0)
            self.falls.state, self.falls.device_runs = falls, runs
            self._bind(self._store)
        return chosen

    # -- state ---------------------------------------------------------------

    def fresh_state(self, devices: int) -> EngineState:
        """The state of ``devices`` wearables never seen (slouch rule: the config's)."""
        return EngineState(
            gravity=self.gravity.fresh_state(devices),
            activity=self.activity.fresh_state(devices),
            capture=self.capture.fresh_state(devices),
            slouch=SlouchState.fresh(devices),
            slouch_params=SlouchParams.fresh(devices, self.config.slouch),
            core=CoreState.fresh(devices),
        )

    @property
    def capacity(self) -> int:
        """Devices the stored state has room for (>= :attr:`devices`)."""
        return self._capacity

    @property
    def slouch_params(self) -> SlouchParams:
        """Every device's slouch rule (capacity columns); read it, do not keep it."""
        return self._store.slouch_params

    @property
    def stored(self) -> CoreState:
        """The core's own state of every device (capacity columns), e.g. for
        counters and calibrations; read it, do not keep it (it is replaced
        when devices are added)."""
        return self._store.core

    def _bind(self, state: EngineState) -> None:
        self.state = state
        self.gravity.state = state.gravity
        self.activity.state = state.activity
        self.capture.state = state.capture
        self.slouch.state = state.slouch
        self.slouch.params = state.slouch_params

    def add_device(self, slouch: SlouchSettings | None = None) -> int:
        """A new device (fresh state, ``slouch`` or the config's rule); its index.

        The stored state doubles its capacity when full, so adding devices
        one by one costs amortised O(1) array copies each.
        """
        device = self.devices
        capacity = self.capacity
        if device == capacity:
            self._store = st.grow(self._store, self.fresh_state(max(capacity, 1)))
            self._capacity = st.device_count(self._store)
            self._bind(self._store)
            falls = self.falls
            falls.state = st.grow(falls.state, falls.fresh_state(max(capacity, 1)))
        self.devices += 1
        if slouch is not None:
            self._store.slouch_params.set(device, slouch)
        return device

    def reset_device(self, device: int, slouch: SlouchSettings | None = None) -> None:
        """Device ``device`` starts over as if new (a different wearable or patient)."""
        st.put(self._store, np.array([device]), self.fresh_state(1))
        if slouch is not None:
            self._store.slouch_params.set(device, slouch)
        st.put(self.falls.state, np.array([device]), self.falls.fresh_state(1))

    def set_slouch_settings(self, device: int, slouch: SlouchSettings) -> None:
        """Device ``device`` uses ``slouch`` from its next sample on."""
        self._store.slouch_params.set(device, slouch)

    def count_empty_block(self, devices: IndexArray | None = None) -> None:
        """An empty block of ``devices`` (all in use if None): counted, nothing else."""
        blocks = self._store.core.blocks
        if devices is None:
            blocks[: self.devices] += 1
        else:
            blocks[devices] += 1

    # -- calibration control -----------------------------------------------

    def request_calibration(self, device: int) -> None:
        self.capture.request(device)

    def set_calibration(self, device: int, calibration: Calibration) -> None:
        self.capture.restore(device, calibration)
        self._use(device, calibration)
        up = np.asarray(calibration.up_sensor, dtype=np.float64)
        self.falls.set_reference_up(device, up / np.linalg.norm(up), calibrated=True)

    def _use(self, device: int, calibration: Calibration) -> None:
        """Angles of ``device`` (a column of the bound state) use
        ``calibration`` from now on (the fall detector's reference changes
        where its samples reach the capture)."""
        core = self.state.core
        core.calibrations[device] = calibration
        # Calibration.matrix's rows, without building (and caching) its array.
        core.matrix[:, :, device] = (
            calibration.forward_sensor,
            calibration.right_sensor,
            calibration.up_sensor,
        )
        core.calibrated[device] = True

    # -- processing ----------------------------------------------------------

    def process(
        self,
        t_s: FloatArray,
        acc_g: FloatArray,
        gyr_dps: FloatArray | None,
        devices: IndexArray | None = None,
        steps: BlockSteps | None = None,
        t_rows: FloatArray | None = None,
    ) -> CoreBlock:
        """Process one block of ``n >= 1`` samples of ``S`` devices.

        Args:
            t_s: (n, S) sample times; acc_g: (n, 3, S) in g; gyr_dps: (n, 3, S)
                in °/s or None. All finite; validated by the caller.
                C-contiguous saves the kernels a copy each.
            devices: (S,) indices of the devices, distinct, in use (None: all
                :attr:`devices`, in order). The others' state is untouched.
            steps: the block's :func:`~posture.steps.block_steps` if the
                caller has them already (from the devices' stored last
                sample times), else computed here.
            t_rows: ``t_s`` as a C-contiguous (S, n) array if the caller has
                one (the layout the fall stage reads; only read).

        Returns:
            Arrays (n, S) and events keyed by the position in ``devices``.
        """
        if t_rows is not None and t_rows.shape != t_s.shape[::-1]:
            raise ValueError(f"t_rows of shape {t_rows.shape} for t_s of shape {t_s.shape}")
        if devices is None:
            if self.devices == self._capacity:
                return self._process(t_s, acc_g, gyr_dps, None, steps, t_rows)
            devices = np.arange(self.devices)
        part = st.take(self._store, devices)
        self._bind(part)
        try:
            return self._process(t_s, acc_g, gyr_dps, devices, steps, t_rows)
        finally:
            st.put(self._store, devices, part)
            self._bind(self._store)

    def _process(
        self,
        t_s: FloatArray,
        acc_g: FloatArray,
        gyr_dps: FloatArray | None,
        ids: IndexArray | None,
        steps: BlockSteps | None,
        t_rows: FloatArray | None = None,
    ) -> CoreBlock:
        """The block on the bound state (its ``d`` columns); ``ids`` the
        devices' global indices (None: the same as the columns)."""
        n, d = t_s.shape
        core = self.state.core
        core.blocks += 1
        core.samples += n
        if steps is None:
            steps = block_steps(
                t_s, acc_g, gyr_dps, core.last_t_s, self.max_interval_s, self.steps_kernel
            )
        dt, breaks = steps.dt_s, steps.breaks
        if steps.break_count:
            self._count_breaks(dt, breaks, steps.fresh, ids)
            cuts = np.flatnonzero(breaks[1:].any(axis=1)) + 1
            bounds = [0, *cuts.tolist(), n]
        else:
            bounds = [0, n]

        captures: list[Capture] = []
        if len(bounds) == 2:  # the usual block: no gap inside
            up, flexion, lateral, activity, vigorous = self._segment(
                t_s, acc_g, gyr_dps, dt, breaks[0] if steps.break_count else None, 0, captures, ids
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
                    ids,
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
        # The fall stage reads the times device-major: the caller's copy so
        # laid out, if any, goes in (transposed, uncopied).
        t_falls = t_s if t_rows is None else t_rows.T
        self._falls(t_falls, acc_g, gyr_dps, up, captures, flexion, lateral, events, ids)
        core.last_t_s = t_s[-1].copy()
        last = core.last_angles = np.empty((2, d))
        last[0] = flexion[-1]
        last[1] = lateral[-1]
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
        breaks: BoolArray | None,
        offset: int,
        captures: list[Capture],
        ids: IndexArray | None,
    ) -> tuple[FloatArray, FloatArray, FloatArray, NDArray[np.int8], BoolArray]:
        """One gap-free stretch of every device (starting at sample ``offset``
        of the block); resets the devices that break at its first sample
        (``breaks`` (D,), None: none does)."""
        if breaks is not None and np.count_nonzero(breaks):
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
        for c in found:
            self._use(c.device, c.calibration)
            self._log_capture(c, c.device if ids is None else int(ids[c.device]))
            j, dev = c.index, c.device
            self.angles.redo_device(up, self.state.core.matrix, dev, j, flexion, lateral, incl)
            captures.append(replace(c, index=offset + j) if offset else c)
        activity = self.activity.classify(feats, incl)
        return up, flexion, lateral, activity, feats.vigorous

    # -- internals -----------------------------------------------------------

    def _angles(self, up: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Flexion, lateral (n, D) under the current calibrations (NaN without
        one) and the inclination from upright (n, D): calibrated, or the
        back's tilt from vertical before."""
        core = self.state.core
        return self.angles.of_devices(up, core.matrix, core.calibrated)

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
        ids: IndexArray | None,
    ) -> None:
        """The block through the fall detector; column ``dev`` of the block is
        device ``ids[dev]`` (``dev`` if None). A calibration captured in the
        block is the device's reference upright from its sample on."""
        references: dict[int, list[tuple[int, FloatArray]]] = {}
        for c in sorted(captures, key=lambda c: c.index):
            up_ref = np.asarray(c.calibration.up_sensor, dtype=np.float64)
            references.setdefault(c.device, []).append((c.index, up_ref))
        found = self.falls.process(t_s, acc_g, gyr_dps, up, ids, references)
        for dev, findings in found.items():
            for f in findings:
                events.setdefault(dev, []).append(
                    self._fall_event(dev, f, t_s[:, dev], flexion, lateral)
                )

    def _count_breaks(
        self, dt: FloatArray, breaks: BoolArray, fresh: BoolArray, ids: IndexArray | None
    ) -> None:
        core = self.state.core
        counted = breaks.copy()
        counted[0] &= ~fresh  # the first sample of a stream is no gap
        back = counted & (dt <= 0.0)
        core.clock_resets += back.sum(axis=0)
        core.gaps += (counted & ~back).sum(axis=0)
        for i, dev in zip(*np.nonzero(back), strict=True):
            _log.warning(
                "device %d: wearable clock went back by %.3f s; filters restart",
                dev if ids is None else ids[dev],
                -float(dt[i, dev]),
            )
        if _log.isEnabledFor(logging.DEBUG):
            for i, dev in zip(*np.nonzero(counted & ~back), strict=True):
                _log.debug(
                    "device %d: gap of %.3f s; filters restart",
                    dev if ids is None else ids[dev],
                    float(dt[i, dev]),
                )

    def _log_capture(self, c: Capture, device: int) -> None:
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
        _log.info("device %d: calibrated to upright at t=%.2f s (%s)", device, cal.t_s, how)

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
            last = self.state.core.last_angles
            angles = (float(last[0, dev]), float(last[1, dev]))
        kind = (
            PostureEventKind.FALL_DETECTED
            if f.kind == "detected"
            else PostureEventKind.FALL_CANCELLED
        )
        return i, 2, PostureEvent(kind, float(f.t_s), angles[0], angles[1], dict(f.details))

"""The fall detector of ``D`` wearables: one pass across devices, a per-device path for the rare.

:class:`FallStage` is what the engine runs (:mod:`posture.core`) and what
:class:`~posture.falls.FallDetector` wraps for one wearable. Per block, in
the engine's ``(n, 3, D)`` layout:

1. stage 0 for every device at once (:func:`~posture.falls.history.derive_rows`),
   appended to each device's ring (:class:`~posture.falls.history.FallState`);
2. the screen (:class:`~posture.falls.screen.PeakScreen`): the completed
   peaks of ``|a|`` of every device and whether any could open a candidate;
3. the per-device path (:class:`~posture.falls.device.DevicePath`) for the
   devices with such a peak, a pending candidate or an active fall; every
   other device only moves its peak cursor (any peak it had would have been
   dropped unopened) and stores a new reference upright of the block as its
   own (nothing else would have read it).

With the compiled kernel (:mod:`posture.kernels.falls`) steps 1 and 2 and
the cursor moves are two calls per piece (``fall_rows``, ``fall_screen``);
a piece in which no device needs step 3 ends there.

A block longer than ``chunk`` samples goes through in pieces (the ring holds
the history and one piece); the findings do not depend on how the stream
is split, so they are the same, at the same samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from posture.falls.device import DeviceFalls, DevicePath
from posture.falls.history import FallState, WorkRows, derive_rows
from posture.falls.impact import CandidateOpener
from posture.falls.judging import Judge
from posture.falls.model import FallModel, load_fall_model
from posture.falls.screen import PeakScreen
from posture.falls.types import FallCandidate, FallFinding, FallSettings
from posture.kernels import Kernel, c_array, contiguous_fields, selected_kernel

__all__ = ["FallStage", "ReferenceChange"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

_MAG = 3  # history column of |a|

ReferenceChange = tuple[int, FloatArray]
"""(index in the block, the calibrated upright (3,)): impacts from that
sample on are judged against it."""


class FallStage:
    """Fall detectors of ``devices`` wearables sharing one configuration.

    Args:
        settings: thresholds.
        sample_rate_hz: nominal rate of every stream; windows are in samples.
        devices: number of wearables.
        nominal_up: (3,) the mounting's unmeasured upright, used until a
            device is calibrated (:meth:`set_reference_up`).
        on_candidate: observer of every candidate once resolved (training,
            evaluation); every block then takes the per-device path.
        screen: False sends every device through the per-device path every
            block: the reference the screen is tested against.
        kernel: stage 0, the ring write, the screen and the cursor moves in
            NumPy (the reference) or compiled (:mod:`posture.kernels.falls`:
            two calls per piece); None: :func:`posture.kernels.selected_kernel`.

    Raises:
        ValueError: sample rate outside 10-2000 Hz.
        ConfigError: the model file cannot be loaded.
    """

    def __init__(
        self,
        settings: FallSettings,
        sample_rate_hz: float,
        devices: int,
        nominal_up: FloatArray,
        *,
        on_candidate: Callable[[FallCandidate], None] | None = None,
        screen: bool = True,
        kernel: Kernel | str | None = None,
    ) -> None:
        if not (math.isfinite(sample_rate_hz) and 10.0 <= sample_rate_hz <= 2000.0):
            raise ValueError(f"sample_rate_hz must be in 10..2000, got {sample_rate_hz!r}")
        s = self.settings = settings
        self.kernel = selected_kernel(kernel)
        fs = self.sample_rate_hz = float(sample_rate_hz)
        self.model: FallModel = load_fall_model(settings.model_path)
        p_min = settings.min_fall_probability
        self.p_min = self.model.threshold if p_min is None else p_min

        def n(seconds: float) -> int:
            return max(1, round(seconds * fs))

        n_still, n_soft, n_upright = n(s.still_window_s), n(s.soft_still_s), n(s.cancel_upright_s)
        opener = CandidateOpener(s, self.model, self.p_min, fs)
        judge = Judge(s, fs, n_still, n_soft)
        self._path = DevicePath(s, fs, opener, judge, self.p_min, on_candidate)
        self._screen = PeakScreen(opener, self.model, self.p_min)
        self._everyone = on_candidate is not None or not screen
        self._merge = opener.n_merge
        # float32 rows against the threshold rounded down to float32: never
        # fewer trigger samples than the float64 comparison finds.
        self._trigger = np.nextafter(np.float32(s.trigger_acc_g), np.float32(0.0))
        # Rows of history the per-device path reads before a block's first sample.
        self.history_len = 2 * self._merge + 2 + max(opener.reach, n_upright, n_still, n_soft)
        self.chunk = max(16, round(fs))
        """Longest piece of a block handled at once (the ring holds history + one)."""
        # The screen looks back further than the history with a short pre_window_s.
        self._ring_rows = max(self.history_len, self._merge + self._screen.back) + self.chunk
        nominal = np.asarray(nominal_up, dtype=np.float64)
        self._nominal = nominal / np.linalg.norm(nominal)
        if self.kernel is Kernel.COMPILED:
            from posture.kernels import falls

            self._kernels = falls
        self.state = self.fresh_state(devices)
        self.device_runs = 0
        """Device-pieces that took the per-device path (a statistic, for benches)."""
        # The compiled path's buffers, kept between blocks: the state's columns
        # in order, and which columns need the per-device path.
        self._all = np.zeros(0, dtype=np.int64)
        self._need = np.zeros(0, dtype=bool)

    def fresh_state(self, devices: int) -> FallState:
        """The state of ``devices`` new wearables (for :func:`posture.state.grow`)."""
        return FallState.fresh(devices, self._ring_rows, self._nominal)

    @property
    def state(self) -> FallState:
        """Every device's fall detector state; the engine may swap it between
        blocks. The arrays the compiled kernels update are updated in place: a
        field replaced by another array takes effect once the state is
        assigned here again (they are made C-contiguous when it is bound)."""
        return self._state

    @state.setter
    def state(self, state: FallState) -> None:
        self._state = state
        self._contiguous = False

    # -- per device ------------------------------------------------------------

    def set_reference_up(self, device: int, up_unit: FloatArray, *, calibrated: bool) -> None:
        """Judge ``device``'s impacts from now on against the unit upright ``up_unit`` (3,)."""
        self.state.ref_up[:, device] = up_unit
        self.state.ref_calibrated[device] = calibrated

    def fall_active(self, device: int) -> bool:
        return self.state.fallen[device] is not None

    def pending_candidates(self, device: int) -> tuple[FallCandidate, ...]:
        return tuple(self.state.pending[device] or ())

    # -- processing ------------------------------------------------------------

    def process(
        self,
        t_s: FloatArray,
        acc_g: FloatArray,
        gyr_dps: FloatArray | None,
        up_sensor: FloatArray,
        devices: IntArray | None = None,
        references: Mapping[int, Sequence[ReferenceChange]] | None = None,
    ) -> dict[int, list[FallFinding]]:
        """One block of ``n >= 1`` samples of ``devices`` (None: all).

        Args:
            t_s: (n, k); acc_g, up_sensor: (n, 3, k); gyr_dps: (n, 3, k) or
                None: the samples of the ``k`` devices processed (all finite
                but ``up_sensor``, NaN before the engine has an estimate).
            devices: (k,) which devices these columns are, in order.
            references: by column, reference changes inside the block in
                index order (calibrations captured by the engine).

        Returns:
            Findings by column (position in ``devices``) of the columns that
            have any, in time order.
        """
        st = self._state
        n = t_s.shape[0]
        found: dict[int, list[FallFinding]] = {}
        if self.kernel is Kernel.COMPILED:
            cols = self._every_device() if devices is None else np.asarray(devices)
            if n <= self.chunk:  # one piece (a gateway tick's block): no slices
                self._rows_compiled(t_s, acc_g, gyr_dps, up_sensor, cols, checked=devices is None)
                self._screen_compiled(cols, 0, n, references or {}, found)
                return found
            for a in range(0, n, self.chunk):
                b = min(n, a + self.chunk)
                g = None if gyr_dps is None else gyr_dps[a:b]
                self._rows_compiled(
                    t_s[a:b], acc_g[a:b], g, up_sensor[a:b], cols, checked=devices is None
                )
                self._screen_compiled(cols, a, b, references or {}, found)
            return found
        cols = np.arange(st.seen.size) if devices is None else np.asarray(devices)
        # All devices: slices, not gathers (one wearable's engine calls this every packet).
        sel: slice | IntArray = slice(None) if devices is None else cols
        for a in range(0, n, self.chunk):
            b = min(n, a + self.chunk)
            first = st.seen[sel].copy()
            g = None if gyr_dps is None else gyr_dps[a:b]
            self._rows(t_s[a:b], acc_g[a:b], g, up_sensor[a:b], cols, sel, first)
            self._chunk(cols, sel, first, a, b, references or {}, found)
        return found

    def _every_device(self) -> IntArray:
        """(D,) the state's columns in order (kept: made once, not every block)."""
        if self._all.size != self._state.seen.size:
            self._all = np.arange(self._state.seen.size, dtype=np.int64)
        return self._all

    def _rows(
        self,
        t_s: FloatArray,
        acc_g: FloatArray,
        gyr_dps: FloatArray | None,
        up_sensor: FloatArray,
        cols: IntArray,
        sel: slice | IntArray,
        first: IntArray,
    ) -> None:
        """Stage 0 of a piece, appended to the rings; the trigger cursor moved (NumPy)."""
        st = self.state
        rows = derive_rows(
            acc_g, up_sensor, gyr_dps, st.prev_gyr_dps[:, sel], self.settings.gyro_clip_min_dps
        )
        if gyr_dps is not None:
            st.prev_gyr_dps[:, sel] = gyr_dps[-1]
        st.write(rows, t_s, cols)
        hit = rows[:, _MAG] >= self._trigger
        if hit.any():
            at = t_s.shape[0] - 1 - np.argmax(hit[::-1], axis=0)
            st.last_trigger[sel] = np.where(hit.any(axis=0), first + at, st.last_trigger[sel])

    def _rows_compiled(
        self,
        t_s: FloatArray,
        acc_g: FloatArray,
        gyr_dps: FloatArray | None,
        up_sensor: FloatArray,
        cols: IntArray,
        *,
        checked: bool,
    ) -> None:
        """:meth:`_rows` by the compiled kernel: the same rows, bit for bit
        (``checked``: ``cols`` are the state's own columns). The engine's
        ``t_s`` is a transposed (D, n) array: its ``.T`` goes in uncopied."""
        st = self._state
        k = cols.size
        if acc_g.shape[2] != k or up_sensor.shape[2] != k or t_s.shape[1] != k:
            raise ValueError(f"a block of {acc_g.shape[2]} devices for {k} columns")
        if not checked and k and not (int(cols.min()) >= 0 and int(cols.max()) < st.seen.size):
            # The kernel indexes without bounds checks: never run it on a mismatch.
            raise ValueError(f"devices {cols!r} outside the state's {st.seen.size}")
        if not self._contiguous:
            self._contiguous_state()
        gyr = _EMPTY_GYRO if gyr_dps is None else np.ascontiguousarray(gyr_dps)
        self._kernels.fall_rows(
            np.ascontiguousarray(t_s.T),
            np.ascontiguousarray(acc_g),
            np.ascontiguousarray(up_sensor),
            gyr,
            gyr_dps is not None,
            cols if checked else np.ascontiguousarray(cols.astype(np.int64, copy=False)),
            float(self.settings.gyro_clip_min_dps),
            float(self._trigger),
            st.rows,
            st.t_s,
            st.seen,
            st.prev_gyr_dps,
            st.last_trigger,
        )

    def _contiguous_state(self) -> None:
        """The arrays the compiled kernels update in place, C-contiguous (state
        put together by :mod:`posture.state` may hold other layouts)."""
        st = self.state
        contiguous_fields(
            st, ("rows", "t_s", "seen", "peak_next", "last_trigger", "prev_gyr_dps", "busy")
        )
        self._contiguous = True

    def _chunk(
        self,
        cols: IntArray,
        sel: slice | IntArray,
        first: IntArray,
        a: int,
        b: int,
        references: Mapping[int, Sequence[ReferenceChange]],
        found: dict[int, list[FallFinding]],
    ) -> None:
        """Screen samples ``a..b-1`` of the block (already in the rings), run
        the per-device path where needed and move every other cursor on."""
        st, k = self.state, self._merge
        n = b - a
        if self._everyone:
            need = np.ones(cols.size, dtype=bool)
        else:
            need = _held(st.pending[sel]) | _held(st.fallen[sel])
            # A peak can only be at a trigger-level sample not yet looked at.
            look = np.flatnonzero(st.last_trigger[sel] >= st.peak_next[sel])
            if look.size == cols.size:
                need |= self._screened(cols, sel, first, n)
            elif look.size:
                need[look] |= self._screened(cols[look], cols[look], first[look], n)
        self._run_devices(cols, np.flatnonzero(need), a, b, references, found)
        self._set_references(cols, need, a, b, references)
        rest = cols[~need]
        last = st.seen[rest] - 1
        # What the per-device path would have done: no peak opened anything.
        moved = last - k >= st.peak_next[rest]
        st.peak_next[rest[moved]] = last[moved] - k + 1

    def _screened(
        self, cols: IntArray, sel: slice | IntArray, first: IntArray, n: int
    ) -> BoolArray:
        """(k,) devices with a completed peak in the piece that could open a candidate."""
        st, k, back = self.state, self._merge, self._screen.back
        # Rows: the look-back of the earliest possible peak (k before the
        # piece) up to the piece's last sample.
        start = first - k - back
        first_row = np.maximum(-start, 0)
        peak_row = st.peak_next[sel] - start
        mag = st.magnitudes(start, back + n + k, cols)
        return self._screen.screen(mag, first_row, peak_row)

    def _screen_compiled(
        self,
        cols: IntArray,
        a: int,
        b: int,
        references: Mapping[int, Sequence[ReferenceChange]],
        found: dict[int, list[FallFinding]],
    ) -> None:
        """:meth:`_chunk` by the compiled screen (the piece already in the
        rings): one kernel call decides who needs the per-device path and moves
        everybody else's cursor; a piece without a candidate ends there."""
        st = self._state
        if self._need.size < cols.size:
            self._need = np.zeros(cols.size, dtype=bool)
        need = self._need[: cols.size]
        need.fill(self._everyone)
        runs = self._kernels.fall_screen(
            st.rows,
            cols if cols is self._all else c_array(cols.astype(np.int64, copy=False)),
            st.seen,
            st.peak_next,
            st.last_trigger,
            st.busy,
            b - a,
            self._screen.kernel_args,
            need,
        )
        if runs:
            self._run_devices(cols, np.flatnonzero(need), a, b, references, found)
        if references:
            self._set_references(cols, need, a, b, references)

    def _set_references(
        self,
        cols: IntArray,
        need: BoolArray,
        a: int,
        b: int,
        references: Mapping[int, Sequence[ReferenceChange]],
    ) -> None:
        """The reference changes in samples ``a..b-1`` of the columns that did
        not take the per-device path: their last one becomes the device's
        reference upright.

        Such a device has no pending candidate nor active fall, and none of
        its peaks in the piece could open a candidate (the screen does not
        read the reference): the per-device path, split at the changes, would
        only have moved its peak cursor as the screen did and stored the last
        upright, normalised the same way. A calibration, every few blocks in
        a ward, then costs no per-device run.
        """
        for j in _changed_in(references, a, b):
            if need[j]:
                continue  # the per-device path took the changes in order
            ups = [up for i, up in references[j] if a <= i < b]
            v = np.asarray(ups[-1], dtype=np.float64)
            # np.linalg.norm's own arithmetic (sqrt of v.dot(v)), without its checks.
            self.set_reference_up(int(cols[j]), v / math.sqrt(v.dot(v)), calibrated=True)

    def _run_devices(
        self,
        cols: IntArray,
        which: IntArray,
        a: int,
        b: int,
        references: Mapping[int, Sequence[ReferenceChange]],
        found: dict[int, list[FallFinding]],
    ) -> None:
        """The per-device path of columns ``which`` on samples ``a..b-1`` of the
        block (the piece just written to their rings)."""
        st, n = self.state, b - a
        self.device_runs += which.size
        for j in which.tolist():
            d = int(cols[j])
            changes = [(i - a, up) for i, up in references.get(j, ()) if a <= i < b]
            out = self._device(d, int(st.seen[d]) - n, n, changes)
            if out:
                found.setdefault(j, []).extend(out)

    def _device(
        self, d: int, first: int, n: int, changes: list[ReferenceChange]
    ) -> list[FallFinding]:
        """The per-device path of device ``d`` on samples ``first..first+n-1``,
        split where its reference upright changes."""
        st = self.state
        dev = DeviceFalls.load(st, d)
        base = first - min(first, self.history_len)
        last = first + n - 1
        work = WorkRows(st, d, base, last)
        out: list[FallFinding] = []
        start = first
        for i, up in changes:
            if first + i > start:
                out += self._path.run(dev, work, base, start, first + i - 1)
            v = np.asarray(up, dtype=np.float64)
            dev.ref_up = v / np.linalg.norm(v)
            dev.ref_calibrated = True
            start = first + i
        if start <= last:
            out += self._path.run(dev, work, base, start, last)
        dev.store(st, d)
        # A busy device runs again next piece: keep its rows (they never
        # change; the ring would overwrite them only R samples on).
        st.work[d] = (last, work.rows) if st.busy[d] else None
        return out


def _changed_in(references: Mapping[int, Sequence[ReferenceChange]], a: int, b: int) -> list[int]:
    """Columns whose reference upright changes at a sample in ``a..b-1``."""
    return [j for j, changes in references.items() if any(a <= i < b for i, _ in changes)]


def _held(objects: NDArray[np.object_]) -> BoolArray:
    """(k,) which entries of an object array are not None."""
    return np.asarray(objects != np.array(None), dtype=bool)


# The gyroscope the compiled stage 0 is given when there is none (never read).
_EMPTY_GYRO = np.zeros((1, 3, 1))

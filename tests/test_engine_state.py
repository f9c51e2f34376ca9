"""The engine-state protocol (posture.state): take, put, grow, copy over nested dataclasses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from posture import state


@dataclass
class _Inner:
    quat: np.ndarray  # (4, D)


@dataclass
class _Outer:
    count: np.ndarray  # (D,)
    inner: _Inner
    calibration: np.ndarray  # (D,) object

    @classmethod
    def fresh(cls, devices: int) -> _Outer:
        return cls(
            np.zeros(devices, np.int64),
            _Inner(np.tile([[1.0], [0.0], [0.0], [0.0]], devices)),
            np.full(devices, None, dtype=object),
        )


def test_take_put_round_trip_touches_only_the_devices_taken() -> None:
    s = _Outer.fresh(5)
    part = state.take(s, np.array([3, 1]))
    part.count += 7
    part.inner.quat[:, 0] = (0.0, 1.0, 0.0, 0.0)
    part.calibration[1] = "cal"
    assert s.count.tolist() == [0, 0, 0, 0, 0]  # take copies
    state.put(s, np.array([3, 1]), part)
    assert s.count.tolist() == [0, 7, 0, 7, 0]
    assert s.inner.quat[:, 3].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert s.inner.quat[:, 1].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert s.calibration.tolist() == [None, "cal", None, None, None]


def test_grow_appends_fresh_devices_and_copy_is_deep() -> None:
    s = _Outer.fresh(2)
    s.count[:] = (4, 5)
    bigger = state.grow(s, _Outer.fresh(3))
    assert state.device_count(bigger) == 5
    assert bigger.count.tolist() == [4, 5, 0, 0, 0]
    dup = state.copy(bigger)
    dup.inner.quat[0, 0] = 9.0
    assert bigger.inner.quat[0, 0] == 1.0


def test_a_field_that_is_not_an_array_is_refused() -> None:
    @dataclass
    class _Hidden:
        count: np.ndarray
        pending: list[int]

    with pytest.raises(TypeError, match="pending"):
        state.take(_Hidden(np.zeros(2), []), np.array([0]))


def test_fields_that_disagree_on_the_device_count_are_reported() -> None:
    bad = _Outer(np.zeros(3), _Inner(np.zeros((4, 2))), np.full(3, None, dtype=object))
    with pytest.raises(ValueError, match="disagree"):
        state.device_count(bad)


def test_an_engine_core_keeps_all_its_memory_in_its_engine_state() -> None:
    # Put a copy of the state back and run the same block again: the same
    # numbers, so nothing the numerics remember lives outside the state (the
    # fall detector's state is kept beside it; this stream has no impact for
    # it to remember).
    from test_posture_synth import gait_acc, keyframes, synthesize

    from posture import EngineConfig, SlouchSettings
    from posture.core import EngineCore

    m = synthesize(
        30.0,
        50.0,
        keyframes([(0, 0), (8, 0), (10, 40), (30, 40)]),
        linear_acc_g=gait_acc(start_s=3.0, stop_s=8.0),
    )
    core = EngineCore(EngineConfig(50.0, True, slouch=SlouchSettings(dwell_s=5.0)), 3)
    t = np.stack([m.t_s] * 3, axis=1)
    acc = np.stack([m.acc_g] * 3, axis=2)
    gyr = np.stack([m.gyr_dps] * 3, axis=2)

    def block(a: int, b: int) -> tuple[np.ndarray, ...]:
        out = core.process(t[a:b], acc[a:b], gyr[a:b])
        return out.flexion_deg, out.activity, out.slouching

    block(0, 600)
    saved = state.copy(core.state)
    first = block(600, 1500)
    state.put(core.state, np.arange(3), saved)
    again = block(600, 1500)
    for x, y in zip(first, again, strict=True):
        np.testing.assert_array_equal(x, y)
    assert np.isfinite(first[0][-1]).all() and first[2][-1].all()  # calibrated, slouching

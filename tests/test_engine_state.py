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

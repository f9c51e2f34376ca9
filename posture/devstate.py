"""Per-device state of an :class:`~posture.core.EngineCore`, saved and put back.

A batch block whose samples of one device are unusable (non-finite) is
processed for every device, and that device's state is then put back as it
was, so the block has no effect on it (as if its packet had been lost).
:func:`snapshot` and :func:`restore` list every array that holds per-device
state (the device on the last axis) and the filters whose columns belong to
devices.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from posture.lti import SosFilter

if TYPE_CHECKING:
    from posture.core import EngineCore

__all__ = ["restore", "snapshot"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]


def _state_arrays(core: EngineCore) -> list[tuple[object, str]]:
    """Attributes holding per-device state, the device on the last axis."""
    g, act, cap, sl = core.gravity, core.activity, core.capture, core.slouch
    names: dict[object, tuple[str, ...]] = {
        g.state: ("count", "quat_si", "gyr_prev_rps", "init_sum", "quiet_run", "bias_rps"),
        act: ("_prev_up", "_fresh", "_sign", "_walk_run", "_since_walk", "_still_run", "_lying"),
        cap: (
            "stage",
            "requested",
            "provisional_up",
            "_still_run",
            "_bout_run",
            "_bout_sum",
            "_bout_start_t",
            "_last_still_t",
            "_last_still_up",
        ),
        sl: ("slouching", "_count_s", "_timing", "_started_t_s", "_last_t_s"),
        core: (
            "_matrix",
            "_calibrated",
            "last_t_s",
            "_last_angles",
            "samples",
            "blocks",
            "gaps",
            "clock_resets",
        ),
    }
    return [(obj, name) for obj, attrs in names.items() for name in attrs]


def _filters(core: EngineCore) -> list[SosFilter]:
    g, act = core.gravity, core.activity
    return [g._lp_inertial, g._lp_rest, g._lp_acc_only, act._gait, act._envelope]


def snapshot(core: EngineCore, devices: IntArray) -> list[FloatArray]:
    """Copies of ``devices``' state in ``core``."""
    saved = [np.array(getattr(obj, name)[..., devices]) for obj, name in _state_arrays(core)]
    for f in _filters(core):
        saved.append(f.state.reshape(f.state.shape[0], -1, core.devices)[..., devices].copy())
    return saved


def restore(core: EngineCore, devices: IntArray, saved: list[FloatArray]) -> None:
    """Put ``devices``' state back as :func:`snapshot` saved it."""
    pairs = _state_arrays(core)
    for (obj, name), values in zip(pairs, saved, strict=False):
        getattr(obj, name)[..., devices] = values
    for f, values in zip(_filters(core), saved[len(pairs) :], strict=True):
        state = f.state.reshape(f.state.shape[0], -1, core.devices).copy()
        state[..., devices] = values
        f.state = state.reshape(f.state.shape)

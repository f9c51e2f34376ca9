"""Deferred calls to the fall detector change nothing: same findings, same blocks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from test_posture_calibration import walking_motion

from posture.falls import FallDetector, FallFinding, FallSettings
from posture.falls.feed import FallFeed
from posture.orientation import estimate_up

FS = 50.0


def falls_and_recovery() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Walks, falls forward at 20 s, lies 6 s, gets up and walks (a
    cancellation), falls again at 60 s; ``(t, acc, gyr, up)``."""

    def impacts(t: np.ndarray) -> np.ndarray:
        z = np.zeros_like(t)
        for at in (20.0, 60.0):
            z += -0.9 * np.exp(-(((t - at + 0.45) / 0.15) ** 2))
            z += 4.5 * np.exp(-(((t - at) / 0.02) ** 2))
        return np.stack([0 * t, 0 * t, z], axis=1)

    keys = [(0, 0), (19.5, 0), (20.05, 89), (26, 89), (28, 0), (59.5, 0), (60.05, 89), (75, 89)]
    m = walking_motion(keys, (3.0, 18.0), 75.0, 200.0, linear=impacts)
    # A second walk after getting up, for the cancellation.
    steps = walking_motion([(0, 0), (75, 0)], (29.0, 45.0), 75.0, 200.0)
    acc = m.acc_g + (steps.acc_g - walking_motion([(0, 0), (75, 0)], (0.0, 0.0), 75.0, 200.0).acc_g)
    return m.t_s, acc, m.gyr_dps, estimate_up(acc, m.gyr_dps, FS)


T, ACC, GYR, UP = falls_and_recovery()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_held_samples_give_the_same_findings_in_the_same_blocks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    every = FallFeed([FallDetector(FallSettings(), FS)], FS, max_hold_s=1e-9)
    held = FallFeed([FallDetector(FallSettings(), FS)], FS)
    for feed in (every, held):
        feed.detectors[0].set_reference_up(UP[100], calibrated=True)
    bounds = np.cumsum(rng.integers(1, 40, size=T.size))
    bounds = np.concatenate(([0], bounds[bounds < T.size], [T.size]))
    got: list[list[FallFinding]] = []
    want: list[list[FallFinding]] = []
    quiet_calls, quiet_blocks = 0, 0
    for a, b in itertools.pairwise(bounds):
        rows = (T[a:b], ACC[a:b], GYR[a:b], UP[a:b])
        mag2 = np.einsum("ni,ni->n", ACC[a:b], ACC[a:b])[:, None]
        out = []
        for feed, sink in ((every, want), (held, got)):
            feed.triggers(mag2)
            if feed.must_call(0, b - a):
                found = feed.call(0, *rows)
                # Standing still between the walk and the second fall.
                quiet_calls += feed is held and T[a] > 47.0 and T[b - 1] < 59.0
            else:
                feed.hold(0, *rows)
                found = []
            out.append(found)
            sink.append(found)
        assert out[0] == out[1], f"block {a}:{b}"
        quiet_blocks += T[a] > 47.0 and T[b - 1] < 59.0
    kinds = [f.kind for block in want for f in block]
    assert kinds == ["detected", "cancelled", "detected"]
    # While nothing can happen the samples are held back (but never longer
    # than max_hold_s: about one call a second here).
    assert quiet_blocks > 10 and quiet_calls <= 0.5 * quiet_blocks


def test_a_walker_is_not_handed_over_every_packet() -> None:
    """Steps reach the impact trigger; their samples are still held until a
    finding could come of them (about once a second, not every packet)."""
    feed = FallFeed([FallDetector(FallSettings(), FS)], FS)
    feed.detectors[0].set_reference_up(UP[100], calibrated=True)
    walking_blocks = triggering_blocks = calls = 0
    for a in range(0, T.size, 10):  # 10-sample packets, as from the gateway
        rows = (T[a : a + 10], ACC[a : a + 10], GYR[a : a + 10], UP[a : a + 10])
        mag2 = np.einsum("ni,ni->n", rows[1], rows[1])[:, None]
        feed.triggers(mag2)
        walking = rows[0][0] > 4.0 and rows[0][-1] < 18.0
        walking_blocks += walking
        triggering_blocks += walking and bool((mag2 >= FallSettings().trigger_acc_g ** 2).any())
        if feed.must_call(0, rows[0].size):
            feed.call(0, *rows)
            calls += walking
        else:
            feed.hold(0, *rows)
    assert walking_blocks > 50 and triggering_blocks > 10
    assert calls <= 0.3 * walking_blocks

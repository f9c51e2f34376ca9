"""The fall detector across devices finds what each wearable's own detector finds.

A simulated ward (falls of every family, everyday movements that look like
falls, patients getting up and walking again) goes through the batched
engine in blocks of varying size and through one engine per wearable; the
fall events must be the same, at the same samples, with the same details.
At the level of the fall stage, the screen (which devices take the
per-device path) is checked against sending every device every block, and
the state against the engine-state protocol (subsets of devices per tick,
devices added, snapshots).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from lab.batch_bench import synthetic_devices
from posture import EngineConfig, PostureEngine, PostureEvent, PostureEventKind, state
from posture.batch import BatchEngine
from posture.falls import FallDetector, FallFinding, FallSettings, FallStage
from posture.orientation import estimate_up
from simulator import SimulatedWearable, parse_scenario

FS = 50.0
FALL_KINDS = (PostureEventKind.FALL_DETECTED, PostureEventKind.FALL_CANCELLED)

# (what the patient does first, what happens later): falls of each family
# and movements that must raise nothing.
MENU: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"activity": "walk"}, {"activity": "fall", "direction": "forward", "impact_g": 5.0}),
    (
        {"activity": "sit", "flexion_deg": 25.0},
        {"activity": "fall", "direction": "backward", "impact_g": 3.0, "end": "reclined"},
    ),
    (
        {"activity": "walk"},
        {"activity": "fall", "direction": "forward", "impact_g": 1.8, "descent_s": 3.0},
    ),
    (
        {"activity": "stand"},
        {"activity": "fall", "direction": "backward", "impact_g": 4.0, "end": "sitting"},
    ),
    ({"activity": "walk"}, {"activity": "fall", "direction": "left", "impact_g": 4.0}),
    ({"activity": "walk"}, {"activity": "sit_down", "style": "hard", "impact_g": 2.6}),
    ({"activity": "stand"}, {"activity": "squat", "down_s": 2.5, "up_s": 2.5}),
    ({"activity": "walk"}, {"activity": "lie_down", "position": "supine", "duration_s": 1.5}),
]


def ward(
    devices: int, seconds: float, model: str, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(t (D, n), acc (D, n, 3), gyr (D, n, 3) | None)`` of simulated patients,
    each with a random event at a random time, half of them getting up and
    walking again a few seconds later."""
    rng = np.random.default_rng(seed)
    ts, accs, gyrs = [], [], []
    for d in range(devices):
        first, then = MENU[d % len(MENU)]
        at = float(rng.uniform(12.0, 22.0))
        timeline = [{"at_s": 0.0, **first}, {"at_s": at, **then}]
        if then["activity"] != "squat" and rng.random() < 0.5:
            up_at = at + float(rng.uniform(2.0, 8.0))
            timeline.append({"at_s": up_at, "activity": "get_up", "to": "stand"})
            timeline.append({"at_s": up_at + 3.0, "activity": "walk"})
        wearable = {
            "address": "C0:FF:EE:00:00:09",
            "model": model,
            "sample_rate_hz": int(FS),
            "mounting": {"spin_deg": float(rng.uniform(0.0, 360.0)), "tilt_deg": 10.0},
        }
        patient = {"id": "p", "seed": seed * 100 + d, "wearable": wearable, "timeline": timeline}
        scenario = parse_scenario({"patients": [patient]})
        block = SimulatedWearable(scenario.patients[0], index=0, seed=d).render(0.0, seconds)
        ts.append(block.t_s)
        accs.append(block.acc_g)
        gyrs.append(block.gyr_dps)
    n = min(t.shape[0] for t in ts)
    gyr = None if gyrs[0] is None else np.stack([g[:n] for g in gyrs if g is not None])
    return np.stack([t[:n] for t in ts]), np.stack([a[:n] for a in accs]), gyr


def random_blocks(n: int, seed: int) -> list[tuple[int, int]]:
    """Block bounds of random sizes, from one sample to more than the stage's piece."""
    rng = np.random.default_rng(seed)
    cuts = np.cumsum(rng.choice([1, 3, 10, 19, 37, 64, 130], size=n))
    bounds = [0, *cuts[cuts < n].tolist(), n]
    return list(itertools.pairwise(bounds))


def fall_events(events: list[PostureEvent]) -> list[tuple[str, float, Mapping[str, float]]]:
    return [(e.kind.value, e.t_s, e.details) for e in events if e.kind in FALL_KINDS]


WARDS = {model: ward(16, 50.0, model, seed) for model, seed in (("acc_gyro", 1), ("acc_only", 2))}


@pytest.mark.parametrize("model", ["acc_gyro", "acc_only"])
def test_many_wearables_get_the_fall_events_of_their_own_engine(model: str) -> None:
    t, acc, gyr = WARDS[model]
    devices = t.shape[0]
    config = EngineConfig(sample_rate_hz=FS, has_gyro=gyr is not None)
    batch = BatchEngine(config, devices)
    got: list[list[PostureEvent]] = [[] for _ in range(devices)]
    for a, b in random_blocks(t.shape[1], seed=devices):
        out = batch.process(t[:, a:b], acc[:, a:b], None if gyr is None else gyr[:, a:b])
        for d in range(devices):
            got[d] += out.events[d]
    kinds: list[str] = []
    for d in range(devices):
        single = PostureEngine(config)
        want: list[PostureEvent] = []
        for a in range(0, t.shape[1], 10):
            g = None if gyr is None else gyr[d, a : a + 10]
            want += single.process(t[d, a : a + 10], acc[d, a : a + 10], g).events
        assert fall_events(got[d]) == fall_events(want), f"device {d}"
        kinds += [k for k, _, _ in fall_events(want)]
    # Not vacuous: falls of several rules, and patients who got up and walked.
    assert kinds.count("fall_detected") >= 6 and kinds.count("fall_cancelled") >= 2


def stage_inputs(model: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """The ward in the stage's (n, 3, D) layout, with each device's up estimate."""
    t, acc, gyr = WARDS[model]
    ups = [estimate_up(acc[d], None if gyr is None else gyr[d], FS) for d in range(t.shape[0])]
    up = np.stack(ups, axis=2)
    gyr_l = None if gyr is None else gyr.transpose(1, 2, 0)
    return t.T.copy(), acc.transpose(1, 2, 0).copy(), gyr_l, up


def stage(devices: int, *, screen: bool = True) -> FallStage:
    return FallStage(FallSettings(), FS, devices, np.array([0.0, 1.0, 0.0]), screen=screen)


Findings = dict[int, list[tuple[str, float, dict[str, float]]]]


def collect(into: Findings, found: dict[int, list[FallFinding]], columns: np.ndarray) -> None:
    for j, fs in found.items():
        if fs:
            into.setdefault(int(columns[j]), []).extend((f.kind, f.t_s, f.details) for f in fs)


@pytest.mark.parametrize("model", ["acc_gyro", "acc_only"])
def test_the_screen_changes_no_finding_and_spares_most_devices(model: str) -> None:
    t, acc, gyr, up = stage_inputs(model)
    n, devices = t.shape
    everyone, screened = stage(devices, screen=False), stage(devices)
    # Half the devices get a calibrated upright in the middle of a block.
    at = 1000
    results: list[Findings] = [{}, {}]
    for a, b in random_blocks(n, seed=3):
        changes = None
        if a < at < b:
            changes = {int(d): [(at - a, up[at, :, d] * 2.0)] for d in range(0, devices, 2)}
        g = None if gyr is None else gyr[a:b]
        for st, res in zip((everyone, screened), results, strict=True):
            found = st.process(t[a:b], acc[a:b], g, up[a:b], references=changes)
            collect(res, found, np.arange(devices))
    assert results[0] == results[1]
    assert sum(1 for fs in results[0].values() for k, _, _ in fs if k == "detected") >= 6
    # The devices the screen spared stored their new uprights as the path does.
    for name in ("ref_up", "ref_calibrated", "peak_next", "busy"):
        want, got = getattr(everyone.state, name), getattr(screened.state, name)
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert (
        screened.state.ref_calibrated[::2].all() and not screened.state.ref_calibrated[1::2].any()
    )
    # Even on a ward where everybody falls, most device-blocks skip the per-device path.
    assert screened.device_runs < 0.5 * everyone.device_runs


@pytest.mark.parametrize("model", ["acc_gyro", "acc_only"])
def test_kept_work_rows_are_the_rings_rows(model: str) -> None:
    """A busy device's per-device runs start from the rows it kept; a stage
    made to gather every run's rows afresh from the ring finds the same."""
    t, acc, gyr, up = stage_inputs(model)
    n, devices = t.shape
    kept, fresh = stage(devices), stage(devices)
    results: list[Findings] = [{}, {}]
    used = 0
    for a, b in random_blocks(n, seed=13):
        used += sum(w is not None for w in kept.state.work)
        fresh.state.work[:] = None
        g = None if gyr is None else gyr[a:b]
        for st, res in zip((kept, fresh), results, strict=True):
            collect(res, st.process(t[a:b], acc[a:b], g, up[a:b]), np.arange(devices))
    assert results[0] == results[1]
    assert sum(1 for fs in results[0].values() for k, _, _ in fs if k == "detected") >= 6
    assert used > 100  # device-blocks that started from kept rows


def test_walkers_rarely_take_the_per_device_path() -> None:
    """Walking steps reach the impact trigger at most steps; the screen drops
    them across devices, so a walking ward is not judged device by device."""
    t, acc, gyr = synthetic_devices(40, 40.0, FS)
    st = stage(40)
    up = np.stack([estimate_up(acc[d], gyr[d], FS) for d in range(40)], axis=2)
    t_l, acc_l, gyr_l = t.T, acc.transpose(1, 2, 0), gyr.transpose(1, 2, 0)
    triggered = 0
    for a in range(0, t.shape[1], 10):
        b = a + 10
        assert not st.process(t_l[a:b], acc_l[a:b], gyr_l[a:b], up[a:b])
        triggered += int(np.count_nonzero((np.linalg.norm(acc_l[a:b], axis=1) >= 1.3).any(axis=0)))
    blocks = t.shape[1] // 10 * 40
    assert triggered > 0.1 * blocks  # the steps do reach the trigger
    assert st.device_runs < 0.1 * triggered


def test_subsets_added_devices_and_snapshots_follow_the_state_protocol() -> None:
    t, acc, gyr, up = stage_inputs("acc_gyro")
    n, devices = t.shape
    assert gyr is not None
    rng = np.random.default_rng(5)
    # Each device on its own, as one wearable's detector sees it.
    want: Findings = {}
    for d in range(devices):
        det = FallDetector(FallSettings(), FS)
        det.set_reference_up([0.0, 1.0, 0.0], calibrated=False)
        for a in range(0, n, 10):
            mine = det.process(
                t[a : a + 10, d], acc[a : a + 10, :, d], gyr[a : a + 10, :, d], up[a : a + 10, :, d]
            )
            collect(want, {0: mine}, np.array([d]))
    # The batched stage: starts with half the devices, the rest join later
    # (grow); each tick only some devices have samples (take, process, put);
    # one tick is run on a snapshot first and thrown away (copy).
    first = devices // 2
    st = stage(first)
    got: Findings = {}
    pos = np.zeros(devices, dtype=int)
    joined = False
    while (pos < n).any():
        if not joined and pos[:first].min() > n // 3:
            st.state = state.grow(st.state, st.fresh_state(devices - first))
            joined = True
        live = devices if joined else first
        size = int(rng.choice([5, 10, 19]))
        ready = np.flatnonzero((pos[:live] + size <= n) & (rng.random(live) < 0.7))
        if not ready.size:  # the streams' ends
            size, ready = 1, np.flatnonzero(pos[:live] < n)
        rows = pos[ready][None, :] + np.arange(size)[:, None]
        block = (
            t[rows, ready],
            acc[rows, :, ready].transpose(0, 2, 1),
            gyr[rows, :, ready].transpose(0, 2, 1),
            up[rows, :, ready].transpose(0, 2, 1),
        )
        whole = st.state
        if rng.random() < 0.1:  # a throw-away run on a snapshot changes nothing
            st.state = state.copy(whole)
            st.process(*block, devices=ready)
        part = state.take(whole, ready)
        st.state = part
        found = st.process(*block)
        state.put(whole, ready, part)
        st.state = whole
        collect(got, found, ready)
        pos[ready] += size
    assert got == want
    assert any(k == "cancelled" for fs in want.values() for k, _, _ in fs)

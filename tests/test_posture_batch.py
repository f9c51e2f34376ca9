"""The batched engine gives every device what its own PostureEngine gives it."""

from __future__ import annotations

import math
import tracemalloc
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
from test_posture_engine import FS
from test_posture_slouch import walking_hunched
from test_posture_synth import Motion, gait_acc, gait_sway, keyframes, mounting, synthesize

from common.errors import PostureMonitorError
from lab.batch_bench import main as bench_main
from lab.batch_bench import run_bench
from posture import (
    Activity,
    Calibration,
    EngineBlock,
    EngineConfig,
    PostureEngine,
    PostureEventKind,
    SampleError,
    SlouchSettings,
)
from posture.batch import BatchEngine

CONFIG = {
    gyro: EngineConfig(FS, gyro, slouch=SlouchSettings(dwell_s=5.0)) for gyro in (True, False)
}


def device_motion(d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """60 s of one patient: each device its own spin, walk, slouch or fall, gaps."""
    rng = np.random.default_rng(d)
    spin = float(rng.uniform(0.0, 360.0))
    still_s = float(rng.uniform(1.0, 8.0))  # some stand long enough, some not
    walk = (still_s, still_s + 11.0)
    role = d % 3
    keys = [(0, 0), (walk[1] + 3, 0)]
    if role == 0:  # slouches after walking
        keys += [(walk[1] + 5, 35), (50, 35), (51, 0), (60, 0)]
    elif role == 1:  # falls at 45 s
        keys += [(44.5, 0), (45.05, 89), (60, 89)]
    else:  # sits slumped, then walks; never falls
        keys = [(0, 30), (walk[0] - 0.1, 30), (walk[0] + 1, 0), (60, 0)]
    flex = keyframes(keys)
    sway = gait_sway(start_s=walk[0], stop_s=walk[1])
    gait = gait_acc(start_s=walk[0], stop_s=walk[1])

    def acc(t: np.ndarray) -> np.ndarray:
        a = gait(t)
        if role == 1:
            a[:, 2] += 4.0 * np.exp(-(((t - 45.0) / 0.02) ** 2))
        return a

    m = synthesize(
        60.0,
        FS,
        lambda t: flex(t) + sway(t),
        mount=mounting(spin, float(rng.uniform(-20, 20))),
        linear_acc_g=acc,
        gyr_bias_dps=tuple(rng.normal(0.0, 0.5, 3)),
        seed=d,
    )
    t = m.t_s.copy()
    if d % 4 == 1:
        t[1700:] += 0.4  # lost packets
    if d % 5 == 2:
        t[2300:] -= 40.0  # the wearable rebooted its clock
    return t, m.acc_g, m.gyr_dps


def blocks(n: int, sizes: list[int]) -> Iterator[slice]:
    a, k = 0, 0
    while a < n:
        b = min(n, a + sizes[k % len(sizes)])
        yield slice(a, b)
        a, k = b, k + 1


def assert_same(batch: EngineBlock, single: EngineBlock) -> None:
    np.testing.assert_array_equal(batch.t_s, single.t_s)
    np.testing.assert_allclose(batch.flexion_deg, single.flexion_deg, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(batch.lateral_deg, single.lateral_deg, atol=1e-9, equal_nan=True)
    np.testing.assert_array_equal(batch.activity, single.activity)
    np.testing.assert_array_equal(batch.slouching, single.slouching)
    assert [e.kind for e in batch.events] == [e.kind for e in single.events]
    for a, b in zip(batch.events, single.events, strict=True):
        assert a.t_s == b.t_s
        assert a.flexion_deg == pytest.approx(b.flexion_deg, abs=1e-9, nan_ok=True)
        assert a.lateral_deg == pytest.approx(b.lateral_deg, abs=1e-9, nan_ok=True)
        assert a.details == pytest.approx(b.details, abs=1e-9)


def assert_same_calibration(a: Calibration | None, b: Calibration | None) -> None:
    assert (a is None) == (b is None)
    if a is not None and b is not None:
        np.testing.assert_allclose(a.matrix, b.matrix, atol=1e-12)
        assert (a.t_s, a.requested, a.provisional) == (b.t_s, b.requested, b.provisional)


def ward(devices: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data = [device_motion(d) for d in range(devices)]
    return tuple(np.stack([x[i] for x in data]) for i in range(3))  # type: ignore[return-value]


WARD = ward(12)


@pytest.mark.parametrize("gyro", [True, False], ids=["gyro", "acc_only"])
@pytest.mark.parametrize("devices", [3, 12], ids=["few", "many"])
def test_every_device_gets_what_its_own_engine_gives(gyro: bool, devices: int) -> None:
    t, acc, gyr = (x[:devices] for x in WARD)
    batch = BatchEngine(CONFIG[gyro], devices)
    singles = [PostureEngine(CONFIG[gyro]) for _ in range(devices)]
    seen: set[PostureEventKind] = set()
    walking = lying = False
    for sl in blocks(t.shape[1], [10, 10, 7, 23, 1, 50]):
        out = batch.process(t[:, sl], acc[:, sl], gyr[:, sl] if gyro else None)
        assert not out.dropped.any()
        for d, engine in enumerate(singles):
            ref = engine.process(t[d, sl], acc[d, sl], gyr[d, sl] if gyro else None)
            assert_same(out.device(d), ref)
            seen |= {e.kind for e in ref.events}
            walking |= bool((ref.activity == Activity.WALKING).any())
            lying |= bool((ref.activity == Activity.LYING).any())
    # The comparison is worth something only if the ward exercised it all.
    assert {
        PostureEventKind.CALIBRATED,
        PostureEventKind.SLOUCH_STARTED,
        PostureEventKind.FALL_DETECTED,
    } <= seen
    assert walking and lying
    for d, engine in enumerate(singles):
        assert batch.stats(d) == engine.stats
        assert_same_calibration(batch.calibration(d), engine.calibration)
    assert sum(batch.stats(d).gaps for d in range(devices)) >= 1
    assert sum(batch.stats(d).clock_resets for d in range(devices)) >= 1


def test_requests_and_restored_calibrations_act_on_their_device_only() -> None:
    devices = 10
    t, acc, gyr = (x[:devices] for x in WARD)
    batch = BatchEngine(CONFIG[True], devices)
    singles = [PostureEngine(CONFIG[True]) for _ in range(devices)]
    donor = PostureEngine(CONFIG[True])
    for sl in blocks(1000, [10]):
        donor.process(t[4, sl], acc[4, sl], gyr[4, sl])
    stored = donor.calibration
    assert stored is not None
    for k, sl in enumerate(blocks(t.shape[1], [10])):
        if k == 120:
            batch.request_calibration(2)
            singles[2].request_calibration()
            batch.set_calibration(4, stored)
            singles[4].set_calibration(stored)
        out = batch.process(t[:, sl], acc[:, sl], gyr[:, sl])
        for d, engine in enumerate(singles):
            assert_same(out.device(d), engine.process(t[d, sl], acc[d, sl], gyr[d, sl]))
    assert batch.calibration(2) is not None and batch.calibration(2).requested  # type: ignore[union-attr]


def test_a_device_with_bad_samples_loses_that_block_only() -> None:
    devices = 9
    t, acc, gyr = (x[:devices].copy() for x in WARD)
    bad = slice(600, 610)
    acc[5, bad][3] = np.nan
    gyr[7, bad][0] = np.inf
    batch = BatchEngine(CONFIG[True], devices)
    singles = [PostureEngine(CONFIG[True]) for _ in range(devices)]
    for sl in blocks(t.shape[1], [10]):
        out = batch.process(t[:, sl], acc[:, sl], gyr[:, sl])
        for d, engine in enumerate(singles):
            if sl == bad and d in (5, 7):
                # What a gateway does with its own engine: the packet is dropped.
                with pytest.raises(SampleError):
                    engine.process(t[d, sl], acc[d, sl], gyr[d, sl])
                got = out.device(d)
                assert out.dropped[d] and got.events == ()
                assert np.isnan(got.flexion_deg).all() and (got.activity == 0).all()
                continue
            assert not out.dropped[d]
            assert_same(out.device(d), engine.process(t[d, sl], acc[d, sl], gyr[d, sl]))
    assert batch.dropped_blocks(5) == 1 and batch.dropped_blocks(7) == 1
    assert batch.dropped_blocks(0) == 0
    assert batch.stats(5) == singles[5].stats


@pytest.mark.parametrize(
    ("t_s", "acc", "gyr", "message"),
    [
        (np.zeros(10), np.zeros((2, 10, 3)), np.zeros((2, 10, 3)), "t_s must have shape"),
        (np.zeros((3, 10)), np.zeros((3, 10, 3)), np.zeros((3, 10, 3)), "t_s must have shape"),
        (np.zeros((2, 10)), np.zeros((2, 9, 3)), np.zeros((2, 10, 3)), "acc_g must have shape"),
        (np.zeros((2, 10)), np.zeros((2, 10, 3)), np.zeros((2, 10, 2)), "gyr_dps must have shape"),
        (np.zeros((2, 10)), np.zeros((2, 10, 3)), None, "configured with a gyroscope"),
        ([["a"]], np.zeros((2, 10, 3)), None, "numeric"),
    ],
)
def test_malformed_batches_raise_a_clear_sample_error(
    t_s: object, acc: np.ndarray, gyr: np.ndarray | None, message: str
) -> None:
    batch = BatchEngine(CONFIG[True], 2)
    with pytest.raises(SampleError, match=message) as info:
        batch.process(t_s, acc, gyr)  # type: ignore[arg-type]
    assert isinstance(info.value, PostureMonitorError)
    # Nothing was processed; the engine works afterwards.
    m = synthesize(1.0, FS, keyframes([(0, 0)]))
    out = batch.process(np.stack([m.t_s] * 2), np.stack([m.acc_g] * 2), np.stack([m.gyr_dps] * 2))
    assert out.flexion_deg.shape == (2, m.t_s.size) and batch.stats(0).blocks == 1


def test_empty_blocks_and_bad_device_counts() -> None:
    batch = BatchEngine(CONFIG[False], 4)
    out = batch.process(np.zeros((4, 0)), np.zeros((4, 0, 3)))
    assert out.flexion_deg.shape == (4, 0) and out.events == ((), (), (), ())
    with pytest.raises(ValueError, match="devices"):
        BatchEngine(CONFIG[False], -1)


def test_inputs_are_not_mutated() -> None:
    t, acc, gyr = (x[:3, :200].copy() for x in WARD)
    copies = (t.copy(), acc.copy(), gyr.copy())
    BatchEngine(CONFIG[True], 3).process(t, acc, gyr)
    for before, after in zip(copies, (t, acc, gyr), strict=True):
        np.testing.assert_array_equal(before, after)


def test_memory_per_wearable_is_under_64_kib() -> None:
    devices = 100
    t, acc, gyr = (np.tile(x[:1, :500], (devices,) + (1,) * (x.ndim - 1)) for x in WARD)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    batch = BatchEngine(CONFIG[True], devices)
    for sl in blocks(500, [10]):
        batch.process(t[:, sl], acc[:, sl], gyr[:, sl])
    per_device = (tracemalloc.get_traced_memory()[0] - before) / devices
    tracemalloc.stop()
    assert batch.calibrated.all()
    assert per_device < 64 * 1024


def test_the_benchmark_reports_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    r = run_bench(devices=12, seconds=2.0, block=10, warm_s=4.0)
    for value in (
        r.batch_samples_per_s,
        r.batch_without_falls_samples_per_s,
        r.single_us_per_sample,
    ):
        assert math.isfinite(value) and value > 0.0
    assert 0.0 < r.batch_memory_per_device_bytes < 64 * 1024
    assert bench_main(["--bench", "--devices", "9", "--seconds", "1", "--warm", "2"]) == 0
    assert "M samples/s" in capsys.readouterr().out


def motion_rows(m: Motion) -> tuple[np.ndarray, ...]:
    return m.t_s, m.acc_g, m.gyr_dps


# -- subsets of devices, devices joining, slots reused, per-device slouch rules --

SLOUCH_RULES = [
    SlouchSettings(dwell_s=5.0),
    SlouchSettings(dwell_s=3.0, threshold_deg=20.0, while_walking=False),
    SlouchSettings(dwell_s=8.0, threshold_deg=28.0, hysteresis_deg=8.0),
    SlouchSettings(dwell_s=4.0, lateral_threshold_deg=15.0, while_walking=False),
]


class _Slot:
    """A slot of the batch and the wearable it serves now, with its own engine."""

    def __init__(self, gyro: bool, stream: int, rule: SlouchSettings) -> None:
        self.stream = stream
        self.pos = 0
        self.engine = PostureEngine(replace(CONFIG[gyro], slouch=rule))


@pytest.mark.parametrize(
    ("gyro", "device_last"),
    [(True, False), (False, False), (True, True)],
    ids=["gyro", "acc_only", "gyro_device_last"],
)
def test_random_subsets_joins_and_reused_slots_give_each_wearable_its_own_results(
    gyro: bool, device_last: bool
) -> None:
    rng = np.random.default_rng(5 if gyro else 6)
    t_all, acc_all, gyr_all = WARD
    gyr_all = gyr_all.copy()
    acc_all = acc_all.copy()
    n_all = t_all.shape[1]
    batch = BatchEngine(CONFIG[gyro], 2)  # config.slouch: SLOUCH_RULES[0]
    slots = [_Slot(gyro, 0, SLOUCH_RULES[0]), _Slot(gyro, 1, SLOUCH_RULES[0])]
    next_stream = 2
    # Non-finite samples of some streams at some positions: those blocks drop.
    poisoned = {3: 900, 7: 1500}
    acc_all[3, 900, 1] = np.nan
    gyr_all[7, 1500, 0] = np.inf
    seen: set[PostureEventKind] = set()
    resets = joins = drops = 0
    ww_seen: set[bool] = set()
    for tick in range(2000):
        # Wearables join; a slot is handed to another wearable now and then.
        if next_stream < 10 and rng.random() < 0.03:
            rule = SLOUCH_RULES[next_stream % len(SLOUCH_RULES)]
            dev = batch.add_device(rule if next_stream % 2 else None)
            assert dev == len(slots)
            used = rule if next_stream % 2 else SLOUCH_RULES[0]
            slots.append(_Slot(gyro, next_stream, used))
            next_stream, joins = next_stream + 1, joins + 1
        if tick in (250, 600):  # streams 10 and 11 take over a slot
            dev = int(rng.integers(len(slots)))
            stream = 10 + resets
            rule = SLOUCH_RULES[(stream + 1) % len(SLOUCH_RULES)]
            batch.reset_device(dev, rule)
            slots[dev] = _Slot(gyro, stream, rule)
            resets += 1
        n = int(rng.choice([1, 5, 10, 10, 23]))
        ready = [d for d, s in enumerate(slots) if s.pos + n <= n_all]
        if not ready:
            break
        chosen = [d for d in ready if rng.random() < 0.6]
        if not chosen:
            continue
        order = rng.permutation(chosen)
        rows = [(slots[d].stream, slice(slots[d].pos, slots[d].pos + n)) for d in order]
        t = np.stack([t_all[k, sl] for k, sl in rows])
        acc = np.stack([acc_all[k, sl] for k, sl in rows])
        gyr = np.stack([gyr_all[k, sl] for k, sl in rows]) if gyro else None
        everyone = len(order) == len(slots) and (order == np.arange(len(slots))).all()
        subset = None if everyone else order
        if device_last:  # as the gateway's tick lays its arrays out
            out = batch.process_device_last(
                np.ascontiguousarray(t.T),
                np.ascontiguousarray(acc.transpose(1, 2, 0)),
                None if gyr is None else np.ascontiguousarray(gyr.transpose(1, 2, 0)),
                devices=subset,
            )
        else:
            out = batch.process(t, acc, gyr, devices=subset)
        np.testing.assert_array_equal(out.devices, order)
        for r, d in enumerate(order.tolist()):
            slot = slots[d]
            k, sl = rows[r]
            bad = k in poisoned and sl.start <= poisoned[k] < sl.stop
            if bad and not gyro and k == 7:
                bad = False  # only the gyroscope was poisoned
            if bad:
                with pytest.raises(SampleError):
                    slot.engine.process(t[r], acc[r], gyr[r] if gyro else None)  # type: ignore[index]
                assert out.dropped[r] and out.events[r] == ()
                drops += 1
            else:
                ref = slot.engine.process(t[r], acc[r], gyr[r] if gyro else None)  # type: ignore[index]
                assert not out.dropped[r]
                assert_same(out.device(r), ref)
                seen |= {e.kind for e in ref.events}
                if any(e.kind == PostureEventKind.SLOUCH_STARTED for e in ref.events):
                    ww_seen.add(slot.engine.config.slouch.while_walking)
            slot.pos += n
    assert joins >= 5 and resets == 2 and drops >= 1
    assert ww_seen == {True, False}  # slouches under both walking rules
    assert {
        PostureEventKind.CALIBRATED,
        PostureEventKind.SLOUCH_STARTED,
        PostureEventKind.SLOUCH_ENDED,
        PostureEventKind.FALL_DETECTED,
    } <= seen
    for d, slot in enumerate(slots):
        assert batch.stats(d) == slot.engine.stats
        assert_same_calibration(batch.calibration(d), slot.engine.calibration)
        assert batch.slouch_settings(d) == slot.engine.config.slouch


def test_a_reset_slot_forgets_everything_of_its_previous_wearable() -> None:
    t, acc, gyr = (x[:2] for x in WARD)
    batch = BatchEngine(CONFIG[True], 2)
    for sl in blocks(2000, [10]):
        batch.process(t[:, sl], acc[:, sl], gyr[:, sl])
    assert batch.calibration(1) is not None and batch.stats(1).samples == 2000
    batch.request_calibration(1)
    batch.reset_device(1)
    assert batch.calibration(1) is None and batch.stats(1) == PostureEngine(CONFIG[True]).stats
    assert batch.calibration(0) is not None and batch.stats(0).samples == 2000
    # The new wearable's clock starts again at 0 without counting a reset.
    fresh = PostureEngine(CONFIG[True])
    for sl in blocks(1500, [10]):
        out = batch.process(t[1:, sl], acc[1:, sl], gyr[1:, sl], devices=[1])
        assert_same(out.device(0), fresh.process(t[1, sl], acc[1, sl], gyr[1, sl]))
    assert batch.stats(1) == fresh.stats and batch.stats(1).clock_resets == 0


def test_a_new_slouch_rule_applies_from_the_next_sample() -> None:
    # A slouched sitter under a 1000 s dwell: no alert; with a 5 s dwell the
    # count already run (from the calibration on) starts the slouch at once.
    flex = keyframes([(0, 0), (6, 0), (8, 40), (60, 40)])
    m = synthesize(60.0, FS, flex)
    batch = BatchEngine(CONFIG[True], 0)
    dev = batch.add_device(SlouchSettings(dwell_s=1000.0))
    kinds: list[PostureEventKind] = []
    for k, sl in enumerate(blocks(m.t_s.size, [10])):
        if k == 200:  # 40 s
            assert PostureEventKind.SLOUCH_STARTED not in kinds
            batch.set_slouch_settings(dev, SlouchSettings(dwell_s=5.0))
        out = batch.process(m.t_s[None, sl], m.acc_g[None, sl], m.gyr_dps[None, sl], [dev])
        kinds += [e.kind for e in out.events[0]]
        if k == 200:
            assert PostureEventKind.SLOUCH_STARTED in kinds
    assert batch.slouch_settings(dev) == SlouchSettings(dwell_s=5.0)


def test_adding_devices_one_by_one_doubles_the_capacity() -> None:
    batch = BatchEngine(CONFIG[True], 0)
    capacities = set()
    for k in range(2000):
        assert batch.add_device() == k
        capacities.add(batch._core.capacity)
    # Amortised growth: the state was reallocated log2(2000) times, not 2000.
    assert capacities == {2**i for i in range(12)}
    assert batch.devices == 2000
    t, acc, gyr = (x[:3, :20] for x in WARD)
    out = batch.process(t, acc, gyr, devices=[1999, 0, 1000])
    assert out.flexion_deg.shape == (3, 20)
    assert batch.stats(1999).samples == 20 and batch.stats(1).samples == 0


@pytest.mark.parametrize(
    ("devices", "message"),
    [([0, 0], "distinct"), ([0, 5], "indices in 0..2"), ([[0, 1]], "1-D"), ([0.5], "1-D")],
)
def test_bad_device_lists_are_refused(devices: object, message: str) -> None:
    batch = BatchEngine(CONFIG[True], 3)
    t, acc, gyr = (x[:2, :10] for x in WARD)
    with pytest.raises(ValueError, match=message):
        batch.process(t, acc, gyr, devices=devices)  # type: ignore[arg-type]
    for call in (
        lambda: batch.reset_device(3),
        lambda: batch.request_calibration(3),
        lambda: batch.set_slouch_settings(-1, SlouchSettings()),
        lambda: batch.stats(3),
    ):
        with pytest.raises(IndexError):
            call()
    assert batch.stats(0).blocks == 0


@pytest.mark.parametrize("devices", [4, 12], ids=["loop", "array_steps"])
def test_each_device_follows_its_own_slouch_rule_in_one_batch(devices: int) -> None:
    # Slouched, then walking hunched: whether the slouch goes on while
    # walking, and its threshold and dwell, differ per device. Above 8
    # devices the slouch detector steps arrays instead of looping.
    m = walking_hunched(start_s=20.0)
    rules = [
        SlouchSettings(
            dwell_s=(4.0, 7.0, 5.0)[d % 3],
            threshold_deg=(25.0, 30.0)[d % 2],
            while_walking=d % 4 < 2,
        )
        for d in range(devices)
    ]
    batch = BatchEngine(CONFIG[True], 0)
    for rule in rules:
        batch.add_device(rule)
    singles = [PostureEngine(replace(CONFIG[True], slouch=rule)) for rule in rules]
    ended = [False] * devices
    for sl in blocks(m.t_s.size, [10, 7]):
        rows = (np.stack([x[sl]] * devices) for x in (m.t_s, m.acc_g, m.gyr_dps))
        out = batch.process(*rows)
        for d, engine in enumerate(singles):
            ref = engine.process(m.t_s[sl], m.acc_g[sl], m.gyr_dps[sl])
            assert_same(out.device(d), ref)
            ended[d] |= any(e.kind == PostureEventKind.SLOUCH_ENDED for e in ref.events)
    # Walking ends the slouch exactly for the devices whose rule says so.
    assert ended == [not rule.while_walking for rule in rules]

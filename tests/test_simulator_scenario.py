"""Scenario files: loading, validation errors, the demo ward, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.errors import ConfigError
from device_gateway.protocol import decode_imu_packet
from simulator import (
    SimulatedWearable,
    builtin_scenario_path,
    builtin_scenarios,
    demo_scenario,
    load_scenario,
    parse_scenario,
)
from simulator.emissions import Notification

MINIMAL = """
[[patients]]
id = "p-1"
[patients.wearable]
address = "C0:FF:EE:00:00:01"
[[patients.timeline]]
at_s = 0.0
activity = "sit"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ward.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_minimal_scenario_gets_defaults(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, MINIMAL))
    assert scenario.name == "ward" and scenario.duration_s is None
    (patient,) = scenario.patients
    assert patient.wearable.local_name == "PW-0001"
    assert patient.wearable.sample_rate_hz == 50 and patient.wearable.samples_per_packet == 10
    assert patient.wearable.has_gyro


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('activity = "sit"', 'activity = "sitt"'), r"timeline\[0\]\.activity: expected one of"),
        (
            ("at_s = 0.0", "at_s = 0.0\nflexion_deg = 99"),
            r"timeline\[0\]\.flexion_deg: expected a number",
        ),
        (("at_s = 0.0", "at_s = 0.0\nwobble = 1"), r"timeline\[0\]\.wobble: unknown key"),
        (("at_s = 0.0", 'at_s = "zero"'), r"timeline\[0\]\.at_s: expected a number"),
        (("at_s = 0.0", "at_s = 2.0"), r"timeline\[0\]: the first activity must start at at_s = 0"),
        (('"C0:FF:EE:00:00:01"', '"C0:FF:EE:00:01"'), r"patients\[0\]\.wearable\.address"),
        (
            ("[patients.wearable]", "[patients.wearable]\nsample_rate_hz = 60"),
            r"wearable\.sample_rate_hz: expected one of \[25, 50, 100, 200\]",
        ),
        (
            ("[patients.wearable]", "[patients.wearable]\nsamples_per_packet = 20"),
            r"patients\[0\]\.wearable: samples_per_packet: 20 samples do not fit",
        ),
        (("[patients.wearable]", '[patients.wearable]\nmodel = "imu9"'), r"wearable\.model"),
        (
            (
                '"C0:FF:EE:00:00:01"',
                '"C0:FF:EE:00:00:01"\n[patients.wearable.mounting]\ntilt_deg = 80',
            ),
            r"wearable\.mounting\.tilt_deg",
        ),
        (('activity = "sit"', 'activity = "sit"\nfault = "reboot"'), r"exactly one of"),
        (('id = "p-1"', 'id = "p 1"'), r"patients\[0\]\.id"),
        (('id = "p-1"', ""), r"patients\[0\]\.id: required key is missing"),
    ],
)
def test_errors_name_the_file_and_the_key(
    tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    path = write(tmp_path, MINIMAL.replace(*edit))
    with pytest.raises(ConfigError, match=message) as info:
        load_scenario(path)
    assert str(info.value).startswith(str(path))


def test_impossible_sequences_are_rejected_at_load(tmp_path: Path) -> None:
    text = (
        MINIMAL
        + """
[[patients.timeline]]
at_s = 5.0
fault = "disconnect"
[[patients.timeline]]
at_s = 10.0
activity = "lie_down"
[[patients.timeline]]
at_s = 20.0
activity = "squat"
"""
    )
    with pytest.raises(ConfigError, match=r"patients\[0\]\.timeline\[3\]: squat needs a standing"):
        load_scenario(write(tmp_path, text))
    # A fall from lying is a fall out of bed (it loads); an impact softer than
    # the descent itself cannot be reached, and the scenario is refused.
    out_of_bed = text.replace('activity = "squat"', 'activity = "fall"')
    assert load_scenario(write(tmp_path, out_of_bed)).patients[0].activities[-1].KIND == "fall"
    too_soft = out_of_bed.replace('activity = "fall"', 'activity = "fall"\nimpact_g = 1.2')
    with pytest.raises(ConfigError, match=r"timeline\[3\]: fall: cannot land with a 1.2 g impact"):
        load_scenario(write(tmp_path, too_soft))
    unordered = MINIMAL + '[[patients.timeline]]\nat_s = 0.0\nactivity = "stand"\n'
    with pytest.raises(ConfigError, match=r"timeline\[1\]\.at_s: activities must be in increasing"):
        load_scenario(write(tmp_path, unordered))


def test_duplicates_and_file_problems(tmp_path: Path) -> None:
    twice = MINIMAL + MINIMAL.replace('"p-1"', '"p-2"')
    with pytest.raises(ConfigError, match=r"patients\[1\]\.wearable\.address: duplicate"):
        load_scenario(write(tmp_path, twice))
    with pytest.raises(ConfigError, match=r"patients\[1\]\.id: duplicate"):
        load_scenario(write(tmp_path, MINIMAL + MINIMAL.replace(":01", ":02")))
    with pytest.raises(ConfigError, match="cannot read"):
        load_scenario(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_scenario(write(tmp_path, "[[patients]\n"))
    with pytest.raises(ConfigError, match="patients: expected at least one"):
        parse_scenario({"scenario": {"name": "x"}}, source="mem")


def test_builtin_scenarios_load_and_compile() -> None:
    assert {"demo", "falls", "faults"} <= set(builtin_scenarios())
    for name in builtin_scenarios():
        scenario = load_scenario(builtin_scenario_path(name))
        for index, patient in enumerate(scenario.patients):
            SimulatedWearable(patient, index=index, seed=0)  # compiles every timeline


def _longest_run_s(mask: np.ndarray, dt: float) -> float:
    best = run = 0
    for value in mask:
        run = run + 1 if value else 0
        best = max(best, run)
    return best * dt


def test_demo_roles_slouch_fall_and_control() -> None:
    scenario = demo_scenario()
    assert [p.id for p in scenario.patients] == ["p-001", "p-002", "p-003"]
    t = np.arange(0.0, 120.0, 0.1)
    slouch, faller, control = (
        SimulatedWearable(p, index=i, seed=0).truth(t) for i, p in enumerate(scenario.patients)
    )
    # Slouches beyond 25° for well over a 10 s (and a 30 s) dwell, within the first minute.
    first_minute = t < 60.0
    assert _longest_run_s(slouch.flexion_deg[first_minute] > 25.0, 0.1) > 30.0
    assert not slouch.falls
    # Walks, then falls forward at ~35 s and lies still.
    (fall,) = faller.falls
    assert fall.direction == "forward" and fall.origin == "walking"
    assert 35.0 <= fall.impact_s <= 36.5
    assert "walk" in set(faller.activity[t < 35.0])
    assert set(faller.activity[t > fall.impact_s + 1.0]) == {"lying"}
    # The control walks and bends briefly, never slouches for long, never falls.
    assert not control.falls
    assert {"walk", "bend", "sit", "stand"} <= set(control.activity)
    assert _longest_run_s(control.flexion_deg > 25.0, 0.1) < 8.0
    assert np.abs(control.lateral_deg).max() < 20.0
    assert scenario.patients[2].wearable.has_gyro is False


def test_demo_ward_of_any_size() -> None:
    ward = demo_scenario(8)
    addresses = [p.wearable.address for p in ward.patients]
    assert len(set(addresses)) == 8 and addresses[7] == "C0:FF:EE:00:00:08"
    assert [p.id for p in ward.patients][-1] == "p-008"
    names = [p.wearable.local_name for p in ward.patients]
    assert len(set(names)) == 8 and all(n.startswith("PW-") for n in names)
    spins = {p.wearable.mounting.spin_deg for p in ward.patients}
    assert len(spins) > 3
    t = np.arange(0.0, 80.0, 0.1)
    fallers = [
        i
        for i, p in enumerate(ward.patients)
        if SimulatedWearable(p, index=i, seed=0).truth(t).falls
    ]
    assert fallers == [1, 4, 7]  # roles cycle: slouch, fall, control
    big = demo_scenario(300)
    assert big.patients[299].wearable.address == "C0:FF:EE:00:01:2C"
    with pytest.raises(ValueError):
        demo_scenario(0)


def _run(wearable: SimulatedWearable, steps_s: np.ndarray) -> list[tuple[float, bytes]]:
    out: list[tuple[float, bytes]] = []
    for now in steps_s:
        for emission in wearable.advance(float(now), streaming=True):
            if isinstance(emission, Notification):
                out.append((emission.t_s, emission.data))
    return out


def test_same_seed_same_packets_at_the_same_times_however_time_advances() -> None:
    patient = load_scenario(builtin_scenario_path("faults")).patients[2]  # loss, corruption, flood
    fine = _run(SimulatedWearable(patient, index=2, seed=42), np.arange(0.0, 70.0, 0.013))
    coarse = _run(SimulatedWearable(patient, index=2, seed=42), np.arange(0.0, 70.0, 0.77))
    n = len(coarse)
    assert n > 1300  # ~350 packets and 1000 duplicates of the flood
    assert [t for t, _ in fine[:n]] == pytest.approx([t for t, _ in coarse])
    assert [d for _, d in fine[:n]] == [d for _, d in coarse]
    other = _run(SimulatedWearable(patient, index=2, seed=43), np.arange(0.0, 70.0, 0.77))
    assert [d for _, d in other[:50]] != [d for _, d in fine[:50]]
    first = decode_imu_packet(fine[0][1])
    assert first.sequence == 0 and first.t0_ms == 0

"""Scenarios shipped with the package, and the demo ward of any size.

``simulator/scenarios/demo.toml`` holds three patients: one who slouches,
one who falls, and a control who does neither. :func:`demo_scenario` builds
a ward of ``patients`` patients by cycling through those roles, each copy
with its own address, id, mounting, random numbers and a small time offset.
"""

from __future__ import annotations

from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import TypeVar

from simulator.config import Mounting, Patient, Scenario
from simulator.loader import load_scenario
from simulator.specs import ActivitySpec, FaultSpec

__all__ = ["MAX_DEMO_PATIENTS", "builtin_scenario_path", "builtin_scenarios", "demo_scenario"]

MAX_DEMO_PATIENTS = 9999
_SPIN_OFFSETS_DEG = (0.0, 9.0, -11.0, 4.0, -6.0, 13.0, -3.0)


def builtin_scenarios() -> list[str]:
    """Names of the scenario files shipped with the package."""
    folder = resources.files("simulator") / "scenarios"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def builtin_scenario_path(name: str) -> Path:
    """Path of a shipped scenario (``"demo"``, ``"faults"``, ``"falls"``).

    Raises:
        KeyError: no such scenario.
    """
    if name not in builtin_scenarios():
        raise KeyError(f"no built-in scenario {name!r}; have {builtin_scenarios()}")
    return Path(str(resources.files("simulator") / "scenarios" / f"{name}.toml"))


def demo_scenario(patients: int = 3) -> Scenario:
    """The demo ward with ``patients`` patients (1..9999).

    Patients ``p-001``.. at ``C0:FF:EE:00:00:01``..; roles cycle slouching,
    falling, control. The first three are exactly those of demo.toml.

    Raises:
        ValueError: ``patients`` out of range.
    """
    if not 1 <= patients <= MAX_DEMO_PATIENTS:
        raise ValueError(f"patients must be 1..{MAX_DEMO_PATIENTS}, got {patients}")
    template = load_scenario(builtin_scenario_path("demo"))
    roles = template.patients
    ward = [
        roles[i] if i < len(roles) else _copy(roles[i % len(roles)], i, i // len(roles))
        for i in range(patients)
    ]
    return replace(template, patients=tuple(ward))


def _copy(role: Patient, index: int, cycle: int) -> Patient:
    number = index + 1
    address = f"C0:FF:EE:00:{number >> 8:02X}:{number & 0xFF:02X}"
    mount = role.wearable.mounting
    # Placed by hand with the puck's "up" marking roughly toward the head.
    mounting = Mounting(
        spin_deg=(mount.spin_deg + _SPIN_OFFSETS_DEG[cycle % len(_SPIN_OFFSETS_DEG)]) % 360.0,
        tilt_deg=max(-45.0, min(45.0, mount.tilt_deg + 4.0 * (cycle % 3 - 1))),
        yaw_deg=mount.yaw_deg,
    )
    wearable = replace(role.wearable, address=address, name=None, mounting=mounting)
    # Spread the copies' events a little so a large ward's alerts do not all
    # land in the same second.
    offset_s = 1.3 * (cycle % 7)
    activities: tuple[ActivitySpec, ...] = tuple(_shift(a, offset_s) for a in role.activities)
    faults: tuple[FaultSpec, ...] = tuple(_shift(f, offset_s) for f in role.faults)
    return Patient(f"p-{number:03d}", wearable, activities, faults, seed=index)


_Spec = TypeVar("_Spec", ActivitySpec, FaultSpec)


def _shift(spec: _Spec, offset_s: float) -> _Spec:
    return spec if spec.at_s == 0.0 else replace(spec, at_s=spec.at_s + offset_s)

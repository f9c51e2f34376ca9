"""Load and validate scenario files (TOML, format in docs/scenarios.md).

Everything is checked at load time, including whether each patient's
activities can follow one another, so a scenario that loads also runs.
Errors are :class:`~common.errors.ConfigError` naming the file and
the key, e.g. ``demo.toml: patients[1].timeline[2].flexion_deg: expected a
number in 0.0..90.0, got 140``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import ConfigError
from simulator.choreography import ChoreographyError, compile_choreography
from simulator.config import Patient, Scenario, WearableConfig
from simulator.fields import Where, build, integer, number, text
from simulator.specs import ACTIVITIES, FAULTS, ActivitySpec, FaultSpec

__all__ = ["load_scenario", "parse_scenario"]


@dataclass(frozen=True, slots=True, kw_only=True)
class _ScenarioTable:
    name: str | None = text(None, pattern=r"[\w .-]{1,64}")
    description: str = text("")
    duration_s: float | None = number(None, lo=0.1, hi=30 * 86_400.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class _PatientTable:
    id: str = text(pattern=r"[A-Za-z0-9_.-]{1,64}")
    seed: int | None = integer(None, lo=0, hi=2**32 - 1)


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Read and validate a scenario file.

    Raises:
        ConfigError: the file cannot be read, is not TOML, or does not
            describe a valid scenario (the message names file and key).
    """
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read scenario: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
    return parse_scenario(data, source=str(file), default_name=file.stem)


def parse_scenario(
    data: Mapping[str, Any], *, source: str = "<memory>", default_name: str = "scenario"
) -> Scenario:
    """Validate the parsed TOML ``data`` of a scenario (see :func:`load_scenario`)."""
    where = Where(source)
    for key in data:
        if key not in ("scenario", "patients"):
            raise where.key(key).error("unknown key (expected one of: patients, scenario)")
    meta = build(_ScenarioTable, data.get("scenario", {}), where.key("scenario"))
    raw_patients = data.get("patients")
    if not isinstance(raw_patients, list) or not raw_patients:
        raise where.key("patients").error("expected at least one [[patients]] table")
    patients = tuple(
        _parse_patient(raw, where.key("patients").key(i)) for i, raw in enumerate(raw_patients)
    )
    seen_ids: dict[str, int] = {}
    seen_addresses: dict[str, int] = {}
    for i, patient in enumerate(patients):
        here = where.key("patients").key(i)
        if patient.id in seen_ids:
            raise here.key("id").error(
                f"duplicate patient id {patient.id!r} (also patients[{seen_ids[patient.id]}])"
            )
        seen_ids[patient.id] = i
        address = patient.wearable.address.upper()
        if address in seen_addresses:
            raise (
                here.key("wearable")
                .key("address")
                .error(f"duplicate address {address} (also patients[{seen_addresses[address]}])")
            )
        seen_addresses[address] = i
    return Scenario(
        name=meta.name or default_name,
        patients=patients,
        duration_s=meta.duration_s,
        description=meta.description,
        source=source,
    )


def _parse_patient(raw: object, where: Where) -> Patient:
    if not isinstance(raw, Mapping):
        raise where.error("expected a table")
    rest = {k: v for k, v in raw.items() if k not in ("wearable", "timeline")}
    table = build(_PatientTable, rest, where)
    if "wearable" not in raw:
        raise where.key("wearable").error("required table is missing")
    wearable = build(WearableConfig, raw["wearable"], where.key("wearable"))
    timeline = raw.get("timeline")
    if not isinstance(timeline, list) or not timeline:
        raise where.key("timeline").error("expected at least one [[patients.timeline]] entry")
    activities: list[ActivitySpec] = []
    faults: list[FaultSpec] = []
    positions: list[int] = []  # timeline index of each activity, for messages
    for j, entry in enumerate(timeline):
        here = where.key("timeline").key(j)
        spec = _parse_entry(entry, here)
        if isinstance(spec, tuple(FAULTS.values())):
            faults.append(spec)  # type: ignore[arg-type]
            continue
        if activities and spec.at_s <= activities[-1].at_s:
            raise here.key("at_s").error(
                f"activities must be in increasing at_s (the previous one is at "
                f"{activities[-1].at_s} s)"
            )
        activities.append(spec)  # type: ignore[arg-type]
        positions.append(j)
    if not activities:
        raise where.key("timeline").error("needs at least one activity (sit, stand, ...)")
    try:
        compile_choreography(activities, rng=np.random.default_rng(0))
    except ChoreographyError as exc:
        index = positions[min(exc.index, len(positions) - 1)]
        raise where.key("timeline").key(index).error(str(exc)) from exc
    faults.sort(key=lambda f: f.at_s)
    return Patient(table.id, wearable, tuple(activities), tuple(faults), table.seed)


def _parse_entry(entry: object, where: Where) -> ActivitySpec | FaultSpec:
    if not isinstance(entry, Mapping):
        raise where.error("expected a table")
    has_activity, has_fault = "activity" in entry, "fault" in entry
    if has_activity == has_fault:
        raise where.error("needs exactly one of the keys 'activity' and 'fault'")
    key = "activity" if has_activity else "fault"
    registry: Mapping[str, type[Any]] = ACTIVITIES if has_activity else FAULTS
    name = entry[key]
    if name not in registry:
        raise where.key(key).error(f"expected one of {sorted(registry)}, got {name!r}")
    params = {k: v for k, v in entry.items() if k != key}
    spec: ActivitySpec | FaultSpec = build(registry[name], params, where)
    return spec

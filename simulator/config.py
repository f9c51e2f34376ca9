"""Frozen settings of a simulated ward: scenario, patients, wearables.

Field defaults are those of a typical wearable; docs/scenarios.md lists
every key with its unit and range.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from device_gateway.protocol import SUPPORTED_SAMPLE_RATES_HZ, AccRange, max_samples_per_packet
from simulator.fields import choice, integer, number, table, text
from simulator.specs import ActivitySpec, FaultSpec

__all__ = [
    "ADDRESS_PATTERN",
    "Mounting",
    "Patient",
    "Scenario",
    "SensorErrors",
    "WearableConfig",
    "WearableModel",
    "default_name",
]

ADDRESS_PATTERN = r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}"
"""A Bluetooth device address as bleak prints it on Linux: six hex bytes."""


class WearableModel(enum.StrEnum):
    """Hardware variants: with a gyroscope (6-axis IMU) or accelerometer only."""

    ACC_GYRO = "acc_gyro"
    ACC_ONLY = "acc_only"


@dataclass(frozen=True, slots=True, kw_only=True)
class Mounting:
    """How the puck sits on the back, relative to the nominal mounting.

    ``spin_deg``: rotation about the skin normal (device +z), right-handed,
    0..360. ``tilt_deg``: the face tipped about the patient's left-right axis,
    + when the outward normal points up as well as backward (a rounded
    upper back). ``yaw_deg``: the face turned about the trunk's long axis,
    + when the normal points toward the patient's left (the puck placed over
    a shoulder blade); calibration cannot remove this one.
    """

    spin_deg: float = number(0.0, lo=0.0, hi=360.0)
    tilt_deg: float = number(0.0, lo=-45.0, hi=45.0)
    yaw_deg: float = number(0.0, lo=-30.0, hi=30.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class SensorErrors:
    """Sensor imperfections; set any to 0 to remove it.

    White noise is given as a density, so its per-sample standard deviation
    grows with the bandwidth (half the sample rate). Biases are standard
    deviations of the per-axis values drawn for each wearable from the seed;
    the gyroscope bias also warms up after power-on and wanders slowly by
    about ``gyr_drift_dps``.
    """

    acc_noise_ug_rthz: float = number(150.0, lo=0.0, hi=10_000.0)
    acc_bias_g: float = number(0.01, lo=0.0, hi=0.5)
    gyr_noise_dps_rthz: float = number(0.015, lo=0.0, hi=10.0)
    gyr_bias_dps: float = number(0.6, lo=0.0, hi=50.0)
    gyr_drift_dps: float = number(0.15, lo=0.0, hi=20.0)

    @classmethod
    def none(cls) -> SensorErrors:
        """An ideal sensor: only quantisation and range clipping remain."""
        return cls(
            acc_noise_ug_rthz=0.0,
            acc_bias_g=0.0,
            gyr_noise_dps_rthz=0.0,
            gyr_bias_dps=0.0,
            gyr_drift_dps=0.0,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class WearableConfig:
    """One wearable: its radio identity, sensor, link and power behaviour."""

    address: str = text(pattern=ADDRESS_PATTERN)
    name: str | None = text(None, pattern=r"PW-[\x20-\x7e]{1,16}")
    model: str = choice(WearableModel.ACC_GYRO.value, tuple(m.value for m in WearableModel))
    sample_rate_hz: int = integer(50, options=SUPPORTED_SAMPLE_RATES_HZ)
    samples_per_packet: int = integer(10, lo=1, hi=max_samples_per_packet(False))
    acc_range_g: int = integer(8, options=tuple(int(r) for r in AccRange))
    gyr_range_dps: int = integer(2000, options=(125, 250, 500, 1000, 2000))
    """Gyroscope full scale: rates beyond it read as the full-scale value."""
    # table() is a dataclasses.field with a default_factory, not a shared default.
    mounting: Mounting = table(Mounting)  # noqa: RUF009
    errors: SensorErrors = table(SensorErrors)  # noqa: RUF009
    battery_pct: float = number(100.0, lo=0.5, hi=100.0)
    battery_drain_pct_per_h: float = number(2.0, lo=0.0, hi=360_000.0)
    rssi_dbm: int = integer(-62, lo=-100, hi=-20)
    packet_loss: float = number(0.0, lo=0.0, hi=1.0)
    corruption: float = number(0.0, lo=0.0, hi=1.0)
    connect_failure: float = number(0.0, lo=0.0, hi=1.0)
    connect_delay_s: float = number(0.3, lo=0.0, hi=10.0)
    supervision_timeout_s: float = number(0.5, lo=0.1, hi=32.0)
    clock_start_ms: int = integer(0, lo=0, hi=2**32 - 1)
    sequence_start: int = integer(0, lo=0, hi=2**16 - 1)
    clock_drift_ppm: float = number(0.0, lo=-500.0, hi=500.0)
    firmware: str = text("1.4.2", pattern=r"[\x20-\x7e]{1,20}")

    def __post_init__(self) -> None:
        limit = max_samples_per_packet(self.has_gyro)
        if self.samples_per_packet > limit:
            raise ValueError(
                f"samples_per_packet: {self.samples_per_packet} samples do not fit one "
                f"{self.model} packet (at most {limit})"
            )

    @property
    def has_gyro(self) -> bool:
        return self.model == WearableModel.ACC_GYRO

    @property
    def acc_range(self) -> AccRange:
        return AccRange(self.acc_range_g)

    @property
    def local_name(self) -> str:
        """The advertised local name ("PW-" and the address's last two bytes)."""
        return self.name if self.name is not None else default_name(self.address)


def default_name(address: str) -> str:
    """``"C0:FF:EE:00:00:01"`` -> ``"PW-0001"``."""
    if not re.fullmatch(ADDRESS_PATTERN, address):
        raise ValueError(f"not a Bluetooth address: {address!r}")
    return "PW-" + address.replace(":", "")[-4:].upper()


@dataclass(frozen=True, slots=True)
class Patient:
    """One patient: the wearable and the timeline of activities and faults.

    ``activities`` are in increasing ``at_s`` and the first is at 0;
    ``faults`` are sorted by ``at_s``. ``seed`` (if given) replaces the
    patient's position in the scenario when deriving its random numbers, so
    the patient behaves the same wherever it is listed.
    """

    id: str
    wearable: WearableConfig
    activities: tuple[ActivitySpec, ...]
    faults: tuple[FaultSpec, ...] = ()
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    """A simulated ward: patients, each with a wearable and a timeline.

    ``duration_s`` is how long the scenario is meant to run (None: open
    ended); the simulation itself keeps going, every patient holding the
    last activity. ``source`` names the file it came from, for messages.
    """

    name: str
    patients: tuple[Patient, ...]
    duration_s: float | None = None
    description: str = ""
    source: str = "<memory>"

    def patient(self, patient_id: str) -> Patient:
        """The patient with that id. Raises KeyError if there is none."""
        for patient in self.patients:
            if patient.id == patient_id:
                return patient
        raise KeyError(patient_id)

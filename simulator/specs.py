"""What a scenario timeline may contain: activities and faults, with parameters.

Each timeline entry of a scenario file becomes one of these frozen
dataclasses. ``at_s`` is the scenario time (seconds from the start of the
simulation) at which the entry begins. Angles follow docs/scenarios.md:
``flexion_deg`` + forward, ``lateral_deg`` + to the patient's right, both
inclinations of the trunk from the true vertical.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from simulator.fields import choice, flag, number

__all__ = [
    "ACTIVITIES",
    "FAULTS",
    "ActivitySpec",
    "BatteryDrainSpec",
    "BendSpec",
    "CorruptionSpec",
    "DisconnectSpec",
    "FallSpec",
    "FaultSpec",
    "FloodSpec",
    "GetUpSpec",
    "LeanSpec",
    "LieDownSpec",
    "PacketLossSpec",
    "RebootSpec",
    "SitDownSpec",
    "SitSpec",
    "SlouchSpec",
    "SquatSpec",
    "StandSpec",
    "WalkSpec",
]

_DAY_S = 86_400.0


@dataclass(frozen=True, slots=True, kw_only=True)
class SitSpec:
    """Sit upright and still (transferring from standing or lying first)."""

    KIND: ClassVar[str] = "sit"
    at_s: float = number(lo=0.0)
    flexion_deg: float = number(0.0, lo=-20.0, hi=30.0)
    lateral_deg: float = number(0.0, lo=-20.0, hi=20.0)
    transition_s: float = number(1.5, lo=0.2, hi=10.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class StandSpec:
    """Stand upright and still (standing up first when sitting or lying)."""

    KIND: ClassVar[str] = "stand"
    at_s: float = number(lo=0.0)
    flexion_deg: float = number(0.0, lo=-20.0, hi=30.0)
    lateral_deg: float = number(0.0, lo=-20.0, hi=20.0)
    transition_s: float = number(1.5, lo=0.2, hi=10.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class SlouchSpec:
    """Slump forward while sitting or standing.

    Reaches ``flexion_deg`` in ``onset_s``; after ``duration_s`` at that angle
    (if given) returns to the previous upright posture, again in ``onset_s``.
    """

    KIND: ClassVar[str] = "slouch"
    at_s: float = number(lo=0.0)
    flexion_deg: float = number(35.0, lo=0.0, hi=90.0)
    lateral_deg: float = number(0.0, lo=-45.0, hi=45.0)
    onset_s: float = number(3.0, lo=0.2, hi=120.0)
    duration_s: float | None = number(None, lo=0.0, hi=_DAY_S)


@dataclass(frozen=True, slots=True, kw_only=True)
class LeanSpec:
    """Lean sideways (+ right) while sitting or standing; like a slouch."""

    KIND: ClassVar[str] = "lean"
    at_s: float = number(lo=0.0)
    lateral_deg: float = number(20.0, lo=-60.0, hi=60.0)
    flexion_deg: float | None = number(None, lo=-20.0, hi=60.0)
    onset_s: float = number(2.0, lo=0.2, hi=120.0)
    duration_s: float | None = number(None, lo=0.0, hi=_DAY_S)


@dataclass(frozen=True, slots=True, kw_only=True)
class WalkSpec:
    """Walk (standing up first if needed); stands still after ``duration_s``.

    Accelerations are amplitudes of the step-frequency components at the
    upper back: vertical and antero-posterior at ``step_hz``, medio-lateral
    at the stride frequency ``step_hz / 2``.
    """

    KIND: ClassVar[str] = "walk"
    at_s: float = number(lo=0.0)
    duration_s: float | None = number(None, lo=2.0, hi=_DAY_S)
    step_hz: float = number(1.8, lo=1.0, hi=2.6)
    vertical_g: float = number(0.3, lo=0.0, hi=0.8)
    ap_g: float = number(0.2, lo=0.0, hi=0.6)
    ml_g: float = number(0.1, lo=0.0, hi=0.4)
    lean_deg: float = number(4.0, lo=-10.0, hi=45.0)
    sway_deg: float = number(2.5, lo=0.0, hi=10.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class BendSpec:
    """Bend down (e.g. to pick something up) and come back up."""

    KIND: ClassVar[str] = "bend"
    at_s: float = number(lo=0.0)
    flexion_deg: float = number(80.0, lo=20.0, hi=120.0)
    down_s: float = number(1.5, lo=0.3, hi=10.0)
    hold_s: float = number(1.5, lo=0.0, hi=60.0)
    up_s: float = number(1.5, lo=0.3, hi=10.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class SitDownSpec:
    """Sit down from standing; ``hard`` drops onto the seat with an impact.

    ``impact_g`` (hard only) is the peak acceleration magnitude when the
    patient lands on the seat, gravity included.
    """

    KIND: ClassVar[str] = "sit_down"
    at_s: float = number(lo=0.0)
    style: str = choice("gentle", ("gentle", "hard"))
    duration_s: float = number(2.0, lo=0.8, hi=10.0)
    impact_g: float = number(2.2, lo=1.2, hi=4.0)
    seat_height_m: float = number(0.45, lo=0.2, hi=0.8)
    """Seat height above the floor; the pelvis drops 0.9 m minus this."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SquatSpec:
    """Squat down from standing (knees bend, pelvis drops), hold, stand up again.

    ``flexion_deg`` is the trunk's forward lean at the bottom, ``depth_m``
    how far the pelvis goes down.
    """

    KIND: ClassVar[str] = "squat"
    at_s: float = number(lo=0.0)
    flexion_deg: float = number(30.0, lo=0.0, hi=60.0)
    depth_m: float = number(0.4, lo=0.1, hi=0.6)
    down_s: float = number(1.5, lo=0.5, hi=10.0)
    hold_s: float = number(1.0, lo=0.0, hi=60.0)
    up_s: float = number(1.5, lo=0.5, hi=10.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class LieDownSpec:
    """Lie down (sitting down first when standing)."""

    KIND: ClassVar[str] = "lie_down"
    at_s: float = number(lo=0.0)
    position: str = choice("supine", ("supine", "prone", "left", "right"))
    duration_s: float = number(3.0, lo=1.0, hi=20.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class GetUpSpec:
    """Get up from lying (or stand up from sitting) to ``to``."""

    KIND: ClassVar[str] = "get_up"
    at_s: float = number(lo=0.0)
    to: str = choice("stand", ("stand", "sit"))
    duration_s: float = number(3.5, lo=1.5, hi=30.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class FallSpec:
    """Fall from standing, walking, sitting or lying (out of bed) to the floor.

    ``impact_g`` is the peak magnitude of the acceleration at the impact as a
    200 Hz sensor without filtering would see it; the simulator reaches it
    or refuses the scenario (a descent whose own motion is harder than the
    impact asked for). ``descent_s`` (onset to impact) defaults to 0.8 s
    from standing, 0.75 s while walking, 0.7 s from sitting and 0.8 s from
    lying; longer than 1.5 s is a slow collapse (the pelvis sinks
    ``height_m`` instead of dropping in partial free fall). ``height_m``:
    the drop of the pelvis (standing or walking, 1.0), the seat (sitting,
    0.45) or the bed (lying, 0.5) above the floor. ``end``: lying on the
    floor with small motions until the next activity (e.g. ``get_up``),
    sitting on the floor (a later ``lie_down`` makes a two-stage fall), or
    half reclined, 50° from upright toward the fall (against a tipped chair).
    """

    KIND: ClassVar[str] = "fall"
    at_s: float = number(lo=0.0)
    direction: str = choice("forward", ("forward", "backward", "left", "right"))
    impact_g: float = number(5.0, lo=1.2, hi=12.0)
    descent_s: float | None = number(None, lo=0.25, hi=5.0)
    height_m: float | None = number(None, lo=0.2, hi=1.2)
    end: str = choice("lying", ("lying", "sitting", "reclined"))


@dataclass(frozen=True, slots=True, kw_only=True)
class DisconnectSpec:
    """The link drops: the wearable goes out of range for ``duration_s``."""

    KIND: ClassVar[str] = "disconnect"
    at_s: float = number(lo=0.0)
    duration_s: float = number(10.0, lo=0.05, hi=_DAY_S)


@dataclass(frozen=True, slots=True, kw_only=True)
class RebootSpec:
    """The wearable resets: off for ``down_s``, then sequence and clock from 0."""

    KIND: ClassVar[str] = "reboot"
    at_s: float = number(lo=0.0)
    down_s: float = number(3.0, lo=0.2, hi=3600.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class PacketLossSpec:
    """Each packet is lost with ``probability`` during the window."""

    KIND: ClassVar[str] = "packet_loss"
    at_s: float = number(lo=0.0)
    duration_s: float = number(lo=0.0, hi=_DAY_S)
    probability: float = number(0.2, lo=0.0, hi=1.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class CorruptionSpec:
    """Each packet is corrupted with ``probability`` during the window.

    A corrupted packet has bytes flipped so that its CRC fails; a fraction
    ``truncated_fraction`` of them is cut short instead.
    """

    KIND: ClassVar[str] = "corruption"
    at_s: float = number(lo=0.0)
    duration_s: float = number(lo=0.0, hi=_DAY_S)
    probability: float = number(0.2, lo=0.0, hi=1.0)
    truncated_fraction: float = number(0.3, lo=0.0, hi=1.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class FloodSpec:
    """Extra packets at ``rate_hz`` for ``duration_s``.

    ``distinct = false`` (the default): duplicates of the latest packet.
    ``distinct = true``: a faulty wearable whose sensor runs at the wrong
    rate: every packet is new and valid (its own sequence number, fresh
    samples, the header's nominal sample interval), but they come at
    ``rate_hz`` instead of the configured packet rate, so the device clock
    in the headers runs ahead of real time; afterwards the normal stream
    resumes from the clock the headers reached.
    """

    KIND: ClassVar[str] = "flood"
    at_s: float = number(lo=0.0)
    duration_s: float = number(1.0, lo=0.01, hi=600.0)
    rate_hz: float = number(400.0, lo=1.0, hi=5000.0)
    distinct: bool = flag(False)


@dataclass(frozen=True, slots=True, kw_only=True)
class BatteryDrainSpec:
    """From ``at_s`` on the battery drains at ``pct_per_h`` percent per hour."""

    KIND: ClassVar[str] = "battery_drain"
    at_s: float = number(lo=0.0)
    pct_per_h: float = number(lo=0.0, hi=360_000.0)


ActivitySpec = (
    SitSpec
    | StandSpec
    | SlouchSpec
    | LeanSpec
    | WalkSpec
    | BendSpec
    | SitDownSpec
    | LieDownSpec
    | GetUpSpec
    | FallSpec
    | SquatSpec
)
FaultSpec = (
    DisconnectSpec | RebootSpec | PacketLossSpec | CorruptionSpec | FloodSpec | BatteryDrainSpec
)

ACTIVITIES: dict[str, type[ActivitySpec]] = {
    cls.KIND: cls
    for cls in (
        SitSpec,
        StandSpec,
        SlouchSpec,
        LeanSpec,
        WalkSpec,
        BendSpec,
        SitDownSpec,
        LieDownSpec,
        GetUpSpec,
        FallSpec,
        SquatSpec,
    )
}
"""Timeline ``activity = "<name>"`` values and their parameter classes."""

FAULTS: dict[str, type[FaultSpec]] = {
    cls.KIND: cls
    for cls in (
        DisconnectSpec,
        RebootSpec,
        PacketLossSpec,
        CorruptionSpec,
        FloodSpec,
        BatteryDrainSpec,
    )
}
"""Timeline ``fault = "<name>"`` values and their parameter classes."""

"""Compile a patient's activity timeline into a :class:`TrunkTrajectory`.

Each activity starts from wherever the trunk is at its ``at_s`` (so there
are never orientation jumps), inserts the transfer its posture needs
(standing up before walking, sitting down before lying down, ...) and adds
its moves, oscillations and accelerations. What makes a patient individual
(gait frequency, sway phases, how a fall lands) comes from ``rng``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from simulator import movements
from simulator.builder import Posture, TrajectoryBuilder
from simulator.specs import (
    ActivitySpec,
    BendSpec,
    FallSpec,
    GetUpSpec,
    LeanSpec,
    LieDownSpec,
    SitDownSpec,
    SitSpec,
    SlouchSpec,
    SquatSpec,
    StandSpec,
    WalkSpec,
)
from simulator.trajectory import TrunkTrajectory

__all__ = ["ChoreographyError", "compile_choreography"]


class ChoreographyError(ValueError):
    """An activity cannot follow the ones before it (e.g. falling while lying).

    ``index`` is the activity's position among the patient's activities.
    """

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


def _initial_posture(first: ActivitySpec) -> Posture:
    """The posture before the first activity: what it naturally starts from."""
    if isinstance(first, SitSpec | SlouchSpec | LeanSpec | LieDownSpec):
        return Posture.SITTING
    if isinstance(first, GetUpSpec):
        return Posture.LYING
    return Posture.STANDING


def compile_choreography(
    activities: Sequence[ActivitySpec], *, rng: np.random.Generator
) -> TrunkTrajectory:
    """Build the trunk trajectory of one patient.

    ``activities`` must be in increasing ``at_s`` with the first at 0.

    Raises:
        ChoreographyError: the timeline is empty or out of order, or an
            activity is impossible from the posture the previous ones leave.
    """
    if not activities:
        raise ChoreographyError(0, "a patient needs at least one activity")
    if activities[0].at_s != 0.0:
        raise ChoreographyError(0, "the first activity must start at at_s = 0")
    builder = TrajectoryBuilder(rng, _initial_posture(activities[0]))
    for index, spec in enumerate(activities):
        later = activities[index + 1] if index + 1 < len(activities) else None
        t_end = later.at_s if later is not None else math.inf
        if t_end <= spec.at_s:
            raise ChoreographyError(index + 1, "activities must be in increasing at_s")
        try:
            _compile_one(builder, spec, t_end, later)
        except ValueError as exc:
            raise ChoreographyError(index, str(exc)) from exc
    return builder.trajectory()


def _compile_one(
    b: TrajectoryBuilder, spec: ActivitySpec, t_end: float, later: ActivitySpec | None
) -> None:
    t = spec.at_s
    if isinstance(spec, SitSpec | StandSpec):
        target = Posture.SITTING if isinstance(spec, SitSpec) else Posture.STANDING
        t = movements.transfer(b, target, t)
        b.label(t, target.value)
        b.move(t, spec.transition_s, b.upright(spec.flexion_deg, spec.lateral_deg))
        b.upright_deg = (spec.flexion_deg, spec.lateral_deg)
        b.hold(t, t_end)
    elif isinstance(spec, SlouchSpec | LeanSpec):
        if b.posture is Posture.LYING:
            raise ValueError(f"{spec.KIND} needs the patient sitting or standing, not lying")
        flexion = spec.flexion_deg if spec.flexion_deg is not None else b.upright_deg[0]
        b.label(t, spec.KIND)
        b.move(t, spec.onset_s, b.upright(flexion, spec.lateral_deg))
        b.hold(t, t_end)
        if spec.duration_s is not None and t + spec.onset_s + spec.duration_s < t_end:
            t_back = t + spec.onset_s + spec.duration_s
            b.label(b.move(t_back, spec.onset_s, b.upright(*b.upright_deg)), b.posture.value)
    elif isinstance(spec, WalkSpec):
        movements.walk(b, spec, t_end, falls_next=isinstance(later, FallSpec))
    elif isinstance(spec, BendSpec):
        movements.bend(b, spec, t_end)
    elif isinstance(spec, SquatSpec):
        movements.squat(b, spec, t_end)
    elif isinstance(spec, SitDownSpec):
        if b.posture is not Posture.STANDING:
            raise ValueError(f"sit_down needs a standing patient, not {b.posture.name.lower()}")
        hard = spec.impact_g if spec.style == "hard" else None
        t = movements.stand_to_sit(
            b, t, spec.duration_s, impact_g=hard, seat_height_m=spec.seat_height_m
        )
        b.label(t, Posture.SITTING.value)
        b.hold(t, t_end)
    elif isinstance(spec, LieDownSpec):
        if b.posture is Posture.LYING:
            b.label(t, "lie_down")
            t = b.move(t, spec.duration_s, b.lying_rotation(spec.position))
            b.lying = spec.position
        else:
            if b.posture is Posture.STANDING:
                t = movements.stand_to_sit(b, t, 2.0)
            t = movements.sit_to_lie(b, t, spec.duration_s, spec.position)
        b.label(t, Posture.LYING.value)
        b.hold(t, t_end)
    elif isinstance(spec, GetUpSpec):
        goal = Posture.STANDING if spec.to == "stand" else Posture.SITTING
        if b.posture is goal or b.posture is Posture.STANDING:
            raise ValueError(f"get_up to {spec.to} from {b.posture.name.lower()} is not getting up")
        if b.posture is Posture.LYING:
            t = movements.lie_to_sit(b, t, spec.duration_s)
            if goal is Posture.STANDING:
                t = movements.sit_to_stand(b, t, 2.2)
        else:
            t = movements.sit_to_stand(b, t, spec.duration_s)
        b.label(t, goal.value)
        b.hold(t, t_end)
    else:
        movements.fall(b, spec, t_end)

"""The movements of the trunk model: transfers, walking, bending, falling.

Each function adds to a :class:`TrajectoryBuilder` and returns when the
movement is over. Figures (amplitudes, durations) are typical of a sensor on
the upper back of an older adult; docs/scenarios.md ("The model") lists
them. Accelerations are in g, world frame (x forward, y left, z up).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.transform import Rotation

from simulator.builder import Posture, TrajectoryBuilder
from simulator.specs import BendSpec, FallSpec, SquatSpec, WalkSpec
from simulator.trajectory import (
    G_MPS2,
    FallTruth,
    Oscillation,
    OscillationTerm,
    Pulse,
    Transfer,
)

__all__ = [
    "bend",
    "fall",
    "lie_to_sit",
    "sit_to_lie",
    "sit_to_stand",
    "squat",
    "stand_to_sit",
    "transfer",
    "walk",
]

_UP = np.array([0.0, 0.0, 1.0])
_SEAT_DROP_M = 0.45  # pelvis height change between standing and sitting
_BED_DROP_M = 0.35  # trunk centre height change between sitting and lying
_SEAT_IMPACT_S = 0.08  # a hard landing on a cushioned seat

_FALL_POSITION = {"forward": "prone", "backward": "supine", "left": "left", "right": "right"}
_FALL_DESCENT_S = {"standing": 0.8, "walking": 0.75, "sitting": 0.7, "lying": 0.8}
_FALL_FREEFALL_G = {"standing": 0.6, "walking": 0.6, "sitting": 0.8}
# Drop of the pelvis to the floor: standing, the seat's or the bed's height.
_FALL_HEIGHT_M = {"standing": 1.0, "walking": 1.0, "sitting": 0.45, "lying": 0.5}
_QUICK_DESCENT_S = 1.5  # longer descents are slow collapses (the pelvis sinks)
_STANDING_PELVIS_M = 0.9  # pelvis height standing; sitting drops it to the seat
_FLOOR_SIT = {"forward": (15.0, 0.0), "backward": (-10.0, 0.0), "left": (5.0, -10.0)}
_FLOOR_SIT["right"] = (5.0, 10.0)
# Half reclined after the fall (a chair tipping over backward, a wall):
# 50° from upright toward the fall.
_RECLINED = {"forward": (50.0, 0.0), "backward": (-50.0, 0.0), "left": (0.0, -50.0)}
_RECLINED["right"] = (0.0, 50.0)
_IMPACT_TOLERANCE_G = 0.05
_BED_FREEFALL_G = 0.9  # over the bed's edge the body drops almost freely
_BED_ROLL_DEG = {"left": 90.0, "right": -90.0, "forward": 180.0, "backward": 0.0}
_FALL_DRIFT_G = 0.2  # horizontal acceleration toward the fall direction
# Arms, knees and then the floor stop the trunk's rotation: over this long,
# ending this long after the impact.
_FALL_ROTATION_STOP_S = 0.3
_FALL_ROTATION_POST_S = 0.05
_IMPACT_S = 0.03  # the main impact pulse: shorter than 50 ms, as recorded
_SETTLE_S = 0.5  # soft tissue absorbs what the main impact leaves
_IMPACT_HORIZONTAL = 0.25  # horizontal part of the impact, relative to vertical


def _vec(v: np.ndarray) -> tuple[float, float, float]:
    return (float(v[0]), float(v[1]), float(v[2]))


def transfer(b: TrajectoryBuilder, target: Posture, t_s: float, *, lying: str = "supine") -> float:
    """Change posture class to ``target`` starting at ``t_s``; returns when done."""
    if b.posture is target:
        return t_s
    if b.posture is Posture.LYING:
        t_s = lie_to_sit(b, t_s, 3.0)
    if target is Posture.SITTING:
        return t_s if b.posture is Posture.SITTING else stand_to_sit(b, t_s, 2.0)
    if target is Posture.STANDING:
        return t_s if b.posture is Posture.STANDING else sit_to_stand(b, t_s, 2.2)
    if b.posture is Posture.STANDING:
        t_s = stand_to_sit(b, t_s, 2.0)
    return sit_to_lie(b, t_s, 3.0, lying)


def stand_to_sit(
    b: TrajectoryBuilder,
    t_s: float,
    duration_s: float,
    *,
    impact_g: float | None = None,
    seat_height_m: float | None = None,
) -> float:
    """Sit down: lean forward, lower the pelvis, straighten up.

    ``impact_g`` set: a hard sit, the patient drops the last part and lands
    with that peak acceleration magnitude (gravity included).
    ``seat_height_m``: the pelvis drops 0.9 m minus this (None: 0.45 m).
    """
    drop_m = _SEAT_DROP_M if seat_height_m is None else _STANDING_PELVIS_M - seat_height_m
    d = duration_s
    fwd, _ = b.world_axes()
    b.label(t_s, "sit_down")
    b.move(t_s, 0.45 * d, b.upright(25.0, 0.0))
    b.move(t_s + 0.45 * d, 0.55 * d, b.upright(0.0, 0.0))
    if impact_g is None:
        b.transfers.append(Transfer(t_s + 0.1 * d, 0.8 * d, _vec(-drop_m * _UP - 0.1 * fwd)))
    else:
        # Drop: a downward half-sine whose velocity the seat impact cancels.
        peak = impact_g - 1.0
        drop_s = 0.45 * d
        t_drop = t_s + 0.25 * d
        b.pulses.append(Pulse(t_drop, drop_s, (0.0, 0.0, -peak * _SEAT_IMPACT_S / drop_s)))
        b.pulses.append(Pulse(t_drop + drop_s, _SEAT_IMPACT_S, (0.0, 0.0, peak)))
        b.transfers.append(Transfer(t_s + 0.1 * d, 0.8 * d, _vec(-0.1 * fwd)))
    b.posture = Posture.SITTING
    b.upright_deg = (0.0, 0.0)
    return t_s + d


def sit_to_stand(b: TrajectoryBuilder, t_s: float, duration_s: float) -> float:
    """Stand up: lean forward (~35°), rise, straighten up."""
    d = duration_s
    fwd, _ = b.world_axes()
    b.label(t_s, "stand_up")
    b.move(t_s, 0.4 * d, b.upright(35.0, 0.0))
    b.move(t_s + 0.4 * d, 0.6 * d, b.upright(0.0, 0.0))
    b.transfers.append(Transfer(t_s + 0.3 * d, 0.65 * d, _vec(_SEAT_DROP_M * _UP + 0.1 * fwd)))
    b.posture = Posture.STANDING
    b.upright_deg = (0.0, 0.0)
    return t_s + d


def sit_to_lie(b: TrajectoryBuilder, t_s: float, duration_s: float, position: str) -> float:
    """Lie down from sitting into ``position``."""
    b.label(t_s, "lie_down")
    b.move(t_s, duration_s, b.lying_rotation(position))
    b.transfers.append(Transfer(t_s + 0.2 * duration_s, 0.6 * duration_s, _vec(-_BED_DROP_M * _UP)))
    b.posture = Posture.LYING
    b.lying = position
    return t_s + duration_s


def lie_to_sit(b: TrajectoryBuilder, t_s: float, duration_s: float) -> float:
    """Get up from lying to sitting (through a forward-leaning sit)."""
    d = duration_s
    b.label(t_s, "get_up")
    b.move(t_s, 0.6 * d, b.upright(30.0, 0.0))
    b.move(t_s + 0.6 * d, 0.4 * d, b.upright(0.0, 0.0))
    b.transfers.append(Transfer(t_s + 0.2 * d, 0.6 * d, _vec(_BED_DROP_M * _UP)))
    b.posture = Posture.SITTING
    b.upright_deg = (0.0, 0.0)
    return t_s + d


def walk(b: TrajectoryBuilder, spec: WalkSpec, t_end: float, *, falls_next: bool) -> None:
    """Walk: gait accelerations and trunk sway on a slight forward lean.

    When a fall follows without the walk ending first, the gait runs into
    the fall's onset and fades during the descent (a trip).
    """
    rng = b.rng
    t = transfer(b, Posture.STANDING, spec.at_s)
    b.label(t, "walk")
    b.move(t, 1.0, b.upright(spec.lean_deg, 0.0))
    stop = t_end if spec.duration_s is None else min(t + spec.duration_s, t_end)
    into_fall = falls_next and stop >= t_end
    fwd, left = b.world_axes()
    step_hz = spec.step_hz * float(rng.uniform(0.97, 1.03))
    pv, pm = (float(p) for p in rng.uniform(0.0, 2 * math.pi, 2))
    gain = rng.uniform(0.9, 1.1, 3)
    sway = math.radians(spec.sway_deg)
    acc_terms = (
        OscillationTerm(1.0, _vec(_UP * spec.vertical_g * gain[0]), pv),
        OscillationTerm(2.0, _vec(_UP * 0.25 * spec.vertical_g), pv + 1.0),
        OscillationTerm(1.0, _vec(fwd * spec.ap_g * gain[1]), pv + math.pi / 2),
        OscillationTerm(2.0, _vec(fwd * 0.3 * spec.ap_g), pv + 2.0),
        OscillationTerm(0.5, _vec(left * spec.ml_g * gain[2]), pm),
        OscillationTerm(1.5, _vec(left * 0.3 * spec.ml_g), pm + 1.0),
    )
    sway_terms = (
        OscillationTerm(0.5, (sway, 0.0, 0.0), pm + math.pi / 2),
        OscillationTerm(1.0, (0.0, 0.4 * sway, 0.0), pv + math.pi),
        OscillationTerm(0.5, (0.0, 0.0, 1.2 * sway), pm),
    )
    t1 = t_end + 0.25 if into_fall else stop
    ramp_in = min(1.0, (t1 - t) / 3.0)
    ramp_out = 0.25 if into_fall else ramp_in
    jitter_phase = float(rng.uniform(0.0, 2 * math.pi))
    for terms, target in ((acc_terms, b.gait), (sway_terms, b.sway)):
        target.append(
            Oscillation(
                t,
                t1,
                ramp_in,
                step_hz,
                terms,
                jitter=0.03,
                jitter_hz=0.15,
                jitter_phase_rad=jitter_phase,
                ramp_out_s=ramp_out,
            )
        )
    b.gait_until_s = t1
    b.upright_deg = (0.0, 0.0)
    if not into_fall and stop < t_end:
        b.move(max(t, stop - 0.5), 1.0, b.upright(0.0, 0.0))
        b.label(stop, Posture.STANDING.value)
        b.hold(stop, t_end)


def bend(b: TrajectoryBuilder, spec: BendSpec, t_end: float) -> None:
    """Bend down to ``flexion_deg``, hold, come back to the upright angles."""
    if b.posture is Posture.LYING:
        raise ValueError("bend needs the patient sitting or standing, not lying")
    t = spec.at_s
    fwd, _ = b.world_axes()
    base = b.upright_deg
    b.label(t, "bend")
    b.move(t, spec.down_s, b.upright(spec.flexion_deg, base[1]))
    t_up = t + spec.down_s + spec.hold_s
    end = b.move(t_up, spec.up_s, b.upright(*base))
    if b.posture is Posture.STANDING:
        # Knees bend and hips go back while the trunk goes down.
        hips = -0.10 * _UP - 0.08 * fwd
        b.transfers.append(Transfer(t, spec.down_s, _vec(hips)))
        b.transfers.append(Transfer(t_up, spec.up_s, _vec(-hips)))
    b.label(end, b.posture.value)
    b.hold(end, t_end)


def squat(b: TrajectoryBuilder, spec: SquatSpec, t_end: float) -> None:
    """Squat: knees bend, the pelvis goes down ``depth_m`` while the trunk
    leans ``flexion_deg`` forward; hold; stand up again."""
    if b.posture is not Posture.STANDING:
        raise ValueError(f"squat needs a standing patient, not {b.posture.name.lower()}")
    t = spec.at_s
    fwd, _ = b.world_axes()
    base = b.upright_deg
    b.label(t, "squat")
    b.move(t, spec.down_s, b.upright(spec.flexion_deg, base[1]))
    hips = -spec.depth_m * _UP - 0.1 * fwd
    b.transfers.append(Transfer(t, spec.down_s, _vec(hips)))
    t_up = t + spec.down_s + spec.hold_s
    end = b.move(t_up, spec.up_s, b.upright(*base))
    b.transfers.append(Transfer(t_up, spec.up_s, _vec(-hips)))
    b.label(end, b.posture.value)
    b.hold(end, t_end)


def fall(b: TrajectoryBuilder, spec: FallSpec, t_end: float) -> None:
    """Fall: descent with partial free fall, impact, lying (or sitting) on the floor.

    The trunk rotates toward the floor with a growing rate (a toppling
    body) and stops at the impact. The vertical impact pulse is scaled so
    the peak acceleration magnitude at the sensor site, lever-arm effects
    included, equals ``spec.impact_g``.
    """
    t = spec.at_s
    if b.posture is Posture.LYING:
        origin = "lying"
    elif b.gait_until_s > t:
        origin = "walking"
    else:
        origin = "standing" if b.posture is Posture.STANDING else "sitting"
    descent = spec.descent_s if spec.descent_s is not None else _FALL_DESCENT_S[origin]
    height = spec.height_m if spec.height_m is not None else _FALL_HEIGHT_M[origin]
    t_impact = t + descent
    position = _FALL_POSITION[spec.direction]
    fwd, left = b.world_axes()
    toward = {"forward": fwd, "backward": -fwd, "left": left, "right": -left}[spec.direction]
    b.label(t, "fall")
    wobble = Rotation.from_rotvec(b.rng.normal(0.0, math.radians(6.0), 3))
    total = descent + _FALL_ROTATION_POST_S
    ends = {"sitting": _FLOOR_SIT, "reclined": _RECLINED}.get(spec.end)
    if ends is not None:
        landing = b.upright(*ends[spec.direction]) * wobble
    elif origin == "lying":
        # Rolling off the mattress: about the trunk's long axis (z), onto
        # the side toward the fall, or over onto the front.
        roll = math.radians(_BED_ROLL_DEG[spec.direction])
        landing = b.orientation_at(t) * Rotation.from_rotvec([0.0, 0.0, roll]) * wobble
        position = {90.0: "left", -90.0: "right", 180.0: "prone"}.get(
            _BED_ROLL_DEG[spec.direction], b.lying
        )
    else:
        landing = b.lying_rotation(position) * wobble
    b.move(t, total, landing, taper=_FALL_ROTATION_STOP_S / total)
    # The pelvis drops: in partial free fall over the descent (quick falls),
    # sinking by the height (slow collapses), or, out of bed, rolling over
    # the edge and then dropping the bed's height in free fall at the end.
    drop_s = descent
    if origin == "lying":
        drop_s = min(descent, math.sqrt(height * math.pi / (G_MPS2 * _BED_FREEFALL_G)))
        freefall = min(1.0, height * math.pi / (G_MPS2 * drop_s * drop_s))
    elif descent > _QUICK_DESCENT_S:
        freefall = height * math.pi / (G_MPS2 * descent * descent)
    else:
        freefall = _FALL_FREEFALL_G[origin]
    drift = _FALL_DRIFT_G * min(1.0, _QUICK_DESCENT_S / descent)
    b.pulses.append(Pulse(t_impact - drop_s, drop_s, _vec(-freefall * _UP)))
    b.pulses.append(Pulse(t, descent, _vec(drift * toward)))
    v_down = 2.0 * freefall * drop_s / math.pi  # g*s at the impact
    v_side = 2.0 * drift * descent / math.pi

    def impact_pulses(peak: float) -> list[Pulse]:
        v_absorbed = 2.0 * peak * _IMPACT_S / math.pi
        settle = math.pi / (2.0 * _SETTLE_S)
        t_settle = t_impact + _IMPACT_S
        return [
            Pulse(t_impact, _IMPACT_S, _vec(peak * _UP - _IMPACT_HORIZONTAL * peak * toward)),
            Pulse(t_settle, _SETTLE_S, _vec((v_down - v_absorbed) * settle * _UP)),
            Pulse(
                t_settle,
                _SETTLE_S,
                _vec(-(v_side - _IMPACT_HORIZONTAL * v_absorbed) * settle * toward),
            ),
        ]

    peak = max(spec.impact_g - 1.0, 0.0)
    achieved = 0.0
    probe = np.arange(t_impact - 0.1, t_impact + 0.3, 5e-4)
    for _ in range(6):  # the peak is nearly linear in the pulse: a few steps converge
        pulses = impact_pulses(peak)
        b.pulses.extend(pulses)
        _, force = b.trajectory().kinematics(probe)
        achieved = float(np.linalg.norm(force, axis=1).max())
        del b.pulses[-len(pulses) :]
        if abs(achieved - spec.impact_g) < 0.02:
            break
        peak = max(peak + spec.impact_g - achieved, 0.0)
    b.pulses.extend(impact_pulses(peak))
    _, force = b.trajectory().kinematics(probe)
    achieved = float(np.linalg.norm(force, axis=1).max())
    if abs(achieved - spec.impact_g) > _IMPACT_TOLERANCE_G:
        # Never land harder (or softer) than asked: refuse instead.
        raise ValueError(
            f"fall: cannot land with a {spec.impact_g:g} g impact after this descent "
            f"(it reaches {achieved:.2f} g); ask for a harder impact or a slower descent"
        )
    b.falls.append(FallTruth(t, t_impact, spec.direction, origin, round(achieved, 3)))
    b.gait_until_s = -math.inf
    if ends is not None:
        b.posture = Posture.SITTING
        b.upright_deg = ends[spec.direction]
        b.label(t_impact + 0.5, Posture.SITTING.value)
    else:
        b.posture = Posture.LYING
        b.lying = position
        b.label(t_impact + 0.5, Posture.LYING.value)
    b.hold(t_impact + 1.0, t_end)

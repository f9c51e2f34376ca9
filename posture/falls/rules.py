"""The fall detector's confirmation rules, judged on the samples after an impact.

Each rule is a plain conjunction of thresholds a physiotherapist can read
(docs/falls.md has the table and the reasons). :func:`first_hit` evaluates
every rule a candidate is eligible for on a run of consecutive samples, all
at once, and returns the first sample that confirms it with the rule's name.

Inputs per sample ``e`` (arrays over the run, all computed on windows that
end at ``e``, see :mod:`posture.falls.features`):

* ``tilt_deg``: mean acceleration direction of the still window from the
  candidate's upright; ``change_deg``: from the trunk before the fall;
* ``sd_g``: standard deviation of ``|a|`` over the still window;
  ``sd_long_g``: over the soft rule's longer window (NaN where not needed);
* ``engine_tilt_deg``: the engine's up estimate from the upright (NaN
  before it has one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from posture.falls.types import FallCandidate, FallSettings

__all__ = ["ENGINE_TILT_MARGIN_DEG", "RULES", "RuleInputs", "first_hit"]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

RULES = ("lying", "reclined", "unmoving", "down_up", "two_stage", "soft", "out_of_bed")
"""Rule names, in the order they are reported when several fire at one sample."""

ENGINE_TILT_MARGIN_DEG = 20.0
"""How far the engine's up estimate may disagree with the still-window mean
acceleration about the posture (filter lag just after a fall)."""


@dataclass(frozen=True, slots=True)
class RuleInputs:
    """Per-sample inputs of :func:`first_hit`, each (k,) over samples ``index``."""

    index: NDArray[np.intp]
    after_s: FloatArray
    """Seconds since the candidate's peak."""
    tilt_deg: FloatArray
    change_deg: FloatArray
    sd_g: FloatArray
    sd_long_g: FloatArray
    engine_tilt_deg: FloatArray


def first_hit(
    c: FallCandidate, x: RuleInputs, s: FallSettings, p_min: float
) -> tuple[int, str] | None:
    """Offset into ``x`` of the first sample confirming ``c``, and the rule; or None.

    The candidate's eligible rules are ``c.rules``; ``c.features`` holds
    ``down_tilt_deg`` once known (``down_up``). Samples at or after
    ``c.killed_at`` confirm no long rule (two-stage, soft).
    """
    rules = c.rules
    k = x.index.shape[0]
    if not rules or k == 0 or np.isnan(x.tilt_deg).all():
        # Every rule needs the trunk's direction, looked at only where the
        # engine's estimate and the motion allow a rule: none (the common case).
        return None
    first_window = x.after_s <= s.confirm_max_s + 1e-9
    trusted = np.full(k, c.clipped)  # saturated gyroscope: the accelerometer decides

    def engine_near(tilt_deg: float) -> BoolArray:
        return trusted | (x.engine_tilt_deg >= tilt_deg - ENGINE_TILT_MARGIN_DEG)

    quiet = x.sd_g <= s.still_acc_sd_g
    lying = (x.tilt_deg >= s.lying_tilt_deg) & engine_near(s.lying_tilt_deg)
    hits: dict[str, BoolArray] = {}
    if "lying" in rules:
        hits["lying"] = first_window & lying & quiet
    if "reclined" in rules:
        hits["reclined"] = (
            first_window
            & (x.tilt_deg >= s.reclined_tilt_deg)
            & (x.change_deg >= s.reclined_change_deg)
            & engine_near(s.reclined_tilt_deg)
            & quiet
        )
    if "unmoving" in rules:
        hits["unmoving"] = (
            first_window
            & (x.sd_g <= s.unmoving_acc_sd_g)
            & (x.change_deg >= s.unmoving_tilt_change_deg)
        )
    if "down_up" in rules and c.features.get("down_tilt_deg", 0.0) >= s.lying_tilt_deg:
        # Down right after the impact, already back up: a fall the patient
        # recovered from at once (the cancellation rule reports the recovery).
        engine_up = np.nan_to_num(x.engine_tilt_deg, nan=180.0) < s.cancel_upright_deg
        up_again = (x.tilt_deg < s.lying_tilt_deg) & (trusted | engine_up)
        hits["down_up"] = first_window & up_again & (c.probability >= p_min)
    if "two_stage" in rules:
        hits["two_stage"] = (
            ~first_window
            & (x.after_s <= s.two_stage_max_s)
            & lying
            & (x.sd_g <= s.unmoving_acc_sd_g)
        )
    if "soft" in rules:
        hits["soft"] = (
            (x.after_s >= s.soft_still_s)
            & (x.after_s <= s.soft_confirm_max_s)
            & lying
            & (x.sd_long_g <= s.soft_still_sd_g)
        )
    if "out_of_bed" in rules:
        hits["out_of_bed"] = first_window & lying & quiet & (x.change_deg >= s.bed_change_deg)
    if c.killed_at is not None:  # up and walking: the long rules are over
        alive = x.index < c.killed_at
        for name in ("two_stage", "soft"):
            if name in hits:
                hits[name] &= alive
    best: tuple[int, str] | None = None
    for name in RULES:
        if name in hits:
            at = np.flatnonzero(hits[name])
            if at.size and (best is None or int(at[0]) < best[0]):
                best = (int(at[0]), name)
    return best

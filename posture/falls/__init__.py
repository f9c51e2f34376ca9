"""The fall detector: impact candidates, readable rules, a small model, laid out across devices.

:mod:`posture.falls.stage` runs the detector of many wearables side by side
(:mod:`posture.falls.history` holds their state: a ring of per-sample
signals with the device on the last axis; :mod:`posture.falls.screen` finds
the impact peaks of every device at once and which of them could open a
candidate); :mod:`posture.falls.device` is the per-device path for the
devices that need it; :mod:`posture.falls.detector` is one wearable's
detector on top (stages in docs/falls.md). :mod:`posture.falls.impact`
opens candidates at impacts (features, where the fall starts, which rules
apply); :mod:`posture.falls.judging` computes the rules' inputs after an
impact and :mod:`posture.falls.rules` the rules themselves;
:mod:`posture.falls.features` the window statistics;
:mod:`posture.falls.model` holds the trained impact model (``model.npz``).
Pure numerics, like the rest of :mod:`posture`.
"""

from posture.falls.detector import FallDetector
from posture.falls.stage import FallStage
from posture.falls.types import FallCandidate, FallFinding, FallSettings

__all__ = ["FallCandidate", "FallDetector", "FallFinding", "FallSettings", "FallStage"]

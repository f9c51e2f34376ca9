"""The fall detector: impact candidates, readable rules, a small model, and the feed that paces it.

:mod:`posture.falls.detector` streams samples and keeps the state (stages in
docs/falls.md); :mod:`posture.falls.impact` opens candidates at impacts
(features, where the fall starts, which rules apply);
:mod:`posture.falls.judging` computes the rules' inputs after an impact and
:mod:`posture.falls.rules` the rules themselves; :mod:`posture.falls.features`
the window statistics; :mod:`posture.falls.model` holds the trained impact
model (``model.npz``); :mod:`posture.falls.feed` decides which samples reach
the detector. Pure numerics, like the rest of :mod:`posture`.
"""

from posture.falls.detector import FallDetector
from posture.falls.feed import FallFeed
from posture.falls.types import FallCandidate, FallFinding, FallSettings

__all__ = ["FallCandidate", "FallDetector", "FallFeed", "FallFinding", "FallSettings"]

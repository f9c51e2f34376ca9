"""The fall detector: impact candidates, a small explainable model, and the feed that paces it.

:mod:`posture.falls.detector` finds impacts and judges what follows them;
:mod:`posture.falls.features` computes the model's features from a
look-back and look-ahead window; :mod:`posture.falls.model` holds the
trained weights (``model.npz``); :mod:`posture.falls.feed` decides which
samples reach the detector. Pure numerics, like the rest of :mod:`posture`.
"""

from posture.falls.detector import FallDetector
from posture.falls.feed import FallFeed
from posture.falls.types import FallCandidate, FallFinding, FallSettings

__all__ = ["FallCandidate", "FallDetector", "FallFeed", "FallFinding", "FallSettings"]

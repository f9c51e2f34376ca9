"""Capped, jittered exponential backoff: the one retry policy of the BLE link.

"Full jitter" (a uniform draw between zero and the capped exponential) keeps
many wearables that dropped together (a ward's Wi-Fi/BLE interference burst)
from reconnecting in lock-step.
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays for successive failed attempts; :meth:`reset` after a success."""

    def __init__(
        self, initial_s: float, max_s: float, *, rng: random.Random | None = None
    ) -> None:
        if initial_s <= 0 or max_s < initial_s:
            raise ValueError(f"need 0 < initial_s <= max_s, got {initial_s}, {max_s}")
        self.initial_s = initial_s
        self.max_s = max_s
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay_s(self) -> float:
        """Delay before the next attempt, in seconds; counts one more failure."""
        ceiling = min(self.max_s, self.initial_s * 2.0**self.failures)
        self.failures += 1
        # Never below half the ceiling: a zero delay would hammer a radio
        # that has just told us it is busy.
        return self._rng.uniform(ceiling / 2.0, ceiling)

    def reset(self) -> None:
        self.failures = 0

"""Capped, jittered exponential backoff: the one retry policy of the MQTT link."""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    """Delays that double from ``min_s`` up to ``max_s``, each jittered.

    Jitter draws the delay uniformly from [d/2, d] ("equal jitter"), so many
    gateways that lost the same broker do not reconnect in lockstep, while a
    single one still backs off by roughly the nominal delay.

    Args:
        min_s: first nominal delay, s (> 0).
        max_s: largest nominal delay, s (>= min_s).
        rng: returns floats in [0, 1); injectable for tests.

    Raises:
        ValueError: when the bounds are not 0 < min_s <= max_s.
    """

    def __init__(
        self, min_s: float, max_s: float, rng: Callable[[], float] = random.random
    ) -> None:
        if not 0 < min_s <= max_s:
            raise ValueError(f"backoff: expected 0 < min_s <= max_s, got {min_s!r}, {max_s!r}")
        self._min_s = float(min_s)
        self._max_s = float(max_s)
        self._rng = rng
        self._attempts = 0

    @property
    def attempts(self) -> int:
        """Delays handed out since the last ``reset()``."""
        return self._attempts

    @property
    def max_s(self) -> float:
        """The cap on the nominal delay, s."""
        return self._max_s

    def next_delay(self) -> float:
        """The next delay, s, in [d/2, d] for nominal d = min(max, min * 2**n)."""
        # Exponent capped so 2**n cannot overflow after days of failures.
        nominal = min(self._max_s, self._min_s * 2.0 ** min(self._attempts, 60))
        self._attempts += 1
        return nominal * (0.5 + 0.5 * self._rng())

    def reset(self) -> None:
        """Start again from ``min_s`` (after a connection proved stable)."""
        self._attempts = 0

"""Clocks on the wire: how far a sender's clock is trusted, and a time that never steps.

A message carries its sender's wall time. The receiver judges it against its
own clock (:class:`ClockPolicy`):

* more than ``max_future_s`` ahead: refused (``DropReason.FUTURE_TIME``) for
  state, status and summaries; events, acks and escalations are never
  refused for their clock, they are placed at their receipt time instead (a
  fall must not be lost to a wrong clock);
* a live patient state (QoS 0, not retained: brokers do not queue it, so it
  is never a backlog) more than ``max_lag_s`` behind its receipt: the
  sender's clock is not credible (stepped back, or never set), so the
  receipt time stands for it and tiles and day summaries stay live;
* anything else may be old by nature (a retained state, an event from a
  broker's queue or a gateway's outbox): its own time counts.

A time is never filed later than its receipt. Senders also stamp
``mono_time``: the wall time at the gateway's start plus its monotonic clock
since then, which does not jump when the wall clock is stepped during a run.
Of the sender's times that are not in the future, the latest counts: after a
step back it is ``mono_time``, after a step forward (a clock set late) it is
``time``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from alerts.wire import utc_from_timestamp

__all__ = ["DEFAULT_CLOCK_POLICY", "ClockPolicy", "mono_wall_now"]

# Anchored once per process: wall time at import plus monotonic time since.
_ANCHOR_WALL_S = time.time()
_ANCHOR_MONO_S = time.monotonic()


def mono_wall_now() -> datetime:
    """Now on this process's monotonic clock, anchored to the wall clock at start (UTC)."""
    return utc_from_timestamp(_ANCHOR_WALL_S + (time.monotonic() - _ANCHOR_MONO_S))


@dataclass(frozen=True)
class ClockPolicy:
    """How much a receiver trusts a sender's clock.

    Attributes:
        max_future_s: a time further ahead of the receiver's clock is refused.
        max_lag_s: a live message whose time lags its receipt by more than
            this is placed at its receipt time (the sender's clock is off).
    """

    max_future_s: float = 120.0
    max_lag_s: float = 30.0

    def __post_init__(self) -> None:
        if not (self.max_future_s > 0 and self.max_lag_s > 0):
            raise ValueError(
                f"max_future_s and max_lag_s must be > 0 s, got {self.max_future_s}, "
                f"{self.max_lag_s}"
            )

    def effective_s(
        self,
        received_s: float,
        *,
        times_s: tuple[float | None, ...],
        live: bool = False,
    ) -> tuple[float, bool]:
        """The time a receiver should file a message under, POSIX s.

        Args:
            received_s: the receiver's clock at receipt.
            times_s: the sender's times (e.g. ``mono_time``, ``time``); None
                where absent.
            live: the message cannot be a backlog (a live patient state), so
                a time lagging by more than ``max_lag_s`` is not credible.

        Returns:
            ``(time_s, trusted)``: the latest sender time not beyond
            ``max_future_s`` (capped at the receipt), or the receipt time with
            ``trusted`` False when there is none or, for a live message, it
            lags by more than ``max_lag_s``.
        """
        usable = [t for t in times_s if t is not None and t <= received_s + self.max_future_s]
        if not usable:
            return received_s, False
        sent_s = max(usable)
        if live and sent_s < received_s - self.max_lag_s:
            return received_s, False
        return min(sent_s, received_s), True


DEFAULT_CLOCK_POLICY = ClockPolicy()

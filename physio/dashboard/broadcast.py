"""Fan-out of dashboard updates to the open browser streams.

Each stream has a bounded queue. A browser that falls behind (a tablet on a
weak link) is not allowed to grow memory: its queue overflows, the stream is
closed, and the browser's EventSource reconnects and receives a fresh
snapshot, which holds every alert. So nothing a physiotherapist must see is
lost; only intermediate tile updates are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

__all__ = ["Broadcaster", "Subscription"]

_log = logging.getLogger(__name__)

Update = tuple[str, dict[str, Any]]


class Subscription:
    """One browser stream's queue; ``None`` on it means: close the stream."""

    def __init__(self, maxsize: int) -> None:
        self.queue: asyncio.Queue[Update | None] = asyncio.Queue(maxsize=maxsize)
        self.overflowed = False

    def offer(self, update: Update) -> bool:
        """Queue an update; False (and the stream marked to close) when full."""
        if self.overflowed:
            return False
        try:
            self.queue.put_nowait(update)
            return True
        except asyncio.QueueFull:
            self.overflowed = True
            return False

    def close(self) -> None:
        """Ask the stream to end (at server shutdown)."""
        self.overflowed = True
        # When full, the stream sees `overflowed` at its next item or keepalive.
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)


class Broadcaster:
    """Sends each update to every subscribed stream.

    Args:
        queue_size: updates buffered per stream (50 patients at 1 Hz is
            50 per second, so the default holds about 20 s).
    """

    def __init__(self, queue_size: int = 1000) -> None:
        self.queue_size = queue_size
        self._subscriptions: set[Subscription] = set()
        self.overflows = 0

    def subscribe(self) -> Subscription:
        """A new stream."""
        subscription = Subscription(self.queue_size)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """The stream ended."""
        self._subscriptions.discard(subscription)

    def publish(self, updates: Iterable[Update]) -> None:
        """Queue updates on every stream (never blocks)."""
        for update in updates:
            for subscription in list(self._subscriptions):
                if not subscription.offer(update):
                    if subscription in self._subscriptions:
                        self.overflows += 1
                        _log.warning(
                            "a browser stream fell behind; closing it so it "
                            "reconnects with a snapshot"
                        )
                    self._subscriptions.discard(subscription)

    @property
    def count(self) -> int:
        """Open streams."""
        return len(self._subscriptions)

    def close_all(self) -> None:
        """End every stream."""
        for subscription in self._subscriptions:
            subscription.close()
        self._subscriptions.clear()

"""Escalation notices that leave the screen: JSON webhooks, Apprise, and the MQTT bridge topic.

The service decides that a level of a fall is due (and, with the alert
record, that this dashboard claimed it); :class:`Notifier` then sends one
:class:`EscalationNotice` through every configured channel whose ``levels``
include that level. Each (notice, channel) pair is its own task in the
notifier's task group, so a slow or dead recipient never delays another one,
the escalation itself, or the receive loop.

A failed send is logged, reported through ``on_status`` (the page shows it on
the fall) and retried with ``common.backoff`` (capped, jittered exponential)
until it succeeds or ``give_up_after_s`` passed since the first try; then it
is reported as ``failed`` and logged as an error. The fall stays open on every
screen whatever happens to its notices: a notice is a copy, never the alert.

The notice and its channels (webhook, Apprise, MQTT) are in
physio/dashboard/channels.py; this module is the sending and retrying.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp

from common.backoff import Backoff
from common.ids import mask_id
from physio.dashboard.channels import (
    AppriseChannel,
    Channel,
    EscalationNotice,
    MqttChannel,
    NotifyError,
    WebhookChannel,
)

__all__ = [
    "AppriseChannel",
    "Channel",
    "DeliveryStatus",
    "EscalationNotice",
    "MqttChannel",
    "Notifier",
    "NotifyError",
    "RetryPolicy",
    "WebhookChannel",
]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """How failed notices are retried.

    Raises:
        ValueError: bounds that are not 0 < min <= max, or give-up not > 0.
    """

    min_s: float = 1.0
    max_s: float = 60.0
    give_up_after_s: float = 3600.0

    def __post_init__(self) -> None:
        if not 0 < self.min_s <= self.max_s or not self.give_up_after_s > 0:
            raise ValueError(
                "notify retry: expected 0 < retry_min_s <= retry_max_s and give_up_after_s > 0"
            )


@dataclass
class DeliveryStatus:
    """Where one notice stands with one channel (shown on the page).

    ``state`` is ``sending``, ``retrying``, ``delivered``, ``failed`` or
    ``stopped`` (the fall was answered before the notice got through); times
    are POSIX s.
    """

    event_id: str
    level: int
    channel: str
    state: str = "sending"
    attempts: int = 0
    error: str = ""
    due_s: float = 0.0
    delivered_s: float | None = None
    next_try_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON for the page."""
        return {
            "level": self.level,
            "channel": self.channel,
            "state": self.state,
            "attempts": self.attempts,
            "error": self.error,
            "delivered_s": self.delivered_s,
            "next_try_s": self.next_try_s,
        }


class Notifier:
    """Sends notices through channels, each in its own retrying task.

    Args:
        channels: where notices go.
        retry: backoff bounds and when to give up.
        on_status: called on the event loop after every change of a
            delivery's status (must not block).
        clock: wall clock, POSIX s.
    """

    def __init__(
        self,
        channels: list[Channel],
        *,
        retry: RetryPolicy | None = None,
        on_status: Callable[[DeliveryStatus], None] = lambda status: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.channels = channels
        self.retry = retry or RetryPolicy()
        self._on_status = on_status
        self._clock = clock
        self.statuses: dict[tuple[str, int, str], DeliveryStatus] = {}
        self._tasks: asyncio.TaskGroup | None = None
        self._session: aiohttp.ClientSession | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._tasks_by_key: dict[tuple[str, int, str], asyncio.Task[None]] = {}

    async def __aenter__(self) -> Self:
        if any(isinstance(c, WebhookChannel) for c in self.channels):
            self._session = aiohttp.ClientSession()
            for channel in self.channels:
                if isinstance(channel, WebhookChannel):
                    channel.session = self._session
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        unsent = [t for t in self._pending if not t.done()]
        if unsent:
            _log.error("stopping with %d escalation notice(s) not yet delivered", len(unsent))
        for task in unsent:
            task.cancel()
        if self._tasks is not None:
            tasks, self._tasks = self._tasks, None
            with contextlib.suppress(Exception):
                await tasks.__aexit__(None, None, None)
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def submit(self, notice: EscalationNotice) -> int:
        """Start sending ``notice`` to every channel of its level; never blocks.

        Returns the number of channels it goes to.
        """
        if self._tasks is None:
            raise RuntimeError("Notifier.submit outside 'async with'")
        count = 0
        for channel in self.channels:
            if notice.level not in channel.levels:
                continue
            key = (notice.event_id, notice.level, channel.name)
            if key in self.statuses:
                continue  # submitted twice: one delivery is enough
            status = DeliveryStatus(notice.event_id, notice.level, channel.name, due_s=notice.due_s)
            self.statuses[key] = status
            task = self._tasks.create_task(
                self._deliver(channel, notice, status), name=f"notify-{channel.name}"
            )
            self._pending.add(task)
            self._tasks_by_key[key] = task
            task.add_done_callback(self._pending.discard)
            task.add_done_callback(functools.partial(self._forget, key))
            count += 1
        return count

    @property
    def pending(self) -> int:
        """Deliveries still sending or waiting to retry."""
        return sum(1 for task in self._pending if not (task.done() or task.cancelling()))

    def _forget(self, key: tuple[str, int, str], _task: asyncio.Task[None]) -> None:
        self._tasks_by_key.pop(key, None)

    def stop(self, event_id: str, why: str) -> int:
        """The fall was answered: stop retrying its undelivered notices.

        Paging someone about a fall a nurse already answered only misleads.
        Returns the number of deliveries stopped.
        """
        stopped = 0
        for key, task in list(self._tasks_by_key.items()):
            if key[0] != event_id or task.done():
                continue
            task.cancel()
            status = self.statuses[key]
            status.state, status.error, status.next_try_s = "stopped", why, None
            self._report(status)
            stopped += 1
        if stopped:
            _log.info("stopped %d undelivered escalation notice(s): %s", stopped, why)
        return stopped

    async def _deliver(
        self, channel: Channel, notice: EscalationNotice, status: DeliveryStatus
    ) -> None:
        backoff = Backoff(self.retry.min_s, self.retry.max_s)
        first_s = self._clock()
        while True:
            status.attempts += 1
            try:
                await channel.send(notice)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure is retried; the alert itself is never at risk
                status.error = _describe(exc)
                if self._clock() - first_s >= self.retry.give_up_after_s:
                    status.state, status.next_try_s = "failed", None
                    self._report(status)
                    _log.error(
                        "escalation level %d of a fall of %s NOT delivered via %s after %d "
                        "attempts: %s",
                        notice.level,
                        mask_id(notice.patient_id),
                        channel.name,
                        status.attempts,
                        status.error,
                    )
                    return
                delay_s = backoff.next_delay()
                status.state, status.next_try_s = "retrying", self._clock() + delay_s
                self._report(status)
                # Every attempt is on the page; the log gets attempts 1, 2, 4,
                # 8 ... so an hour of retries is a dozen lines, not hundreds.
                attempts = status.attempts
                _log.log(
                    logging.WARNING if attempts & (attempts - 1) == 0 else logging.DEBUG,
                    "escalation level %d of a fall of %s via %s failed (attempt %d, next in "
                    "%.2f s): %s",
                    notice.level,
                    mask_id(notice.patient_id),
                    channel.name,
                    status.attempts,
                    delay_s,
                    status.error,
                )
                await asyncio.sleep(delay_s)
                continue
            status.state, status.error, status.next_try_s = "delivered", "", None
            status.delivered_s = self._clock()
            self._report(status)
            _log.info(
                "escalation level %d of a fall of %s delivered via %s",
                notice.level,
                mask_id(notice.patient_id),
                channel.name,
            )
            return

    def _report(self, status: DeliveryStatus) -> None:
        try:
            self._on_status(status)
        except Exception:  # a display bug must not stop a delivery
            _log.exception("notify status callback failed")


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):
        text = "timed out"
    return text[:200]

"""What an escalation notice is, and the channels it goes through.

* :class:`WebhookChannel`: ``POST`` of :meth:`EscalationNotice.to_json`
  (UTF-8 JSON) with aiohttp's client; any 2xx answer is success.
* :class:`AppriseChannel`: one message through Apprise URLs (e-mail, SMS
  gateways, chat, ntfy ...); needs the ``notify`` extra.
* :class:`MqttChannel`: the dashboard's own per-patient ``.../escalations``
  message and a copy on ``{root}/escalations`` for a nurse-call bridge, both
  without the patient's name or bed (the service supplies ``publish``).

A channel's ``send`` raises on failure; :class:`physio.dashboard.notify.Notifier`
retries it. Nothing here retries, sleeps or logs a notice's content.
"""

from __future__ import annotations

import asyncio
import json
import logging
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from alerts.summary import format_time
from common.errors import PostureMonitorError
from physio.dashboard.patients import PatientInfo

__all__ = [
    "AppriseChannel",
    "Channel",
    "EscalationNotice",
    "MqttChannel",
    "NotifyError",
    "WebhookChannel",
]


class NotifyError(PostureMonitorError, ConnectionError):
    """A recipient did not take the notice (the notifier retries)."""


@dataclass(frozen=True)
class EscalationNotice:
    """One escalation level of one fall, as sent to recipients.

    Attributes:
        event_id: the fall's event id.
        patient_id, gateway_id: as on MQTT ("" when unknown).
        level: 1 or 2.
        fall_time_s: the fall's own time, POSIX s.
        due_s: when this level became due, POSIX s (the receipt delay is
            measured from here).
        issued_s: when the dashboard decided to send it, POSIX s.
        patient: display data from the patients file, if configured.
    """

    event_id: str
    patient_id: str
    gateway_id: str
    level: int
    fall_time_s: float
    due_s: float
    issued_s: float
    patient: PatientInfo | None = None

    def to_dict(self, *, with_patient: bool = True) -> dict[str, Any]:
        """The payload; ``with_patient=False`` for MQTT (names never go on the broker)."""
        data: dict[str, Any] = {
            "kind": "fall_escalation",
            "event_id": self.event_id,
            "patient_id": self.patient_id,
            "gateway_id": self.gateway_id,
            "level": self.level,
            "fall_time": format_time(self.fall_time_s),
            "due": format_time(self.due_s),
            "time": format_time(self.issued_s),
        }
        if with_patient:
            data["patient"] = (self.patient or PatientInfo()).to_dict()
        return data

    def to_json(self, *, with_patient: bool = True) -> bytes:
        """:meth:`to_dict` as UTF-8 JSON."""
        return json.dumps(self.to_dict(with_patient=with_patient), ensure_ascii=False).encode()

    def text(self) -> tuple[str, str]:
        """(title, body) for human channels (e-mail, chat)."""
        who = (self.patient.name if self.patient and self.patient.name else "") or self.patient_id
        where = self.patient.location if self.patient else ""
        title = f"FALL not acknowledged (level {self.level}): {who}"
        body = (
            f"Fall of {who}{f' ({where})' if where else ''} at {format_time(self.fall_time_s)} "
            f"has not been acknowledged. Escalation level {self.level}. "
            f"Patient id {self.patient_id}, gateway {self.gateway_id or '?'}."
        )
        return title, body


class Channel(Protocol):
    """Somewhere a notice goes; ``send`` raises on failure (any exception is retried)."""

    name: str
    levels: frozenset[int]

    async def send(self, notice: EscalationNotice) -> None:
        """Deliver one notice or raise."""
        ...


@dataclass
class WebhookChannel:
    """``POST`` the notice as JSON to ``url``; 2xx is success.

    Args:
        name: shown on the page and in logs (never the URL: it may hold a token).
        url: http(s) URL of the receiver.
        levels: escalation levels this recipient gets.
        timeout_s: total time for one attempt, s.
        headers: extra request headers (e.g. ``Authorization``).
    """

    name: str
    url: str
    levels: frozenset[int] = frozenset({1, 2})
    timeout_s: float = 5.0
    headers: dict[str, str] = field(default_factory=dict)
    session: aiohttp.ClientSession | None = None

    async def send(self, notice: EscalationNotice) -> None:
        """POST once. Raises NotifyError, aiohttp.ClientError or TimeoutError."""
        if self.session is None:
            raise NotifyError("the notifier is not running")
        async with self.session.post(
            self.url,
            data=notice.to_json(),
            headers={"Content-Type": "application/json; charset=utf-8", **self.headers},
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
        ) as response:
            if not 200 <= response.status < 300:
                raise NotifyError(f"HTTP {response.status} {response.reason or ''}".strip())


@dataclass
class AppriseChannel:
    """One message to each Apprise URL (``mailto://``, ``ntfy://``, ``json://`` ...).

    Raises:
        NotifyError: from ``send`` when Apprise reports any URL failed.
    """

    name: str
    urls: tuple[str, ...]
    levels: frozenset[int] = frozenset({1, 2})

    def __post_init__(self) -> None:
        # The optional extra (site.py checked it is installed). Apprise 2.x
        # imports the stdlib's deprecated imghdr; that is its business, not an
        # error of ours (pytest turns warnings into errors).
        # It loads its plugins on the first add(), hence both under the filter.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import apprise

            # Apprise logs whole message bodies at DEBUG; ours name the patient
            # and the bed, which must never reach a log, whatever -v says.
            logging.getLogger("apprise").setLevel(logging.INFO)
            self._apprise = apprise.Apprise()
            for url in self.urls:
                if not self._apprise.add(url):
                    raise ValueError(f"Apprise does not understand the URL of {self.name!r}")

    async def send(self, notice: EscalationNotice) -> None:
        """Notify every URL (Apprise's blocking call runs in a worker thread)."""
        title, body = notice.text()
        ok = await asyncio.to_thread(self._apprise.notify, body=body, title=title)
        if not ok:
            raise NotifyError("Apprise could not deliver to every URL (see its log)")


@dataclass
class MqttChannel:
    """The per-patient escalation message and the bridge copy, on the broker.

    Args:
        publish: ``publish(notice)``; raises BrokerError when not delivered.
    """

    publish: Callable[[EscalationNotice], Awaitable[None]]
    name: str = "mqtt"
    levels: frozenset[int] = frozenset({1, 2})

    async def send(self, notice: EscalationNotice) -> None:
        """Publish (QoS 1, waits for the broker)."""
        await self.publish(notice)

"""A site's dashboard settings from TOML: escalation delays and who gets escalation notices.

``posture-monitor dashboard --config site.toml``::

    [escalation]
    first_after_s = 120        # level 1, seconds after the fall (default 120)
    again_after_s = 240        # level 2 (default 240)

    [notify]
    retry_min_s = 1            # first retry delay of a failed notice
    retry_max_s = 60           # longest delay between retries
    give_up_after_s = 3600     # then the notice is reported failed

    [[notify.webhook]]
    name = "ward 3 pager"      # shown on the page and in logs (the URL never is)
    url = "https://pager.example.org/hook"
    levels = [1, 2]            # default both
    timeout_s = 5
    headers = { Authorization = "Bearer ..." }

    [[notify.apprise]]         # needs: pip install 'posture-monitor[notify]'
    name = "charge nurse"
    urls = ["mailtos://user:pass@mail.example.org?to=charge@example.org"]
    levels = [2]

The ``--escalate-after`` / ``--escalate-again-after`` options override the
file. Every error names the file and the key.
"""

from __future__ import annotations

import importlib.util
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from common.errors import ConfigError
from physio.dashboard.escalation import EscalationPolicy
from physio.dashboard.notify import (
    AppriseChannel,
    Channel,
    EscalationNotice,
    MqttChannel,
    RetryPolicy,
    WebhookChannel,
)

__all__ = ["AppriseTarget", "NotifySettings", "SiteConfig", "WebhookTarget"]


@dataclass(frozen=True)
class WebhookTarget:
    """A JSON webhook recipient (see notify.WebhookChannel)."""

    name: str
    url: str
    levels: frozenset[int] = frozenset({1, 2})
    timeout_s: float = 5.0
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class AppriseTarget:
    """A group of Apprise URLs (see notify.AppriseChannel)."""

    name: str
    urls: tuple[str, ...]
    levels: frozenset[int] = frozenset({1, 2})


@dataclass(frozen=True)
class NotifySettings:
    """Recipients of escalation notices and the retry policy."""

    webhooks: tuple[WebhookTarget, ...] = ()
    apprise: tuple[AppriseTarget, ...] = ()
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def channels(
        self, mqtt_publish: Callable[[EscalationNotice], Awaitable[None]]
    ) -> list[Channel]:
        """The broker channel first, then every configured recipient.

        Raises:
            ConfigError: Apprise rejects a URL.
        """
        channels: list[Channel] = [MqttChannel(mqtt_publish)]
        for hook in self.webhooks:
            channels.append(
                WebhookChannel(hook.name, hook.url, hook.levels, hook.timeout_s, dict(hook.headers))
            )
        for group in self.apprise:
            try:
                channels.append(AppriseChannel(group.name, group.urls, group.levels))
            except ValueError as exc:
                raise ConfigError(f"notify.apprise: {exc}") from exc
        return channels


@dataclass(frozen=True)
class SiteConfig:
    """What ``--config`` holds."""

    escalation: EscalationPolicy = field(default_factory=EscalationPolicy)
    notify: NotifySettings = field(default_factory=NotifySettings)

    @classmethod
    def load(cls, path: Path) -> SiteConfig:
        """Read and validate a site file. Raises ConfigError."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def from_mapping(cls, data: dict[str, Any], *, source: str = "<config>") -> SiteConfig:
        """Validate parsed TOML. Raises ConfigError naming ``source`` and the key."""
        _known(data, {"escalation", "notify"}, source)
        esc = _table(data, "escalation", source)
        _known(esc, {"first_after_s", "again_after_s"}, f"{source}: escalation")
        try:
            policy = EscalationPolicy(
                _number(esc, "first_after_s", 120.0, f"{source}: escalation"),
                _number(esc, "again_after_s", 240.0, f"{source}: escalation"),
            )
        except ValueError as exc:
            raise ConfigError(f"{source}: escalation: {exc}") from exc
        return cls(escalation=policy, notify=_notify(_table(data, "notify", source), source))


def _notify(table: dict[str, Any], source: str) -> NotifySettings:
    where = f"{source}: notify"
    _known(table, {"retry_min_s", "retry_max_s", "give_up_after_s", "webhook", "apprise"}, where)
    try:
        retry = RetryPolicy(
            _number(table, "retry_min_s", 1.0, where),
            _number(table, "retry_max_s", 60.0, where),
            _number(table, "give_up_after_s", 3600.0, where),
        )
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    webhooks = []
    for index, entry in enumerate(_array(table, "webhook", where)):
        at = f"{where}.webhook[{index}]"
        _known(entry, {"name", "url", "levels", "timeout_s", "headers"}, at)
        url = _string(entry, "url", at)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{at}.url: expected an http:// or https:// URL")
        headers = entry.get("headers", {})
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ConfigError(f"{at}.headers: expected a table of strings")
        webhooks.append(
            WebhookTarget(
                name=str(entry.get("name") or parts.hostname),
                url=url,
                levels=_levels(entry, at),
                timeout_s=_number(entry, "timeout_s", 5.0, at),
                headers=tuple(sorted(headers.items())),
            )
        )
    apprise = []
    for index, entry in enumerate(_array(table, "apprise", where)):
        at = f"{where}.apprise[{index}]"
        _known(entry, {"name", "urls", "levels"}, at)
        urls = entry.get("urls")
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
            raise ConfigError(f"{at}.urls: expected a non-empty list of Apprise URLs")
        apprise.append(
            AppriseTarget(
                name=str(entry.get("name") or f"apprise-{index + 1}"),
                urls=tuple(urls),
                levels=_levels(entry, at),
            )
        )
    if apprise and importlib.util.find_spec("apprise") is None:
        raise ConfigError(f"{where}.apprise needs Apprise: pip install 'posture-monitor[notify]'")
    names = [t.name for t in webhooks] + [t.name for t in apprise]
    if len(set(names)) != len(names) or "mqtt" in names:
        raise ConfigError(f"{where}: recipient names must be unique and not 'mqtt'")
    return NotifySettings(webhooks=tuple(webhooks), apprise=tuple(apprise), retry=retry)


def _known(table: dict[str, Any], known: set[str], where: str) -> None:
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; expected {sorted(known)}")


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key}: expected a table [{key}]")
    return value


def _array(data: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{where}.{key}: expected [[{key}]] tables")
    return value


def _number(data: dict[str, Any], key: str, default: float, where: str) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"{where}.{key}: expected a number > 0, got {value!r}")
    return float(value)


def _string(data: dict[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}.{key}: expected a non-empty string")
    return value


def _levels(data: dict[str, Any], where: str) -> frozenset[int]:
    value = data.get("levels", [1, 2])
    if not isinstance(value, list) or not value or not set(value) <= {1, 2}:
        raise ConfigError(f"{where}.levels: expected a list of 1 and/or 2")
    return frozenset(int(v) for v in value)

"""Escalation notices that leave the screen, and who the patient is (dashboard side only).

A real Mosquitto, the real DashboardService, and real HTTP receivers (aiohttp
servers on loopback) standing in for a pager gateway: a webhook that fails
and recovers, one that is dead, Apprise posting to a ``json://`` receiver.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from record_support import (  # noqa: F401  (fixtures, used by name)
    pg_database_fixture,
    pg_url_fixture,
)
from test_dashboard_support import (  # noqa: F401  (the fixture is used by name)
    CSRF,
    JumpClock,
    ack_headers,
    broker_url_fixture,
    event_json,
    free_port,
    running,
)

from common.errors import ConfigError
from physio.dashboard.auth import Credentials, hash_secret, valid_user_name
from physio.dashboard.escalation import EscalationPolicy
from physio.dashboard.notify import RetryPolicy
from physio.dashboard.patients import PatientDirectory
from physio.dashboard.site import AppriseTarget, NotifySettings, SiteConfig, WebhookTarget

FAST_RETRY = RetryPolicy(min_s=0.05, max_s=0.2, give_up_after_s=60.0)
PATIENTS = PatientDirectory.from_mapping(
    {"patients": {"p-001": {"name": "Jürgen Groß", "room": "3.12", "bed": "A"}}}
)


class Receiver:
    """A webhook receiver: answers ``statuses`` in turn (then 200), records what came."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.attempts = 0
        self.changed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 200:
            self.received.append((time.time(), json.loads(await request.read())))
        self.changed.set()
        return web.Response(status=status)

    async def wait(self, condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait for a condition of the service's state (checked every 20 ms)."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


def state_of(service: Any, key: tuple[str, int, str]) -> str | None:
    status = service.notifier.statuses.get(key)
    return None if status is None else str(status.state)


@asynccontextmanager
async def receiving(receiver: Receiver) -> AsyncIterator[str]:
    """Serve ``receiver`` on a free loopback port; yields its URL."""
    app = web.Application()
    app.router.add_post("/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


async def test_failed_webhook_is_retried_shown_and_never_blocks_the_others(
    broker_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    flaky = Receiver([500, 503])
    dead_url = f"http://127.0.0.1:{free_port()}/nobody-listens"
    async with receiving(flaky) as flaky_url:
        notify = NotifySettings(
            webhooks=(
                WebhookTarget("dead pager", dead_url, timeout_s=1.0),
                WebhookTarget("flaky pager", flaky_url),
            ),
            retry=FAST_RETRY,
        )
        async with running(
            broker_url, escalation=EscalationPolicy(0.3, 60.0), notify=notify, patients=PATIENTS
        ) as (service, peer):
            fall_id, payload = event_json("p-001", "fall_detected", time.time())
            await peer.publish("patients/p-001/events", payload)
            # The bridge copy goes out while one recipient is dead and one failing.
            bridge = await peer.wait_for(f"{peer.root}/escalations")
            assert bridge[0]["event_id"] == fall_id and "patient" not in bridge[0]
            await flaky.wait(lambda: len(flaky.received) == 1)
            assert flaky.attempts == 3
            _received_s, notice = flaky.received[0]
            assert notice["level"] == 1 and notice["event_id"] == fall_id
            assert notice["patient"]["name"] == "Jürgen Groß"
            assert notice["patient"]["location"] == "room 3.12 · bed A"
            statuses = service.notifier.statuses
            await until(lambda: state_of(service, (fall_id, 1, "flaky pager")) == "delivered")
            await until(lambda: state_of(service, (fall_id, 1, "mqtt")) == "delivered")
            await until(lambda: statuses[(fall_id, 1, "dead pager")].attempts >= 2)
            dead = statuses[(fall_id, 1, "dead pager")]
            assert dead.state == "retrying" and "connect" in dead.error.lower()
            # What the page shows on the fall, and the fall itself is untouched.
            alert = service.model.alert(fall_id)
            assert alert is not None and alert["status"] == "open"
            shown = {n["channel"]: n for n in alert["notifications"]}
            assert shown["flaky pager"]["state"] == "delivered"
            assert shown["dead pager"]["state"] == "retrying"
            assert shown["dead pager"]["attempts"] >= 2
            # Names and beds never reach the broker.
            assert all(b"Gro" not in m.payload for m in peer.received)
            # Answered on the dashboard: the dead pager is no longer retried.
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    service.url + f"api/alerts/{fall_id}/ack",
                    headers=await ack_headers(http, service.url),
                    json={"action": "acknowledged", "by": "Anna"},
                ) as response,
            ):
                assert response.status == 200
            await until(lambda: state_of(service, (fall_id, 1, "dead pager")) == "stopped")
            attempts = statuses[(fall_id, 1, "dead pager")].attempts
            assert service.notifier.pending == 0  # nothing left to retry
            alert = service.model.alert(fall_id)
            assert alert is not None
            shown = {n["channel"]: n for n in alert["notifications"]}
            assert shown["dead pager"]["state"] == "stopped"
            assert statuses[(fall_id, 1, "dead pager")].attempts == attempts
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "via flaky pager failed (attempt 1" in logged and "HTTP 500" in logged
    assert "Groß" not in logged and "p-001" not in logged  # no name, id masked


async def test_escalation_goes_out_while_the_broker_is_down(broker: Any) -> None:
    pager = Receiver()
    clock = JumpClock()
    async with receiving(pager) as pager_url:
        notify = NotifySettings(webhooks=(WebhookTarget("pager", pager_url),), retry=FAST_RETRY)
        async with running(
            broker.url, clock, escalation=EscalationPolicy(120.0, 240.0), notify=notify
        ) as (service, peer):
            fall_id, payload = event_json("p-005", "fall_detected", time.time())
            await peer.publish("patients/p-005/events", payload)
            await until(lambda: service.model.alert(fall_id) is not None)
            await broker.stop()
            await until(lambda: not service.model.broker_connected)
            clock.advance(121.0)  # level 1 falls due with the broker gone
            await pager.wait(lambda: len(pager.received) == 1)
            assert pager.received[0][1]["event_id"] == fall_id
            assert state_of(service, (fall_id, 1, "mqtt")) in ("sending", "retrying")
            alert = service.model.alert(fall_id)
            assert alert is not None and alert["escalation_level"] == 1
            await broker.start()
            # The MQTT copies go out once the broker is back.
            await until(lambda: state_of(service, (fall_id, 1, "mqtt")) == "delivered", 15.0)


async def test_two_instances_on_one_record_send_each_notice_once(
    broker_url: str, pg_url: str
) -> None:
    pager = Receiver()
    root = f"t{uuid.uuid4().hex[:8]}/posture/v1"
    async with receiving(pager) as pager_url:
        options: dict[str, Any] = {
            "topic_root": root,
            "database": pg_url,
            "escalation": EscalationPolicy(1.0, 2.0),
            "notify": NotifySettings(webhooks=(WebhookTarget("pager", pager_url),)),
        }
        async with (
            running(broker_url, **options) as (first, peer),
            running(broker_url, **options) as (second, _),
        ):
            old_s = time.time() - 600  # both levels due at once: the instances race
            falls = [event_json(f"p-{n:03d}", "fall_detected", old_s) for n in range(6)]
            for n, (_fall_id, payload) in enumerate(falls):
                # Under the shared root (the peer's own root is another one).
                await peer.client.publish(f"{root}/patients/p-{n:03d}/events", payload, qos=1)
            ids = [fall_id for fall_id, _ in falls]
            # Done when both know every level as issued (claimed by one, seen
            # by the other) and neither has a notice left to send.
            await until(
                lambda: all(
                    service.escalator.level(i) == 2 and service.notifier.pending == 0
                    for service in (first, second)
                    for i in ids
                ),
                timeout_s=30.0,
            )
            await pager.wait(lambda: len(pager.received) >= 12)
    sent = sorted((notice["event_id"], notice["level"]) for _t, notice in pager.received)
    assert sent == sorted((i, level) for i in ids for level in (1, 2))  # each exactly once
    senders = {
        name
        for name, service in (("first", first), ("second", second))
        if any(key[2] == "pager" for key in service.notifier.statuses)
    }
    print(f"\nwebhook notices sent by: {sorted(senders)}")


async def test_notifier_gives_up_after_its_limit_and_says_so(broker_url: str) -> None:
    notify = NotifySettings(
        webhooks=(WebhookTarget("gone", f"http://127.0.0.1:{free_port()}/x", timeout_s=0.5),),
        retry=RetryPolicy(min_s=0.05, max_s=0.05, give_up_after_s=0.3),
    )
    async with running(broker_url, escalation=EscalationPolicy(0.2, 60.0), notify=notify) as (
        service,
        peer,
    ):
        fall_id, payload = event_json("p-004", "fall_detected", time.time())
        await peer.publish("patients/p-004/events", payload)
        await until(lambda: state_of(service, (fall_id, 1, "gone")) == "failed")
        alert = service.model.alert(fall_id)
        assert alert is not None and alert["status"] == "open"
        assert {n["channel"]: n["state"] for n in alert["notifications"]}["gone"] == "failed"


async def test_apprise_delivers_the_notice_text(
    broker_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("apprise", reason="the notify extra is not installed")
    caplog.set_level(logging.DEBUG)  # even with -v -v, no name reaches a log
    receiver = Receiver()
    async with receiving(receiver) as url:
        apprise_url = url.replace("http://", "json://")
        notify = NotifySettings(apprise=(AppriseTarget("charge nurse", (apprise_url,)),))
        async with running(
            broker_url, escalation=EscalationPolicy(0.2, 60.0), notify=notify, patients=PATIENTS
        ) as (service, peer):
            fall_id, payload = event_json("p-001", "fall_detected", time.time())
            await peer.publish("patients/p-001/events", payload)
            await receiver.wait(lambda: len(receiver.received) >= 1)
            body = receiver.received[0][1]
            assert "Jürgen Groß" in body["title"] and "room 3.12 · bed A" in body["message"]
            await until(lambda: state_of(service, (fall_id, 1, "charge nurse")) == "delivered")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "charge nurse" in logged and "Groß" not in logged and "3.12" not in logged


async def test_non_ascii_user_logs_in_and_acks_under_that_name(broker_url: str) -> None:
    credentials = Credentials(users={"Dr Müller": hash_secret("correct horse")})
    async with (
        running(broker_url, credentials=credentials) as (service, peer),
        # unsafe=True: aiohttp's client (unlike a browser) ignores cookies of IP hosts.
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
    ):
        async with http.post(
            service.url + "login",
            data={"name": "Dr Mu\u0308ller", "secret": "correct horse"},  # decomposed ü
            allow_redirects=False,
        ) as response:
            assert response.status == 302 and response.headers["Location"] == "/"
        fall_id, payload = event_json("p-001", "fall_detected", time.time())
        await peer.publish("patients/p-001/events", payload)
        async with asyncio.timeout(5):
            while service.model.alert(fall_id) is None:
                await asyncio.sleep(0.02)
        async with http.post(
            service.url + f"api/alerts/{fall_id}/ack",
            headers=await ack_headers(http, service.url),
            json={"action": "resolved"},
        ) as response:
            assert response.status == 200
        acks = await peer.wait_for("/patients/p-001/acks")
        assert acks[0]["by"] == "Dr Müller"


def test_user_names_accept_letters_of_any_script_but_no_markup() -> None:
    for good in ("Dr Müller", "Zoë O'Neill", "Łukasz", "山田 太郎", "anna.b@ward-3"):
        assert valid_user_name(good), good
    for bad in ("", " ", "a:b", "<script>", "tab\there", "x" * 65, "bell\x07"):
        assert not valid_user_name(bad), bad


def test_site_config_sets_delays_and_recipients(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(
        """
[escalation]
first_after_s = 90
again_after_s = 300

[notify]
retry_max_s = 30

[[notify.webhook]]
name = "ward pager"
url = "https://pager.example.org/hook?token=s3cret"
levels = [2]
headers = { Authorization = "Bearer x" }
""",
        encoding="utf-8",
    )
    site = SiteConfig.load(path)
    assert (site.escalation.first_after_s, site.escalation.again_after_s) == (90.0, 300.0)
    assert site.notify.retry.max_s == 30.0
    (hook,) = site.notify.webhooks
    assert hook.name == "ward pager" and hook.levels == frozenset({2})
    assert SiteConfig().escalation.first_after_s == 120.0  # the defaults: 2 and 4 minutes
    assert SiteConfig().escalation.again_after_s == 240.0


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("[escalation]\nfirst_after_s = 300\nagain_after_s = 200\n", "escalation"),
        ("[escalation]\nfirst_after = 3\n", "unknown key"),
        ('[[notify.webhook]]\nurl = "ftp://x/y"\n', "notify.webhook[0].url"),
        ('[[notify.webhook]]\nurl = "http://x/y"\nlevels = [3]\n', "levels"),
        ('[[notify.webhook]]\nname = "mqtt"\nurl = "http://x/y"\n', "unique"),
        ("[notify]\nretry_min_s = 0\n", "retry_min_s"),
    ],
)
def test_site_config_errors_name_the_file_and_key(
    tmp_path: Path, text: str, complaint: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(complaint)) as info:
        SiteConfig.load(path)
    assert str(path) in str(info.value)


def test_patients_file_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "patients.toml"
    path.write_text(
        '[patients.p-001]\nname = "Jürgen Groß"\nroom = "3.12"\n\n[patients.p-002]\nbed = "B"\n',
        encoding="utf-8",
    )
    directory = PatientDirectory.load(path)
    assert directory.to_dict()["p-001"]["location"] == "room 3.12"
    assert directory.to_dict()["p-002"] == {"name": "", "room": "", "bed": "B", "location": "bed B"}
    for bad, complaint in (
        ('[patients."p 1"]\nname = "x"\n', "patient id"),
        ("[patients.p-1]\nage = 80\n", "unknown key"),
        ('[patients.p-1]\nname = "a\\nb"\n', "printable"),
    ):
        path.write_text(bad, encoding="utf-8")
        with pytest.raises(ConfigError, match=complaint):
            PatientDirectory.load(path)

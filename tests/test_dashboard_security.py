"""The dashboard's trust boundaries over real HTTP, with a real broker.

Issue 14, findings 4 and 7: any Host header was served (DNS rebinding), a
logged-out browser's stream kept receiving alerts, ten bad logins locked the
right password out for everyone at an address while 300 guesses from 30
rotating addresses were all checked. Client source addresses 127.0.0.x stand
for different machines (Linux routes all of 127/8 to loopback).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_dashboard_support import (  # noqa: F401  (the fixture is used by name)
    CSRF,
    ack_headers,
    broker_url_fixture,
    event_json,
    running,
)

from physio.dashboard.auth import Credentials, hash_secret
from physio.dashboard.server import SESSION_COOKIE

PASSWORD = "correct horse battery"


def jar() -> aiohttp.CookieJar:
    # unsafe=True: aiohttp's client (unlike a browser) ignores cookies of IP hosts.
    return aiohttp.CookieJar(unsafe=True)


@asynccontextmanager
async def client_from(address: str = "127.0.0.1") -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client whose connections come from ``address``."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector, cookie_jar=jar()) as http:
        yield http


async def login(http: aiohttp.ClientSession, url: str, name: str, secret: str) -> str:
    """The ``Location`` a login answers with (or the status when not a redirect)."""
    async with http.post(
        url + "login", data={"name": name, "secret": secret}, allow_redirects=False
    ) as response:
        return response.headers.get("Location", str(response.status))


async def open_fall(service: Any, peer: Any, patient: str = "p-001") -> str:
    fall_id, payload = event_json(patient, "fall_detected", time.time())
    await peer.publish(f"patients/{patient}/events", payload)
    async with asyncio.timeout(5):
        while service.model.alert(fall_id) is None:
            await asyncio.sleep(0.02)
    return fall_id


async def read_until(stream: aiohttp.ClientResponse, marker: bytes) -> None:
    async with asyncio.timeout(10):
        async for line in stream.content:
            if line.startswith(marker):
                return
    raise AssertionError(f"stream ended before {marker!r}")


async def until_closed(stream: aiohttp.ClientResponse) -> list[bytes]:
    """Every line the stream still sends, until the server ends it."""
    lines = []
    async with asyncio.timeout(10):
        async for line in stream.content:
            lines.append(line)
    return lines


async def test_foreign_host_names_are_refused_and_cannot_read_or_resolve(broker_url: str) -> None:
    async with (
        running(broker_url, allowed_hosts=("ward-7.example",)) as (service, peer),
        aiohttp.ClientSession() as http,
    ):
        fall_id = await open_fall(service, peer)
        port = service.url.rsplit(":", 1)[1].rstrip("/")
        headers = await ack_headers(http, service.url)  # a real page's token
        for host in (f"evil.example:{port}", f"127.0.0.1.evil.example:{port}", "evil.example"):
            for path in ("", "api/snapshot", "api/stream"):
                async with http.get(service.url + path, headers={"Host": host}) as response:
                    assert response.status == 421, (host, path)
                    assert "p-001" not in await response.text()
            async with http.post(
                service.url + f"api/alerts/{fall_id}/ack",
                headers={**headers, "Host": host, "Origin": f"http://{host}"},
                json={"action": "resolved"},
            ) as response:
                assert response.status == 421
        assert (service.model.alert(fall_id) or {}).get("status") == "open"
        assert peer.on("/acks") == []
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"ward-7.example:{port}"):
            async with http.get(service.url + "api/snapshot", headers={"Host": host}) as response:
                assert response.status == 200, host


async def test_state_changes_need_our_origin_and_the_pages_csrf_token(broker_url: str) -> None:
    async with running(broker_url) as (service, peer), aiohttp.ClientSession() as http:
        fall_id = await open_fall(service, peer)
        url = service.url + f"api/alerts/{fall_id}/ack"
        good = await ack_headers(http, service.url)
        port = service.url.rsplit(":", 1)[1].rstrip("/")
        refused: list[dict[str, str]] = [
            {**good, "Origin": "http://evil.example"},
            {**good, "Origin": f"http://127.0.0.1:{int(port) + 1}"},
            {**good, "Origin": "null"},
            {**good, "Sec-Fetch-Site": "cross-site"},
            {**CSRF},  # no token
            {**CSRF, "X-CSRF-Token": "forged"},
        ]
        for headers in refused:
            async with http.post(url, headers=headers, json={"action": "resolved"}) as response:
                assert response.status == 403, headers
        assert (service.model.alert(fall_id) or {}).get("status") == "open"
        origin = {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"}
        async with http.post(
            url, headers={**good, **origin}, json={"action": "resolved"}
        ) as response:
            assert response.status == 200
        assert (await peer.wait_for("/acks"))[0]["event_id"] == fall_id


async def test_cookies_are_httponly_strict_and_secure_over_tls(broker_url: str) -> None:
    credentials = Credentials(users={"anna": hash_secret(PASSWORD)})
    async with (
        running(broker_url, credentials=credentials) as (service, _peer),
        client_from() as http,
    ):
        for proto, secure in (("http", ""), ("https", True)):
            async with http.post(
                service.url + "login",
                data={"name": "anna", "secret": PASSWORD},
                headers={"X-Forwarded-Proto": proto},
                allow_redirects=False,
            ) as response:
                assert response.headers["Location"] == "/"
                cookie = response.cookies[SESSION_COOKIE]
                assert cookie["httponly"] and cookie["samesite"] == "Strict"
                assert cookie["secure"] == secure
                device = response.cookies["pm_device"]
                assert device["httponly"] and device["path"] == "/login"


@pytest.mark.parametrize("how", ["logout", "expiry"])
async def test_an_ended_session_ends_its_live_stream(broker_url: str, how: str) -> None:
    credentials = Credentials(users={"anna": hash_secret(PASSWORD)})
    lifetime_s = 1.0 if how == "expiry" else 3600.0
    async with (
        running(broker_url, credentials=credentials, session_lifetime_s=lifetime_s) as (
            service,
            peer,
        ),
        client_from() as http,
    ):
        assert await login(http, service.url, "anna", PASSWORD) == "/"
        async with http.get(service.url + "api/stream") as stream:
            await read_until(stream, b"event: snapshot")
            if how == "logout":
                async with http.post(
                    service.url + "logout", headers=CSRF, allow_redirects=False
                ) as response:
                    assert response.status == 302
            rest = await until_closed(stream)  # the server ends it (at once / at expiry)
        await open_fall(service, peer)  # a fall after the end reaches no one
        assert not any(line.startswith(b"event: alert") for line in rest)
        async with http.get(service.url + "api/snapshot") as response:
            assert response.status == 401
        assert service.broadcaster.count == 0


async def test_password_change_and_user_removal_end_that_users_streams(
    broker_url: str, tmp_path: Path
) -> None:
    passwords = tmp_path / "passwd"
    passwords.write_text(f"anna:{hash_secret(PASSWORD)}\nbob:{hash_secret(PASSWORD)}\n")
    credentials = Credentials.load(passwords, None)
    async with (
        running(broker_url, credentials=credentials) as (service, peer),
        client_from() as anna,
        client_from() as bob,
    ):
        assert await login(anna, service.url, "anna", PASSWORD) == "/"
        assert await login(bob, service.url, "bob", PASSWORD) == "/"
        async with (
            anna.get(service.url + "api/stream") as anna_stream,
            bob.get(service.url + "api/stream") as bob_stream,
        ):
            await read_until(anna_stream, b"event: snapshot")
            await read_until(bob_stream, b"event: snapshot")
            # The administrator sets a new password for anna.
            passwords.write_text(
                f"anna:{hash_secret('new password 2')}\n" + passwords.read_text().split("\n", 1)[1]
            )
            await until_closed(anna_stream)
            await open_fall(service, peer)  # bob is still served
            await read_until(bob_stream, b"event: alert")
            # ... and removes bob.
            passwords.write_text(passwords.read_text().split("\n", 1)[0] + "\n")
            await until_closed(bob_stream)
        for http in (anna, bob):
            async with http.get(service.url + "api/snapshot") as response:
                assert response.status == 401
        assert await login(anna, service.url, "anna", "new password 2") == "/"


async def test_bad_logins_slow_the_guesser_but_never_lock_the_ward_out(broker_url: str) -> None:
    credentials = Credentials(users={"anna": hash_secret(PASSWORD)})
    async with running(broker_url, credentials=credentials) as (service, _peer):
        url = service.url
        # The ward's tablet at 127.0.0.2 logged in before (it has the device cookie).
        async with client_from("127.0.0.2") as tablet:
            assert await login(tablet, url, "anna", PASSWORD) == "/"
            async with tablet.post(url + "logout", headers=CSRF, allow_redirects=False):
                pass
            # Someone behind the same address guesses: 3 checks, then waits.
            async with client_from("127.0.0.2") as guesser:
                answers = [await login(guesser, url, "anna", f"guess {i}") for i in range(10)]
            assert answers[:3] == ["/login?failed=1"] * 3
            assert set(answers[3:]) == {"429"}
            # A nurse at another address, and the tablet itself, get in at once.
            async with client_from("127.0.0.3") as nurse:
                assert await login(nurse, url, "anna", PASSWORD) == "/"
            assert await login(tablet, url, "anna", PASSWORD) == "/"

            # 300 guesses from 30 rotating addresses: only ~20 are ever checked.
            async with contextlib.AsyncExitStack() as stack:
                guessers = [
                    await stack.enter_async_context(client_from(f"127.0.1.{i}"))
                    for i in range(1, 31)
                ]
                answers = [
                    await login(http, url, "anna", f"guess {round_}-{n}")
                    for round_ in range(10)
                    for n, http in enumerate(guessers)
                ]
            checked = answers.count("/login?failed=1")
            # 20 before the account is slowed, then one per 5 s while this runs.
            assert len(answers) == 300 and checked <= 30, checked
            assert set(answers) == {"/login?failed=1", "429"}  # the rest never hashed
            # The known tablet is not slowed; a new browser is slowed, not locked.
            async with tablet.post(url + "logout", headers=CSRF, allow_redirects=False):
                pass
            assert await login(tablet, url, "anna", PASSWORD) == "/"
        async with (
            client_from("127.0.0.4") as newcomer,
            newcomer.post(
                url + "login", data={"name": "anna", "secret": PASSWORD}, allow_redirects=False
            ) as response,
        ):
            assert response.status == 429
            assert 1 <= int(response.headers["Retry-After"]) <= 5


async def test_a_login_flood_waits_for_no_more_than_a_few_hashes(broker_url: str) -> None:
    credentials = Credentials(users={"anna": hash_secret(PASSWORD)})
    async with (
        running(broker_url, credentials=credentials) as (service, _peer),
        client_from("127.0.0.9") as tablet,
    ):
        assert await login(tablet, service.url, "anna", PASSWORD) == "/"  # known browser

        async def attempt(index: int) -> str:
            async with client_from(f"127.0.2.{index + 1}") as http:
                return await login(http, service.url, "anna", f"guess {index}")

        answers = await asyncio.gather(*(attempt(i) for i in range(40)))
        # At most one check runs and 4 wait; the rest are told at once to retry
        # (503), so hashing never queues up behind the broker's connect.
        assert "503" in answers and "/login?failed=1" in answers
        assert set(answers) <= {"503", "/login?failed=1", "429"}
        assert await login(tablet, service.url, "anna", PASSWORD) == "/"

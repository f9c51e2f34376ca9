"""Shared fixtures: private MQTT brokers and a recording subscriber.

``broker``            private mosquitto on a free port (amqtt when the binary
                      is absent); ``.url .host .port .settings(**kw)``,
                      ``await .stop() / .start() / .kill()``.
``persistent_broker`` mosquitto with persistence on (sessions survive restarts).
``embedded_broker``   the embedded amqtt broker (MQTT 3.1.1 only).
``tls_broker``        mosquitto with TLS and a password file; ``.username``,
                      ``.password``, ``.tls`` (CA/certs), ``.mtls_port``.
``collector``         factory: ``await collector(broker, [filters], **kw)``
                      returns a started ``tests.brokers.Collector``.
"""

from __future__ import annotations

import secrets
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from brokers import (
    MOSQUITTO,
    MOSQUITTO_PASSWD,
    OPENSSL,
    Collector,
    EmbeddedTestBroker,
    MosquittoBroker,
    TlsFiles,
    make_password_file,
    make_tls_files,
)

AnyBroker = MosquittoBroker | EmbeddedTestBroker


def pytest_configure(config: pytest.Config) -> None:
    """The Ctrl-C tests send SIGINT to the programs they start, as a user at a
    terminal does. A runner that starts the suite as a background job of a
    non-interactive shell (``cmd &`` in a script) starts it with SIGINT
    ignored, every child inherits that, and our programs rightly keep an
    inherited SIG_IGN (as Python and shells do, so a Ctrl-C in the terminal
    never stops a background job): the tests would then wait on programs
    that were never asked to stop. A terminal's programs start with the
    default disposition; so do this suite's."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# The private system bus and BlueZ stand-in fixtures (tests marked bluez).
pytest_plugins = ["bluez_harness"]


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[AnyBroker]:
    """A private broker for one test (mosquitto, else embedded amqtt)."""
    instance: AnyBroker = (
        MosquittoBroker(tmp_path / "mosquitto") if MOSQUITTO else EmbeddedTestBroker()
    )
    await instance.start()
    try:
        yield instance
    finally:
        await instance.stop()


@pytest.fixture
async def persistent_broker(tmp_path: Path) -> AsyncIterator[MosquittoBroker]:
    """Mosquitto with persistence: sessions and queued messages survive stop/start."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto binary not installed")
    instance = MosquittoBroker(tmp_path / "mosquitto-persistent", persistence=True)
    await instance.start()
    try:
        yield instance
    finally:
        await instance.stop()


@pytest.fixture
async def embedded_broker() -> AsyncIterator[EmbeddedTestBroker]:
    """The embedded amqtt broker (MQTT 3.1.1 only)."""
    instance = EmbeddedTestBroker()
    await instance.start()
    try:
        yield instance
    finally:
        await instance.stop()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throwaway CA with server (127.0.0.1) and client certificates."""
    if OPENSSL is None:
        pytest.skip("openssl CLI not installed")
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def tls_broker(tmp_path: Path, tls_files: TlsFiles) -> AsyncIterator[MosquittoBroker]:
    """Mosquitto over TLS with one password user (``.username``/``.password``)."""
    if MOSQUITTO is None or MOSQUITTO_PASSWD is None:
        pytest.skip("mosquitto / mosquitto_passwd not installed")
    username, password = "gateway", "pw-" + secrets.token_hex(8)
    passwd = make_password_file(tmp_path / "passwd", username, password)
    instance = MosquittoBroker(tmp_path / "mosquitto-tls", tls=tls_files, password_file=passwd)
    instance.username = username  # type: ignore[attr-defined]
    instance.password = password  # type: ignore[attr-defined]
    await instance.start()
    try:
        yield instance
    finally:
        await instance.stop()


@pytest.fixture
async def collector() -> AsyncIterator[Callable[..., Awaitable[Collector]]]:
    """Factory of started recording subscribers, stopped after the test."""
    started: list[Collector] = []

    async def make(target: AnyBroker, topics: list[str], **kwargs: Any) -> Collector:
        instance = await Collector(target, topics, **kwargs).start()
        started.append(instance)
        return instance

    try:
        yield make
    finally:
        for instance in started:
            await instance.stop()

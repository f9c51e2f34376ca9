"""A site's wearables over several gateway processes (``device_gateway.shards``).

The end-to-end test runs ``posture-monitor run`` with two processes over a
small simulated ward against a private Mosquitto: every patient's falls and
states reach the broker, each shard's retained status is online where
``watch`` and ``status`` read it, and SIGINT stops both workers cleanly. The
rest checks the split itself and the settings that choose it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from brokers import Collector, MosquittoBroker, Received
from shard_workers import crash_once_then_serve, serve_or_fail
from test_sigterm import program

from alerts import Outbox, Topics
from alerts.settings import Message
from common.errors import ConfigError
from device_gateway import GatewayConfig
from device_gateway.shards import (
    WEARABLES_PER_PROCESS,
    ShardProcesses,
    leftover_outboxes,
    process_count,
    shard_index,
    shards,
)
from physio.status import collect_statuses
from physio.watch_view import WatchModel
from posture.kernels import warm_up
from posture_monitor import service

MakeCollector = Callable[..., Awaitable[Collector]]
GW = "ward-sh"
TOPICS = Topics()

# Three patients: the two fallers land in different shards of two
# (shard_index: ...:02 → 0, ...:03 → 1), the sitter beside the first.
WARD = {
    "C0:FF:EE:00:00:01": "p-sit",
    "C0:FF:EE:00:00:02": "p-fall-a",
    "C0:FF:EE:00:00:03": "p-fall-b",
}
SCENARIO_TOML = """
[scenario]
name = "shards"
duration_s = 60.0

[[patients]]
id = "p-sit"
[patients.wearable]
address = "C0:FF:EE:00:00:01"
[[patients.timeline]]
at_s = 0.0
activity = "sit"

[[patients]]
id = "p-fall-a"
[patients.wearable]
address = "C0:FF:EE:00:00:02"
[[patients.timeline]]
at_s = 0.0
activity = "stand"
[[patients.timeline]]
at_s = 3.0
activity = "walk"
[[patients.timeline]]
at_s = 20.0
activity = "fall"
direction = "forward"

[[patients]]
id = "p-fall-b"
[patients.wearable]
address = "C0:FF:EE:00:00:03"
[[patients.timeline]]
at_s = 0.0
activity = "stand"
[[patients.timeline]]
at_s = 3.0
activity = "walk"
[[patients.timeline]]
at_s = 21.0
activity = "fall"
direction = "backward"
"""


def gateway_toml(url: str, outbox: Path, *, ble: str = "processes = 2") -> str:
    wearables = "".join(
        f'\n[[wearables]]\naddress = "{address}"\npatient_id = "{patient}"\n'
        for address, patient in WARD.items()
    )
    return (
        f'gateway_id = "{GW}"\noutbox_path = "{outbox}"\n\n[broker]\nurl = "{url}"\n\n'
        f"[ble]\n{ble}\n{wearables}"
    )


def load(tmp_path: Path, ble: str = "processes = 2") -> GatewayConfig:
    path = tmp_path / "gateway.toml"
    path.write_text(gateway_toml("mqtt://127.0.0.1:1883", tmp_path / "outbox.sqlite", ble=ble))
    return GatewayConfig.load(path)


def payloads(messages: list[Received], suffix: str) -> list[dict[str, object]]:
    return [json.loads(m.payload) for m in messages if m.topic.endswith(suffix) and m.payload]


def statuses_of(messages: list[Received]) -> dict[str, str]:
    """Gateway id → its latest status ("online"/"offline")."""
    latest: dict[str, str] = {}
    for status in payloads(messages, "/status"):
        latest[str(status["gateway_id"])] = str(status["status"])
    return latest


def falls_of(messages: list[Received]) -> set[str]:
    return {
        str(e["patient_id"]) for e in payloads(messages, "/events") if e["type"] == "fall_detected"
    }


def states_of(messages: list[Received]) -> dict[str, str]:
    """Patient id → the gateway id its states name."""
    return {str(s["patient_id"]): str(s["gateway_id"]) for s in payloads(messages, "/state")}


async def _read_lines(stream: asyncio.StreamReader, into: list[str]) -> None:
    async for line in stream:
        into.append(line.decode(errors="replace"))


# Generous: a first run compiles the engine's kernels in both workers.
@pytest.mark.timeout(300)
async def test_two_processes_serve_a_ward_and_stop_on_sigint(
    tmp_path: Path, broker: MosquittoBroker, collector: MakeCollector
) -> None:
    if not isinstance(broker, MosquittoBroker):
        pytest.skip("needs mosquitto")
    config = tmp_path / "gateway.toml"
    config.write_text(gateway_toml(broker.url, tmp_path / "outbox.sqlite"))
    scenario = tmp_path / "ward.toml"
    scenario.write_text(SCENARIO_TOML)
    shard_of = {
        p: f"{GW}-p{shard_index(a, 2) + 1}" for a, p in WARD.items()
    }  # the shard the gateway must put each patient in
    assert set(shard_of.values()) == {f"{GW}-p1", f"{GW}-p2"}
    watcher = await collector(broker, ["posture/v1/#"])
    # The engine's kernels into numba's on-disk cache first: each worker
    # compiles them before it connects, while its simulated ward's clock
    # already runs (a first compile on a busy machine outlasts the falls).
    await asyncio.to_thread(warm_up)
    async with program(
        "run", "--config", str(config), "--simulate", str(scenario), "--speed", "2"
    ) as gateway:
        # Read the log as it comes: three processes write to this one pipe,
        # and a full pipe would stall them all.
        assert gateway.stderr is not None
        log: list[str] = []
        reader = asyncio.create_task(_read_lines(gateway.stderr, log))
        try:
            seen = await watcher.wait_for(
                lambda ms: (
                    falls_of(ms) == {"p-fall-a", "p-fall-b"}
                    and states_of(ms) == shard_of
                    and statuses_of(ms) == {f"{GW}-p1": "online", f"{GW}-p2": "online"}
                ),
                150.0,
            )
            # Each fall came from its patient's shard, as its gateway.
            for event in payloads(seen, "/events"):
                assert event["gateway_id"] == shard_of[str(event["patient_id"])]
            # Where the physio side reads them: `watch` shows every patient's
            # gateway online, `status` finds both retained statuses.
            view = WatchModel(TOPICS)
            for m in seen:
                view.handle(Message(m.topic, m.payload, m.qos, m.retain))
            screen = view.render()
            assert "3 patient(s), 2/2 gateway(s) online" in screen
            for patient, gw in shard_of.items():
                assert any(
                    line.startswith(patient) and gw in line and "online" in line
                    for line in screen.splitlines()
                ), screen
            for gw in (f"{GW}-p1", f"{GW}-p2"):
                # Returns as soon as the asked gateway's retained status came.
                found = await collect_statuses(broker.settings(), gateway_id=gw, wait_s=30.0)
                assert found[gw].online, found
            # Ctrl-C at the parent: one SIGTERM to each worker, a clean stop
            # (the parent kills a worker still running after 25 s).
            gateway.send_signal(signal.SIGINT)
            code = await asyncio.wait_for(gateway.wait(), 60.0)
            await asyncio.wait_for(reader, 30.0)  # every process closed the pipe
        except (AssertionError, TimeoutError) as exc:
            raise AssertionError(f"{exc!r}; the gateway's log ends:\n{''.join(log[-40:])}") from exc
        stderr = "".join(log)
    assert code == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    assert "SIGINT: stopping 2 gateway process(es)" in stderr
    for gw, links in ((f"{GW}-p1", 2), (f"{GW}-p2", 1)):
        assert f"[{gw}] posture_monitor.service: stopped by SIGTERM" in stderr
        assert f"gateway {gw} stopped: {links} wearable link(s) closed" in stderr
        assert f"shard {gw} stopped" in stderr
    # Each shard published "offline" itself (with its metrics) on the way out.
    last = await watcher.wait_for(
        lambda ms: statuses_of(ms) == {f"{GW}-p1": "offline", f"{GW}-p2": "offline"}, 10.0
    )
    assert all("events_published" in s["metrics"] for s in payloads(last, "/status")[-2:])  # type: ignore[operator]
    # Each shard kept its own outbox, and left nothing in it.
    for k in (1, 2):
        with Outbox(tmp_path / f"outbox.p{k}.sqlite") as left:
            assert len(left) == 0
    assert not (tmp_path / "outbox.sqlite").exists()
    # The falls stay open (nobody answered them) in their shard's file: a run
    # with one process would not keep them, and is told so at start.
    site = GatewayConfig.load(config)
    assert leftover_outboxes(site, 2) == []
    assert [(p.name, events, falls) for p, events, falls in leftover_outboxes(site, 1)] == [
        ("outbox.p1.sqlite", 0, 1),
        ("outbox.p2.sqlite", 0, 1),
    ]


def test_every_wearable_is_in_exactly_one_shard(tmp_path: Path) -> None:
    config = load(tmp_path, "processes = 2")
    parts = shards(config, 2)
    assert [p.id for p in parts] == [f"{GW}-p1", f"{GW}-p2"]
    served = [w.address for p in parts for w in p.config.wearables]
    assert sorted(served) == sorted(WARD)
    for part in parts:
        assert all(part.holds(w.address) for w in part.config.wearables)
        assert part.config.outbox_path == tmp_path / f"outbox.p{part.index + 1}.sqlite"
        assert part.config.ble.processes == 1
        # Everything else is the site's config.
        assert part.config.broker == config.broker and part.config.topic_root == config.topic_root
    # The split is a property of the address alone: stable under list edits.
    assert [shard_index(a.lower(), 2) for a in WARD] == [shard_index(a, 2) for a in WARD]
    assert shards(config, 2) == parts


def test_shards_without_wearables_are_not_started(tmp_path: Path) -> None:
    parts = shards(load(tmp_path), 8)
    assert 1 <= len(parts) <= 3
    assert sum(len(p.config.wearables) for p in parts) == 3


def test_a_gateway_id_too_long_for_the_suffix_is_refused(tmp_path: Path) -> None:
    # Ids are MQTT topic levels of at most 64 characters: 61 + "-p9" fits.
    config = dataclasses.replace(load(tmp_path), gateway_id="g" * 61)
    assert {p.id for p in shards(config, 9)} <= {f"{'g' * 61}-p{k}" for k in range(1, 10)}
    with pytest.raises(ConfigError, match=r"gateway_id must be at most 60 characters"):
        shards(config, 10)


def test_the_process_count_is_the_flag_then_the_config_then_the_machine(tmp_path: Path) -> None:
    assert process_count(load(tmp_path, "processes = 2")) == 2
    assert process_count(load(tmp_path, "processes = 2"), 1) == 1
    # Three wearables: one process serves them, whatever the cores.
    assert WEARABLES_PER_PROCESS > 3
    assert process_count(load(tmp_path, "")) == 1
    with pytest.raises(ConfigError, match=r"--processes must be 1\.\.64, got 0"):
        process_count(load(tmp_path, ""), 0)


def test_run_refuses_a_bad_process_count_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from posture_monitor.cli import main

    path = tmp_path / "gateway.toml"
    path.write_text(gateway_toml("mqtt://127.0.0.1:1883", tmp_path / "o.sqlite", ble=""))
    assert main(["run", "--config", str(path), "--processes", "0"]) == 2
    assert "--processes must be 1..64" in capsys.readouterr().err
    outbox = tmp_path / "o.sqlite"
    path.write_text(gateway_toml("mqtt://127.0.0.1:1883", outbox, ble="processes = -1"))
    assert main(["run", "--config", str(path)]) == 2
    assert "ble.processes must be 1..64" in capsys.readouterr().err
    parser = argparse.ArgumentParser()
    service.configure_parser(parser)
    assert parser.parse_args(["--config", "x", "--processes", "3"]).processes == 3


def _stop_when_up(events: Path, shard_ids: set[str]) -> threading.Thread:
    """A thread that sends this process SIGTERM once every shard said it is up."""

    def wait_then_stop() -> None:
        up: set[str] = set()
        while up != shard_ids:
            with events.open() as lines:  # blocks until a worker opens it to write
                up |= {line.split()[1] for line in lines if line.startswith("up ")}
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=wait_then_stop, name="stop when up", daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(120)
def test_a_worker_that_dies_is_reported_and_restarted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    parts = shards(load(tmp_path), 2)
    os.mkfifo(tmp_path / "events")
    stopper = _stop_when_up(tmp_path / "events", {p.id for p in parts})
    supervisor = ShardProcesses(parts, functools.partial(crash_once_then_serve, tmp_path))
    with caplog.at_level(logging.INFO, logger="device_gateway.shards"):
        # Each worker dies once (a traceback, exit status 1), is restarted,
        # and then runs until the SIGTERM the thread sends this process.
        assert supervisor.run() == 0
    stopper.join(10.0)
    assert supervisor.restarts == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    for part in parts:
        assert any(
            m.startswith(f"shard {part.id} (pid ") and "died: exit status 1" in m for m in errors
        ), errors
    assert "SIGTERM: stopping 2 gateway process(es)" in caplog.text
    assert all(f"shard {p.id} stopped" in caplog.text for p in parts)


@pytest.mark.timeout(120)
def test_a_worker_that_cannot_start_stops_the_whole_gateway(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    parts = shards(load(tmp_path), 2)
    supervisor = ShardProcesses(parts, functools.partial(serve_or_fail, tmp_path))
    with caplog.at_level(logging.INFO, logger="device_gateway.shards"):
        assert supervisor.run() == 2  # the CLI's status for a bad config
    assert supervisor.restarts == 0
    assert f"shard {parts[0].id} (pid " in caplog.text
    assert "failed: exit status 2 (its error is above); stopping the gateway" in caplog.text


@pytest.mark.timeout(300)
async def test_workers_stop_cleanly_when_the_parent_is_killed(
    tmp_path: Path, broker: MosquittoBroker, collector: MakeCollector
) -> None:
    if not isinstance(broker, MosquittoBroker):
        pytest.skip("needs mosquitto")
    config = tmp_path / "gateway.toml"
    config.write_text(gateway_toml(broker.url, tmp_path / "outbox.sqlite"))
    scenario = tmp_path / "ward.toml"
    scenario.write_text(SCENARIO_TOML)
    watcher = await collector(broker, ["posture/v1/gateways/+/status"])
    await asyncio.to_thread(warm_up)
    async with program("run", "--config", str(config), "--simulate", str(scenario)) as gateway:
        both = {f"{GW}-p1", f"{GW}-p2"}
        await watcher.wait_for(lambda ms: statuses_of(ms) == dict.fromkeys(both, "online"), 150.0)
        gateway.kill()  # SIGKILL: the parent cannot stop its workers itself
        # Returns once every process holding its pipes (the workers) is gone.
        await asyncio.wait_for(gateway.wait(), 60.0)
    # Each worker got SIGTERM from the kernel and stopped cleanly: "offline"
    # with its metrics, from the worker itself, not the broker's Will (no
    # metrics, and only after its 10 s delay).
    last = await watcher.wait_for(
        lambda ms: statuses_of(ms) == dict.fromkeys(both, "offline"), 60.0
    )
    offline = [s for s in payloads(last, "/status") if s["status"] == "offline"]
    assert {str(s["gateway_id"]) for s in offline if s["metrics"]} == both

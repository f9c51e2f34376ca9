"""The gateway watches its wearables while the engine's kernels compile.

A first start after an install or an upgrade compiles the compiled kernels
(seconds on a server, minutes on a small board). The gateway must not leave
patients unwatched meanwhile: it connects at once, runs the NumPy engine, and
moves every engine to the compiled kernels once they are ready, each
wearable carrying on where it was. Here the kernels are held back until the
test lets them go (then made ready by the gateway's own preparation): a
fall before and a fall after the move are both detected, and every posture
event is the one a PostureEngine of its own gives on the same packets.
"""

from __future__ import annotations

import asyncio
import ctypes.util
import logging
import signal
import subprocess
import sys
from collections import defaultdict

import pytest
from bluez_harness import until
from test_gateway_tick import NotificationTap, reference_events

import posture.kernels as kernels
from alerts import EventType, MemorySink
from device_gateway import Gateway, GatewayConfig, kernel_prep
from device_gateway.kernel_prep import prepare_compiled_kernels
from posture.kernels import Kernel
from simulator import Scenario, SimulatedWorld, parse_scenario

pytestmark = pytest.mark.skipif(
    not kernels.compiled_available(), reason="numba does not import here"
)

FIRST_FALL_S = 8.0
SECOND_FALL_S = 60.0
END_S = 70.0


def _ward() -> tuple[Scenario, GatewayConfig]:
    patients = []
    wearables = []
    for i, fall_s in enumerate((FIRST_FALL_S, SECOND_FALL_S)):
        address = f"C0:FF:EE:00:0B:{i:02X}"
        patients.append(
            {
                "id": f"k-{i}",
                "wearable": {"address": address},
                "timeline": [
                    {"at_s": 0.0, "activity": "stand"},
                    {"at_s": 2.0, "activity": "walk"},
                    {"at_s": fall_s, "activity": "fall", "direction": "forward"},
                ],
            }
        )
        wearables.append({"address": address, "patient_id": f"k-{i}"})
    scenario = parse_scenario(
        {"scenario": {"name": "kernels-ward"}, "patients": patients}, source="<kernels ward>"
    )
    config = GatewayConfig.from_mapping(
        {
            "gateway_id": "kernels-test",
            "ble": {"backoff_initial_s": 0.05, "backoff_max_s": 0.5},
            "wearables": wearables,
        }
    )
    return scenario, config


@pytest.mark.timeout(180)
async def test_falls_are_detected_before_and_after_the_kernels_are_ready() -> None:
    scenario, config = _ward()
    sink = MemorySink()
    release = asyncio.Event()
    # In the disk cache first (a fresh clone compiles here): the gateway's own
    # preparation, let go below, then loads rather than compiles, which a
    # busy machine would make take minutes in its low-priority child.
    await asyncio.to_thread(kernels.warm_up)

    async def held_back() -> float | None:
        await release.wait()
        return await prepare_compiled_kernels()

    def falls() -> list[str]:
        return [e.patient_id for e in sink.of_type(EventType.FALL_DETECTED)]

    async with SimulatedWorld(scenario, seed=3, speed=1.0) as world:
        tap = NotificationTap(world)
        gateway = Gateway(
            config,
            sink,
            scanner_backend=world.scanner_backend,
            client_backend=tap.client_backend,
            prepare_kernels=held_back,
        )
        async with asyncio.TaskGroup() as tasks:
            service = tasks.create_task(gateway.run(), name="gateway under test")
            everyone = {w.patient_id for w in config.wearables}
            await until(
                lambda: (
                    everyone <= {e.patient_id for e in sink.of_type(EventType.DEVICE_CONNECTED)}
                ),
                "every wearable connected before the kernels are ready",
            )
            world.set_speed(4.0)
            await until(lambda: "k-0" in falls(), "the first fall, on the NumPy engine", 60.0)
            tick = gateway.tick
            assert tick is not None
            assert tick.kernel is Kernel.NUMPY
            assert all(e.kernel is Kernel.NUMPY for e in tick.slots.engines.values())
            # Time nearly stands still while the kernels are made ready.
            world.set_speed(0.05)
            release.set()
            await until(
                lambda: tick.kernel is Kernel.COMPILED, "the move to the compiled kernels", 120.0
            )
            moved_at_s = world.scenario_time()
            assert all(e.kernel is Kernel.COMPILED for e in tick.slots.engines.values())
            world.set_speed(8.0)
            await world.sleep_until(END_S)
            await world.stop()
            for s in gateway.supervisors:
                await tick.flush(s._ticked)
            service.cancel()

    assert moved_at_s < SECOND_FALL_S
    assert sorted(falls()) == ["k-0", "k-1"]
    by_address = {w.address: w for w in config.wearables}
    got: dict[str, list[tuple[str, float, float | None]]] = defaultdict(list)
    for e in sink.events:
        if e.type in (EventType.FALL_DETECTED, EventType.FALL_CANCELLED) or e.type.value.startswith(
            "slouch"
        ):
            assert e.device_time_s is not None
            got[e.patient_id].append((e.type.value, e.device_time_s, e.flexion_deg))
    for address, connections in tap.connections.items():
        patient = by_address[address]
        assert got[patient.patient_id] == reference_events(connections, patient.slouch)


async def test_a_failed_child_compile_falls_back_to_this_process(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # No child that can compile (here: one that exits at once with an error):
    # the kernels are still made ready, in this process, and the failure is
    # logged with the child's own message.
    monkeypatch.setattr(kernel_prep, "_CHILD", ("-c", "raise SystemExit('no compiler here')"))
    with caplog.at_level(logging.WARNING, logger="device_gateway.kernel_prep"):
        ready_s = await kernel_prep.prepare_compiled_kernels()
    assert ready_s is not None and ready_s >= 0.0
    assert "no compiler here" in caplog.text
    assert "compiling them here instead" in caplog.text


async def test_no_child_process_falls_back_to_this_process(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The child cannot even start (here: an interpreter that is not there).
    monkeypatch.setattr(kernel_prep.sys, "executable", "/nonexistent/python3")
    with caplog.at_level(logging.WARNING, logger="device_gateway.kernel_prep"):
        ready_s = await kernel_prep.prepare_compiled_kernels()
    assert ready_s is not None
    assert "no child process to compile the engine kernels" in caplog.text


# A process under a seccomp filter that kills on setpriority, as the shipped
# systemd unit's SystemCallFilter=~@resources does (libseccomp through ctypes;
# installed in that child only), then ``then``.
_SECCOMP = """
import ctypes, ctypes.util
lib = ctypes.CDLL(ctypes.util.find_library("seccomp"))
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
ctx = lib.seccomp_init(0x7FFF0000)  # allow everything...
nr = lib.seccomp_syscall_resolve_name(b"setpriority")
assert lib.seccomp_rule_add(ctx, 0x80000000, nr, 0) == 0  # ...but setpriority kills
assert lib.seccomp_load(ctx) == 0
"""


def _filtered(then: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _SECCOMP + then], capture_output=True, text=True, timeout=600
    )


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or ctypes.util.find_library("seccomp") is None,
    reason="needs Linux and libseccomp",
)
def test_the_compile_child_runs_under_the_units_syscall_filter() -> None:
    # Under the filter the child keeps its priority instead of being killed
    # for asking to lower it; the filter is real (a plain os.nice dies).
    kernels.warm_up()  # the child then loads from the cache
    child = _filtered(
        "import runpy; runpy.run_module('device_gateway.kernel_prep', run_name='__main__')"
    )
    assert child.returncode == 0, child.stderr
    assert _filtered("import os; os.nice(1)").returncode == -signal.SIGSYS

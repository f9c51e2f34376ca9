"""The gateway: one scanner, one supervisor per allow-listed wearable.

Each supervisor runs in the gateway's TaskGroup, so one wearable's trouble
(a flood, a reboot, a radio that keeps failing) never stops another's; only
a bug ends the TaskGroup, and its traceback names the module.

On bleak's default backend on Linux (BlueZ) the gateway also follows
bluetoothd and the adapter (``device_gateway.bluez``): when it cannot scan
it keeps running, restarts the scan when Bluetooth comes back, and says so
through a sink that takes ``set_degraded`` (the retained gateway status).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import BaseBleakScanner

from alerts.sink import AlertSink
from common.errors import BluetoothUnavailableError
from device_gateway.config import GatewayConfig, WearableConfig
from device_gateway.engine_tick import EngineTick
from device_gateway.kernel_prep import prepare_compiled_kernels
from device_gateway.link import WearableSupervisor
from device_gateway.patient import PatientMonitor
from device_gateway.scanner import DeviceDirectory, RadioHealth
from posture.kernels import Kernel, selected_kernel

if TYPE_CHECKING:
    from device_gateway.bluez import BluezWatch

__all__ = ["Gateway", "HealthSink"]

_log = logging.getLogger(__name__)

_METRICS_INTERVAL_S = 5.0


@runtime_checkable
class HealthSink(Protocol):
    """A sink that can say the gateway is degraded (``alerts.AlertPublisher`` can)."""

    def set_degraded(self, source: str, reason: str | None, detail: str = "") -> None: ...


class Gateway:
    """Runs every wearable's supervisor until cancelled.

    ``sink`` takes every event, patient state and wearable's link counters
    (``alerts.AlertPublisher`` in production, ``alerts.MemorySink`` in tests
    and embedders). ``scanner_backend`` and ``client_backend`` are bleak
    backends; None picks the platform's (BlueZ on Linux). The simulator
    passes its own. ``prepare_kernels`` makes the engine's compiled kernels
    ready (:func:`device_gateway.kernel_prep.prepare_compiled_kernels`); the
    wearables are watched with the NumPy engine until it returns.
    """

    def __init__(
        self,
        config: GatewayConfig,
        sink: AlertSink,
        *,
        scanner_backend: type[BaseBleakScanner] | None = None,
        client_backend: type[BaseBleakClient] | None = None,
        wall_clock: Callable[[], float] = time.time,
        prepare_kernels: Callable[[], Awaitable[float | None]] = prepare_compiled_kernels,
    ) -> None:
        self.config = config
        self._prepare_kernels = prepare_kernels
        self._sink = sink
        self._scanner_backend = scanner_backend
        self._client_backend = client_backend
        self._wall_clock = wall_clock
        self.supervisors: list[WearableSupervisor] = []
        self.tick: EngineTick | None = None
        """Every wearable's samples through the engines, once per tick (while running)."""
        self.directory: DeviceDirectory | None = None
        self.radio_health: RadioHealth | None = None

    async def run(self) -> None:
        """Scan, connect and monitor until cancelled.

        Raises:
            BluetoothUnavailableError: no usable Bluetooth (on a custom backend:
                the scan did not start; on BlueZ: no system bus at all).
        """
        addresses = [w.address for w in self.config.wearables]
        # A first compile of the engine's kernels takes seconds to minutes:
        # the wearables are watched meanwhile by the NumPy engine.
        compiled = selected_kernel() is Kernel.COMPILED
        async with AsyncExitStack() as stack:
            watch = await self._watch_bluez(stack)
            directory = await stack.enter_async_context(
                DeviceDirectory(
                    addresses,
                    backend=self._scanner_backend,
                    adapter=self.config.ble.adapter,
                    watch=watch,
                    on_health=self._on_radio_health,
                )
            )
            self.directory = directory
            ble = self.config.ble
            tick = self.tick = EngineTick(
                ble.engine_batch_s,
                in_thread=ble.engine_thread,
                kernel=Kernel.NUMPY if compiled else None,
            )
            self.supervisors = [
                self._supervisor(w, directory, tick, watch) for w in self.config.wearables
            ]
            _log.info(
                "gateway %s supervising %d wearables",
                self.config.gateway_id,
                len(self.supervisors),
            )
            try:
                async with asyncio.TaskGroup() as tasks:
                    for supervisor in self.supervisors:
                        tasks.create_task(supervisor.run(), name=f"wearable {supervisor.label}")
                    tasks.create_task(tick.run(), name="engine tick")
                    tasks.create_task(self._report_metrics(), name="gateway metrics")
                    tasks.create_task(directory.supervise(), name="scanner")
                    if compiled:
                        tasks.create_task(self._compiled_engine(tick), name="engine kernels")
            finally:
                # Each supervisor disconnected its wearable as it unwound.
                _log.info(
                    "gateway %s stopped: %d wearable link(s) closed",
                    self.config.gateway_id,
                    len(self.supervisors),
                )

    async def _compiled_engine(self, tick: EngineTick) -> None:
        """The engines move to the compiled kernels once they are ready; if
        they cannot be made ready the NumPy engine carries on (logged)."""
        _log.info("engine on NumPy until its compiled kernels are ready")
        try:
            ready_s = await self._prepare_kernels()
        except Exception:
            _log.exception("the engine's compiled kernels failed to build; staying on NumPy")
            return
        if ready_s is None:
            return
        _log.info("engine kernels ready in %.2f s", ready_s)
        tick.use_kernel(Kernel.COMPILED)

    async def _watch_bluez(self, stack: AsyncExitStack) -> BluezWatch | None:
        """BlueZ's state, when bleak's default backend is BlueZ (else None).

        Raises:
            BluetoothUnavailableError: no D-Bus system bus at all (not a
                BlueZ machine); a missing bluetoothd or adapter is waited for.
        """
        if self._scanner_backend is not None or not sys.platform.startswith("linux"):
            return None
        from device_gateway.bluez import BluezWatch

        try:
            return await stack.enter_async_context(BluezWatch(self.config.ble.adapter))
        except ConnectionError as exc:
            raise BluetoothUnavailableError(
                f"no usable Bluetooth adapter (is BlueZ installed and D-Bus running?): {exc}"
            ) from exc

    def _on_radio_health(self, health: RadioHealth) -> None:
        self.radio_health = health
        if isinstance(self._sink, HealthSink):
            if health.ok:
                self._sink.set_degraded("ble", None)
            else:
                self._sink.set_degraded(
                    "ble",
                    health.reason,
                    f"{health.detail}: wearables that disconnect cannot reconnect, "
                    "their falls go undetected",
                )

    def device_metrics(self) -> dict[str, dict[str, int]]:
        """Packet counters, reconnects and notification stalls per patient."""
        return {
            s.monitor.patient_id: {
                **s.counters.as_dict(),
                "reconnects": s.reconnects,
                "stalls": s.stalls,
            }
            for s in self.supervisors
        }

    def _supervisor(
        self,
        wearable: WearableConfig,
        directory: DeviceDirectory,
        tick: EngineTick,
        watch: BluezWatch | None,
    ) -> WearableSupervisor:
        def monitor(request_buzz: Callable[[], None]) -> PatientMonitor:
            return PatientMonitor(
                wearable,
                gateway_id=self.config.gateway_id,
                sink=self._sink,
                request_buzz=request_buzz,
                battery_low_pct=self.config.ble.battery_low_pct,
                wall_clock=self._wall_clock,
            )

        return WearableSupervisor(
            monitor,
            wearable.address,
            self.config.ble,
            directory,
            tick,
            client_backend=self._client_backend,
            wall_clock=self._wall_clock,
            bluez=watch,
        )

    async def _report_metrics(self) -> None:
        while True:
            for patient_id, metrics in self.device_metrics().items():
                self._sink.set_device_metrics(patient_id, metrics)
            await asyncio.sleep(_METRICS_INTERVAL_S)

"""The gateway: one scanner, one supervisor per allow-listed wearable.

Each supervisor runs in the gateway's TaskGroup, so one wearable's trouble
(a flood, a reboot, a radio that keeps failing) never stops another's; only
a bug ends the TaskGroup, and its traceback names the module.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import BaseBleakScanner

from device_gateway.config import GatewayConfig, WearableConfig
from device_gateway.link import WearableSupervisor
from device_gateway.patient import AlertSink, PatientMonitor
from device_gateway.scanner import DeviceDirectory

__all__ = ["Gateway", "MetricsSink"]

_log = logging.getLogger(__name__)

_METRICS_INTERVAL_S = 5.0


class MetricsSink(AlertSink, Protocol):
    """An alert sink that also carries per-wearable link metrics."""

    def set_device_metrics(self, patient_id: str, metrics: dict[str, int]) -> None: ...


class Gateway:
    """Runs every wearable's supervisor until cancelled.

    ``scanner_backend`` and ``client_backend`` are bleak backends; None picks
    the platform's (BlueZ on Linux). The simulator passes its own.
    """

    def __init__(
        self,
        config: GatewayConfig,
        sink: MetricsSink,
        *,
        scanner_backend: type[BaseBleakScanner] | None = None,
        client_backend: type[BaseBleakClient] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._sink = sink
        self._scanner_backend = scanner_backend
        self._client_backend = client_backend
        self._wall_clock = wall_clock
        self.supervisors: list[WearableSupervisor] = []

    async def run(self) -> None:
        """Scan, connect and monitor until cancelled.

        Raises:
            BluetoothUnavailableError: no usable Bluetooth adapter.
        """
        addresses = [w.address for w in self.config.wearables]
        async with DeviceDirectory(addresses, backend=self._scanner_backend) as directory:
            self.supervisors = [self._supervisor(w, directory) for w in self.config.wearables]
            _log.info(
                "gateway %s supervising %d wearables",
                self.config.gateway_id,
                len(self.supervisors),
            )
            try:
                async with asyncio.TaskGroup() as tasks:
                    for supervisor in self.supervisors:
                        tasks.create_task(supervisor.run(), name=f"wearable {supervisor.label}")
                    tasks.create_task(self._report_metrics(), name="gateway metrics")
            finally:
                # Each supervisor disconnected its wearable as it unwound.
                _log.info(
                    "gateway %s stopped: %d wearable link(s) closed",
                    self.config.gateway_id,
                    len(self.supervisors),
                )

    def device_metrics(self) -> dict[str, dict[str, int]]:
        """Packet counters and reconnects per patient."""
        return {
            s.monitor.patient_id: {**s.counters.as_dict(), "reconnects": s.reconnects}
            for s in self.supervisors
        }

    def _supervisor(
        self, wearable: WearableConfig, directory: DeviceDirectory
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
            client_backend=self._client_backend,
            wall_clock=self._wall_clock,
        )

    async def _report_metrics(self) -> None:
        while True:
            for patient_id, metrics in self.device_metrics().items():
                self._sink.set_device_metrics(patient_id, metrics)
            await asyncio.sleep(_METRICS_INTERVAL_S)

"""A site's wearables spread over worker processes, one gateway per process.

One gateway process is bound to one core by the GIL (Python per packet and
MQTT publishing on the event loop are most of its CPU), so a site with more
wearables than one core serves is split into shards: wearable ``address``
belongs to shard ``blake2b(address) % N``, a stable hash, so a wearable stays
in its shard when the allow-list is edited (it moves only when N changes).
Each shard runs the unchanged :class:`~device_gateway.gateway.Gateway` in a
process of its own: its own event loop, scanner, BLE links, engine tick and
``AlertPublisher``.

In the MQTT contract each shard is a gateway of its own, ``{gateway_id}-p{k}``
(k = 1..N): its retained status and Last Will are on
``gateways/{gateway_id}-p{k}/status``, its MQTT client id is made from that id
(so shards never take over each other's session), and its patients' states and
events name it as their gateway, so ``watch`` and the dashboard show each
patient's gateway as online or offline truthfully when one shard is down. Its
outbox is a file of its own beside the configured one (``outbox.p{k}.sqlite``).

With one process nothing here runs: the caller serves the config in its own
process exactly as before.

:class:`ShardProcesses` is the parent: it starts one worker per shard (spawned,
not forked: the parent holds no loop or threads a child could inherit), turns
SIGINT and SIGTERM into one SIGTERM per worker (the workers ignore SIGINT, so a
terminal's Ctrl-C, which reaches the whole process group, is not a second stop
signal that would cut their outbox flush short) and waits for them to stop.
A worker that dies while not asked to (a bug) is logged as an error naming
its shard and exit status and restarted with capped, jittered backoff: the
other shards' wearables stay connected and monitored meanwhile, and the dead
shard's Last Will shows its patients' gateway offline. A worker that exits
with status 2 (a bad config, no Bluetooth: a restart cannot help) stops the
whole gateway with status 2.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import hashlib
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from common.backoff import Backoff
from common.errors import ConfigError
from device_gateway.config import MAX_PROCESSES, GatewayConfig

__all__ = [
    "EXIT_PERMANENT",
    "WEARABLES_PER_PROCESS",
    "Shard",
    "ShardProcesses",
    "leftover_outboxes",
    "process_count",
    "shard_index",
    "shards",
    "warn_of_leftover_outboxes",
]

_log = logging.getLogger(__name__)

# Wearables one process is given before a second one is started (by default).
# One process keeps real time at 1,000 wearables, the second core helps
# beyond that; measured with `bench gateway --processes` (README).
WEARABLES_PER_PROCESS = 1000
# The longest id a gateway may have: an MQTT topic level (alerts.topics).
_MAX_ID = 64
# A worker's status for "a restart cannot help" (the CLI's status for a
# user's error: bad config, no Bluetooth adapter).
EXIT_PERMANENT = 2
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def shard_index(address: str, processes: int) -> int:
    """The shard (0-based) that serves the wearable at ``address`` among ``processes``."""
    # A cryptographic digest, not CRC32: CRC is linear, so the low bits of
    # consecutive addresses (C0:FF:EE:00:00:01, :02, :03) fall together.
    digest = hashlib.blake2b(address.upper().encode("ascii"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % processes


def process_count(config: GatewayConfig, requested: int | None = None) -> int:
    """How many processes serve ``config``'s wearables.

    ``requested`` (a command-line override) wins over ``ble.processes``; with
    neither, one process per :data:`WEARABLES_PER_PROCESS` wearables, at most
    one per core of this machine.

    Raises:
        ConfigError: ``requested`` outside 1..64.
    """
    if requested is not None and not 1 <= requested <= MAX_PROCESSES:
        raise ConfigError(f"--processes must be 1..{MAX_PROCESSES}, got {requested}")
    chosen = requested if requested is not None else config.ble.processes
    if chosen is not None:
        return chosen
    wanted = math.ceil(len(config.wearables) / WEARABLES_PER_PROCESS)
    return max(1, min(os.cpu_count() or 1, wanted))


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``: the config its worker serves."""

    index: int
    count: int
    config: GatewayConfig

    @property
    def id(self) -> str:
        """Its gateway id in the MQTT contract (``{gateway_id}-p{index + 1}``)."""
        return self.config.gateway_id

    def holds(self, address: str) -> bool:
        """Whether the wearable at ``address`` is this shard's."""
        return shard_index(address, self.count) == self.index


def shards(config: GatewayConfig, processes: int) -> list[Shard]:
    """``config`` split over ``processes`` shards; shards that got no wearable are left out.

    Raises:
        ConfigError: the gateway id is too long to carry the shard suffix.
    """
    suffix_len = len(f"-p{processes}")
    if len(config.gateway_id) + suffix_len > _MAX_ID:
        raise ConfigError(
            f"{config.source}: gateway_id must be at most {_MAX_ID - suffix_len} characters "
            f"with {processes} processes (each process is gateway {config.gateway_id}-pN)"
        )
    out = []
    for index in range(processes):
        wearables = tuple(w for w in config.wearables if shard_index(w.address, processes) == index)
        if not wearables:
            _log.info("shard %d of %d got no wearable: not started", index + 1, processes)
            continue
        shard_config = dataclasses.replace(
            config,
            gateway_id=f"{config.gateway_id}-p{index + 1}",
            wearables=wearables,
            outbox_path=_shard_outbox(config.outbox_path, index),
            ble=dataclasses.replace(config.ble, processes=1),
        )
        out.append(Shard(index, processes, shard_config))
    return out


def leftover_outboxes(config: GatewayConfig, processes: int) -> list[tuple[Path, int, int]]:
    """Outbox files written with another process count that still hold something.

    Each as ``(file, events pending, falls kept open)``: this run neither
    sends nor keeps them (each process opens only its own file), so the
    caller warns. Files that cannot be read are left out (the outbox's own
    checks speak for the files in use).
    """
    base = config.outbox_path
    if base is None:
        return []
    in_use = {base} if processes == 1 else {_shard_outbox(base, k) for k in range(processes)}
    candidates = {base, *base.parent.glob(f"{base.stem}.p*{base.suffix}")} - in_use
    found = []
    for path in sorted(p for p in candidates if p is not None and p.is_file()):
        try:
            with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
                events = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
                falls = db.execute("SELECT COUNT(*) FROM open_falls").fetchone()[0]
        except sqlite3.Error as exc:
            _log.debug("outbox %s not read: %s", path, exc)
            continue
        if events or falls:
            found.append((path, int(events), int(falls)))
    return found


def warn_of_leftover_outboxes(config: GatewayConfig, processes: int) -> None:
    """Log a warning for each of :func:`leftover_outboxes`."""
    for path, events, falls in leftover_outboxes(config, processes):
        _log.warning(
            "outbox %s, written with another process count, still holds %d event(s) and "
            "%d open fall(s): this run (%d process(es)) does not send them; run once with "
            "the count that wrote it and stop cleanly (docs/reliability.md)",
            path,
            events,
            falls,
            processes,
        )


def _worker_main(target: Callable[[Shard], int], shard: Shard, parent_pid: int) -> None:
    """The worker process: ``target``'s return value becomes its exit status."""
    _stop_with_parent(parent_pid)
    raise SystemExit(target(shard))


def _stop_with_parent(parent_pid: int) -> None:
    """Have Linux send this worker SIGTERM (its clean stop) when the parent dies.

    A parent killed with SIGKILL (or by a test harness) cannot stop its
    workers; an orphaned worker would keep its wearables' links and its
    gateway id, and fight the next run's worker for that MQTT client id.
    (systemd kills the whole unit anyway; a manual run has no such guard.)
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            _log.warning("cannot ask to be stopped with the parent: errno %d", ctypes.get_errno())
    if os.getppid() != parent_pid:  # the parent died before that took effect
        raise SystemExit(0)


def _shard_outbox(path: Path | None, index: int) -> Path | None:
    """``outbox.sqlite`` → ``outbox.p{index + 1}.sqlite`` (None stays None: in memory)."""
    if path is None:
        return None
    return path.with_name(f"{path.stem}.p{index + 1}{path.suffix}")


@dataclass
class _Worker:
    shard: Shard
    process: Any = None  # multiprocessing's SpawnProcess (untyped in typeshed's context API)
    started_s: float = 0.0
    restart_at_s: float | None = None
    backoff: Backoff = dataclasses.field(default_factory=lambda: Backoff(1.0, 30.0))


class ShardProcesses:
    """Runs each shard's gateway in a worker process until SIGINT or SIGTERM.

    Args:
        shards: the shards (from :func:`shards`).
        worker: runs one shard's gateway in the worker process until SIGTERM
            and returns the process's exit status (0: stopped when asked;
            :data:`EXIT_PERMANENT`: a restart cannot help). It is pickled to
            the spawned process, so a module-level function or a
            ``functools.partial`` of one. The worker process inherits SIGINT
            ignored.
        stop_timeout_s: how long workers get to stop (flush their outbox,
            publish "offline") before they are killed, s; under systemd's
            ``TimeoutStopSec``.
        stable_after_s: a worker that ran this long before dying restarts
            after the shortest delay again, s.
    """

    def __init__(
        self,
        shards: Sequence[Shard],
        worker: Callable[[Shard], int],
        *,
        stop_timeout_s: float = 25.0,
        stable_after_s: float = 60.0,
    ) -> None:
        if not shards:
            raise ValueError("no shard to run")
        self._workers = [_Worker(s) for s in shards]
        self._target = worker
        self._stop_timeout_s = stop_timeout_s
        self._stable_after_s = stable_after_s
        self._context = multiprocessing.get_context("spawn")
        self._stop_signal: int | None = None
        self._wake_w = -1
        self.restarts = 0
        """Workers restarted after dying."""

    def run(self) -> int:
        """Start every worker, keep them running until SIGINT/SIGTERM, stop them.

        Must run in the main thread (it installs signal handlers).

        Returns:
            0 when stopped by a signal and every worker stopped cleanly;
            :data:`EXIT_PERMANENT` when a worker exited with it; 1 when a
            worker had to be killed at the stop.
        """
        wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        status = 0
        try:
            _log.info(
                "gateway in %d processes: %s",
                len(self._workers),
                ", ".join(
                    f"{w.shard.id} ({len(w.shard.config.wearables)} wearables)"
                    for w in self._workers
                ),
            )
            for worker in self._workers:
                self._start(worker)
            status = self._supervise(wake_r)
        finally:
            status = max(status, self._stop_all())
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(wake_r)
            os.close(self._wake_w)
        return status

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # Only a flag and a byte: the main loop logs and acts.
        if self._stop_signal is None:
            self._stop_signal = signum
        with contextlib.suppress(BlockingIOError):  # a full pipe wakes the loop anyway
            os.write(self._wake_w, b"s")

    def _supervise(self, wake_r: int) -> int:
        """Wait for a stop signal or a worker's death; restart the dead."""
        while self._stop_signal is None:
            now = time.monotonic()
            due = [w.restart_at_s for w in self._workers if w.restart_at_s is not None]
            timeout = max(0.0, min(due) - now) if due else None
            alive = [w.process.sentinel for w in self._workers if w.restart_at_s is None]
            ready = multiprocessing.connection.wait([*alive, wake_r], timeout)
            if wake_r in ready:
                os.read(wake_r, 64)
            if self._stop_signal is not None:
                break
            for worker in self._workers:
                if worker.restart_at_s is None and not worker.process.is_alive():
                    if self._died(worker) == EXIT_PERMANENT:
                        return EXIT_PERMANENT
                elif worker.restart_at_s is not None and worker.restart_at_s <= time.monotonic():
                    self.restarts += 1
                    self._start(worker)
        name = signal.Signals(self._stop_signal).name
        _log.info("%s: stopping %d gateway process(es)", name, len(self._workers))
        return 0

    def _start(self, worker: _Worker) -> None:
        # The child inherits SIGINT ignored: only the SIGTERM sent from here
        # stops it, once (see the module's docstring).
        before = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            process = self._context.Process(
                target=_worker_main,
                args=(self._target, worker.shard, os.getpid()),
                name=worker.shard.id,
            )
            process.start()
        finally:
            signal.signal(signal.SIGINT, before)
        worker.process = process
        worker.started_s = time.monotonic()
        worker.restart_at_s = None
        _log.info("shard %s started (pid %d)", worker.shard.id, process.pid)

    def _died(self, worker: _Worker) -> int:
        """Log a worker's death; schedule its restart unless it cannot help."""
        process = worker.process
        process.join()
        code = int(process.exitcode)
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        if code == EXIT_PERMANENT:
            _log.error(
                "shard %s (pid %d) failed: %s (its error is above); stopping the gateway",
                worker.shard.id,
                process.pid,
                how,
            )
            return code
        if time.monotonic() - worker.started_s >= self._stable_after_s:
            worker.backoff.reset()
        delay = worker.backoff.next_delay()
        worker.restart_at_s = time.monotonic() + delay
        _log.error(
            "shard %s (pid %d) died: %s; its %d wearable(s) are not monitored until it "
            "restarts in %.1f s (its gateway status turns offline by its Last Will)",
            worker.shard.id,
            process.pid,
            how,
            len(worker.shard.config.wearables),
            delay,
        )
        return code

    def _stop_all(self) -> int:
        """SIGTERM every live worker, wait for them, kill what is left. Returns 0 or 1."""
        running = [w for w in self._workers if w.process is not None and w.process.is_alive()]
        for worker in running:
            worker.process.terminate()
        deadline = time.monotonic() + self._stop_timeout_s
        status = 0
        for worker in running:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                _log.error(
                    "shard %s (pid %d) did not stop within %g s: killed",
                    worker.shard.id,
                    worker.process.pid,
                    self._stop_timeout_s,
                )
                worker.process.kill()
                worker.process.join()
                status = 1
            elif worker.process.exitcode != 0:
                _log.warning(
                    "shard %s stopped with exit status %s", worker.shard.id, worker.process.exitcode
                )
            else:
                _log.info("shard %s stopped", worker.shard.id)
        return status

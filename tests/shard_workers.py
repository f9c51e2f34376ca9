"""Worker functions for ``ShardProcesses`` tests, importable by a spawned process.

Kept apart from the test module so the spawned worker imports only this.
"""

from __future__ import annotations

import signal
from pathlib import Path

from device_gateway.shards import Shard


def _tell(fifo: Path, word: str) -> None:
    # Opening a FIFO for writing blocks until the test opens it for reading.
    with fifo.open("w") as out:
        out.write(f"{word}\n")


def crash_once_then_serve(state_dir: Path, shard: Shard) -> int:
    """Dies with a traceback (a bug) the first time; then runs until SIGTERM."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    marker = state_dir / f"{shard.id}.crashed"
    if not marker.exists():
        marker.touch()
        raise RuntimeError("a bug in the gateway")
    _tell(state_dir / "events", f"up {shard.id}")
    signal.sigwait({signal.SIGTERM})
    return 0


def serve_or_fail(state_dir: Path, shard: Shard) -> int:
    """Shard 1 fails as a bad config would (status 2); the others run until SIGTERM."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    if shard.index == 0:
        return 2
    signal.sigwait({signal.SIGTERM})
    return 0

"""The engine's compiled kernels made ready without leaving wearables unwatched.

The first start after an install or an upgrade compiles the kernels: about
25 s of CPU on a server core, minutes on a small ARM board. The gateway does
not wait for that before it connects its wearables: its engines start on
the NumPy reference (the same state, the same events at the same samples,
to rounding; ``POSTURE_KERNEL=numpy posture-monitor bench gateway`` kept
2,000 wearables in real time in one process that way) and move to the
compiled kernels once they are ready
(:meth:`device_gateway.engine_tick.EngineTick.use_kernel`).

The compile runs in a child process at a lower priority, so it neither holds
the gateway's GIL nor takes its CPU; it leaves the machine code in numba's
on-disk cache, from which the gateway then loads it (a fraction of a
second). Where the child cannot do that (no writable cache, a child that
fails), the gateway compiles on a worker thread instead. The gateway
processes of one machine (``run --processes N``) each start a child; the
children take turns (a lock file beside the temporary files), so the first
compiles and the others find the cache filled.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import posture.kernels
from posture.kernels import warm_up

__all__ = ["prepare_compiled_kernels"]

_log = logging.getLogger(__name__)

# The child (this module run as a program).
_CHILD = ("-m", __name__)


async def prepare_compiled_kernels() -> float | None:
    """Compile (or load) every engine kernel without blocking the event loop;
    returns the seconds it took, or None where the engine runs NumPy
    (``POSTURE_KERNEL=numpy``, or numba not importable)."""
    start = time.perf_counter()
    await _compile_in_child()
    loaded = await asyncio.to_thread(warm_up)
    return None if loaded is None else time.perf_counter() - start


async def _compile_in_child() -> None:
    """Fill the on-disk cache from a child process; a failure is logged (the
    caller then compiles in this process)."""
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            *_CHILD,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:  # no interpreter to run, no process to spare
        _log.warning(
            "no child process to compile the engine kernels (%s); compiling them here", exc
        )
        return
    try:
        _, err = await child.communicate()
    except asyncio.CancelledError:
        if child.returncode is None:
            child.kill()
            await child.wait()
        raise
    if child.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        _log.warning(
            "compiling the engine kernels in a child process failed (exit %s: %s); "
            "compiling them here instead",
            child.returncode,
            " / ".join(tail) or "no message",
        )


def compile_in_turn() -> None:
    """What the child runs: at a lower priority than the gateway, every kernel
    compiled (or found in the cache) as the gateway will use them, one child
    at a time per installed package."""
    if not _syscalls_filtered():
        os.nice(10)
    package = str(Path(posture.kernels.__file__).resolve().parent)
    name = f"posture-kernels-{hashlib.sha256(package.encode()).hexdigest()[:16]}.lock"
    with open(Path(tempfile.gettempdir()) / name, "a") as lock:
        with contextlib.suppress(ImportError):  # no fcntl: no turns, still correct
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        warm_up()


def _syscalls_filtered() -> bool:
    """Whether this process runs under a seccomp filter (the shipped systemd
    unit's ``SystemCallFilter=~@resources`` kills a process that calls
    ``setpriority`` rather than failing the call): then the child keeps the
    gateway's priority."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return True  # cannot tell: do not risk it
    for line in status.splitlines():
        if line.startswith("Seccomp:"):
            return line.split(":", 1)[1].strip() != "0"
    return False  # a kernel without seccomp


if __name__ == "__main__":
    compile_in_turn()

"""SIGTERM stops a service the way Ctrl-C does.

systemd, Docker and Kubernetes stop a service with SIGTERM. Python's default
for SIGTERM is to die on the spot: no ``finally``, no ``__aexit__``. For the
gateway that looks like a crash (its retained status stays "online" until the
broker fires the Last Will, queued alerts wait for the next start, the
wearables' links drop without a goodbye). ``run_until_terminated`` turns the
first SIGTERM into a cancellation of the service's task, so every context
manager unwinds exactly as on Ctrl-C, within the stop timeout the service
manager grants (systemd's ``TimeoutStopSec``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_until_terminated"]

_log = logging.getLogger(__name__)

T = TypeVar("T")


async def run_until_terminated(main: Coroutine[Any, Any, T]) -> tuple[T | None, bool]:
    """Run ``main`` until it returns or SIGTERM arrives.

    Returns:
        ``(result, False)`` when ``main`` returned, ``(None, True)`` when a
        SIGTERM cancelled it and it unwound cleanly.

    Raises:
        whatever ``main`` raises, and ``CancelledError`` when this task itself
        is cancelled (Ctrl-C under ``asyncio.run``), exactly as before.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(main, name="service")
    terminated = False

    def on_sigterm() -> None:
        nonlocal terminated
        if terminated:
            # Cancelling again would cut the shutdown short (the outbox
            # flush, the offline status); the service manager's SIGKILL
            # after its stop timeout is the hard stop.
            _log.warning("SIGTERM again: still shutting down")
            return
        terminated = True
        _log.info("SIGTERM: shutting down")
        task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        installed = True
    except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
        installed = False
    try:
        return await task, False
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if terminated and current is not None and current.cancelling() == 0:
            return None, True
        raise
    finally:
        if installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signal.SIGTERM)

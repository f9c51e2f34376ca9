"""The dashboard's alert record, off the event loop: an async face on the SQL store.

:class:`AlertRecord` is an async context manager. It opens the database (and
runs the migrations) on one worker thread and keeps every later database call
on that thread, so a slow disk or a PostgreSQL round trip never stalls MQTT or
the browsers. Two ways in:

* :meth:`AlertRecord.write` queues a write (an event, an ack, a summary).
  Writes run in order on a background task; a failing database is retried with
  backoff and the write stays queued (never dropped), logged, and counted in
  :attr:`AlertRecord.pending`. The receive loop never waits for the disk.
* :meth:`AlertRecord.call` runs one operation now and returns its result
  (restore at start, escalation claims); it raises
  :class:`physio.dashboard.store.StoreError` when the database fails.

Which database: a SQLite file (the default, under the state folder of
:func:`default_database`) or a ``postgresql://`` URL, where several dashboard
instances share one record.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import itertools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from common.backoff import Backoff
from physio.dashboard.store import SqlStore, StoreError, is_postgres_url

__all__ = ["AlertRecord", "default_database"]

_log = logging.getLogger(__name__)

T = TypeVar("T")
Operation = Callable[[SqlStore], T]
_FLUSH_AT_EXIT_S = 5.0
# Writes per transaction: one commit for a burst, yet short enough that an
# escalation claim (on the same worker thread) waits at most one batch (~0.1 s
# on PostgreSQL, a few ms on SQLite).
_BATCH = 100


def default_database() -> Path:
    """Where ``posture-monitor dashboard`` keeps its SQLite record by default.

    ``$STATE_DIRECTORY`` (systemd's ``StateDirectory=``), else
    ``$XDG_STATE_HOME/posture-monitor``, else ``~/.local/state/posture-monitor``;
    the file is ``alerts.sqlite3``.
    """
    systemd = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd:
        return Path(systemd) / "alerts.sqlite3"
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "posture-monitor" / "alerts.sqlite3"


class AlertRecord:
    """The record as used by the running dashboard.

    Args:
        database: SQLite path, ``:memory:`` or ``postgresql://`` URL.

    Raises:
        ConfigError, StoreError: from ``__aenter__`` when the database cannot
            be opened or migrated (the dashboard does not start without it).
    """

    def __init__(self, database: str) -> None:
        self.database = database
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._store: SqlStore | None = None
        self._queue: collections.deque[Operation[object]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.failures = 0
        self.healthy = True

    @property
    def where(self) -> str:
        """The database, without a password."""
        return self._store.where if self._store is not None else self.database

    @property
    def kind(self) -> str:
        """``postgresql`` or ``sqlite``."""
        return "postgresql" if is_postgres_url(self.database) else "sqlite"

    @property
    def pending(self) -> int:
        """Writes queued and not yet committed."""
        return len(self._queue)

    async def __aenter__(self) -> Self:
        # One thread: the SQL store's connection is used by one thread only,
        # and writes stay in the order they were queued.
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "alert-record")
        try:
            self._store = await self._run(lambda: SqlStore(self.database))
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        self._writer = asyncio.create_task(self._write_loop(), name="alert-record-writer")
        _log.info("alert record: %s", self._store.where)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._writer is not None:
            try:
                async with asyncio.timeout(_FLUSH_AT_EXIT_S):
                    await self.flush()
            except TimeoutError:
                _log.error(
                    "alert record %s: %d write(s) not committed at exit", self.where, self.pending
                )
            self._writer.cancel()
            try:
                await self._writer
            except asyncio.CancelledError:
                # Our own cancellation of the writer; re-raise only if we are cancelled too.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
            self._writer = None
        store, self._store = self._store, None
        if store is not None and self._executor is not None:
            await self._run(store.close)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _run(self, fn: Callable[[], T]) -> T:
        assert self._executor is not None  # set in __aenter__
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def call(self, operation: Operation[T]) -> T:
        """Run ``operation(store)`` on the worker thread now and return its result.

        Raises:
            StoreError: the database failed.
            RuntimeError: the record is not open.
        """
        store = self._store
        if store is None:
            raise RuntimeError("the alert record is not open")
        return await self._run(lambda: operation(store))

    def write(self, operation: Operation[object]) -> None:
        """Queue ``operation(store)``; it runs after every write queued before it."""
        if self._store is None:
            raise RuntimeError("the alert record is not open")
        self._queue.append(operation)
        self._idle.clear()
        self._wakeup.set()

    async def flush(self) -> None:
        """Wait until every queued write is committed."""
        await self._idle.wait()

    async def _write_loop(self) -> None:
        backoff = Backoff(0.2, 10.0)
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            # Everything queued so far in one transaction: one commit (one fsync)
            # for a burst, so a reconnect's backlog is written at disk speed.
            batch = list(itertools.islice(self._queue, _BATCH))
            try:
                await self.call(functools.partial(SqlStore.batch, operations=batch))
            except StoreError as exc:
                self.failures += 1
                if self.healthy or self.failures & (self.failures - 1) == 0:
                    _log.error(
                        "alert record %s: write failed, %d queued, retrying: %s",
                        self.where,
                        self.pending,
                        exc,
                    )
                self.healthy = False
                await asyncio.sleep(backoff.next_delay())
                continue
            except Exception:
                # A bug in one write must not stop the others: write them one by
                # one, log and skip the one that fails.
                _log.exception("alert record: a write failed with a bug; retrying one by one")
                batch = batch[:1]
                try:
                    await self.call(batch[0])
                except StoreError:
                    continue
                except Exception:
                    _log.exception("alert record: this write is skipped")
            for _ in batch:
                self._queue.popleft()
            if not self.healthy:
                _log.warning("alert record %s: writing again", self.where)
                self.healthy = True
            backoff.reset()

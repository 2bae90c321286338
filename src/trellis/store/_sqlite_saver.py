"""LangGraph's SQLite checkpointer, run on the event loop's own thread.

``AsyncSqliteSaver`` (aiosqlite) sends every DBAPI call to a thread and back: a checkpoint
write is a dozen hand-offs, and a 3-node run about forty, each costing more than the SQLite
statement it carries (a WAL insert and commit take ~30 µs). :class:`LoopSqliteSaver` is
LangGraph's own sync :class:`~langgraph.checkpoint.sqlite.SqliteSaver` (same tables, same
serialisation), whose async methods call the sync ones directly.

That is only safe while a statement cannot wait, so the connection has no busy timeout: when
another connection holds the file's write lock (another process on the same file, or this
process's own fallback below), SQLite answers ``SQLITE_BUSY`` at once instead of blocking the
event loop. Such a call is redone on a second connection, one with the usual 5 s busy timeout,
on a dedicated thread. Every statement of the saver is a single ``INSERT OR REPLACE`` /
``INSERT OR IGNORE`` / ``DELETE`` batch or a read, so a call refused with ``SQLITE_BUSY`` wrote
nothing and is safe to redo.
"""

from __future__ import annotations

import asyncio
import copy
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)
from langgraph.checkpoint.sqlite import SqliteSaver

from trellis.store._sqlite import WalCheckpoints, is_busy

T = TypeVar("T")


class LoopSqliteSaver(SqliteSaver):
    """A :class:`SqliteSaver` whose async methods run on the calling (event loop) thread.

    Args:
        conn: the loop's connection, opened with ``check_same_thread=False`` and
            ``busy_timeout=0``.
        patient: a second connection to the same file with a busy timeout, for calls that
            found the file locked; used only on this saver's fallback thread.
    """

    def __init__(self, conn: sqlite3.Connection, patient: sqlite3.Connection) -> None:
        super().__init__(conn)
        self.patient = patient
        self._patient_lock = threading.Lock()
        self._fallback = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trellis-checkpoints")
        self.fallbacks = 0
        """How many calls found the file locked and went to the fallback thread."""
        self._wal = WalCheckpoints(self._fallback, self._checkpoint_wal)

    def over_patient(self) -> LoopSqliteSaver:
        """This saver (serde included) over the patient connection, for the fallback thread."""
        view = copy.copy(self)
        view.conn = self.patient
        view.lock = self._patient_lock
        return view

    def _checkpoint_wal(self) -> None:
        with self._patient_lock:
            self.patient.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    async def _call(self, method: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
        self.fallbacks += 1
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._fallback, partial(method, self.over_patient(), *args, **kwargs)
        )

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._call(SqliteSaver.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        # Read to the end at once: ``SqliteSaver.list`` holds the connection's lock while it is
        # iterated, and a consumer awaiting between items would block every other caller.
        def read(saver: SqliteSaver) -> list[CheckpointTuple]:
            return list(SqliteSaver.list(saver, config, filter=filter, before=before, limit=limit))

        for item in await self._call(read):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        saved = await self._call(SqliteSaver.put, config, checkpoint, metadata, new_versions)
        self._wal.committed()
        return saved

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await self._call(SqliteSaver.put_writes, config, writes, task_id, task_path)
        self._wal.committed()

    async def adelete_thread(self, thread_id: str) -> None:
        await self._call(SqliteSaver.delete_thread, thread_id)

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return await self._call(SqliteSaver.get_delta_channel_history, config=config, channels=channels)

    def close(self) -> None:
        """Stop the fallback thread (after its queued calls) and close both connections."""
        self._fallback.shutdown(wait=True)
        self.conn.close()
        if self.patient is not self.conn:
            self.patient.close()

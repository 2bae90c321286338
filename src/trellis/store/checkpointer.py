"""LangGraph's checkpointer for the database Trellis uses, ready for ``durability="sync"``.

Trellis keeps its own tables (runs, events, ...) in :class:`~trellis.store.Store`; LangGraph keeps
a run's graph state in a checkpointer, one thread per run. This module opens the right one:

* **SQLite**: a :class:`~trellis.store._sqlite_saver.LoopSqliteSaver` (LangGraph's own
  ``SqliteSaver`` tables and serialisation, executed on the event loop's thread, falling back to a
  thread when the file is locked) on a *separate file* next to the Trellis database
  (``trellis.db`` → ``trellis.checkpoints.db``). SQLite has one write lock per file; with two
  files, the runtime's event writes and LangGraph's checkpoint writes do not queue behind each
  other. The file gets the same WAL / ``synchronous=NORMAL`` tuning.
* **PostgreSQL**: an :class:`~langgraph.checkpoint.postgres.aio.AsyncPostgresSaver` over a
  :class:`psycopg_pool.AsyncConnectionPool` in the same database (and ``search_path``) as the
  Trellis tables. The saver's tables are created once under an advisory lock, so workers that
  start together do not race through LangGraph's migrations.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import URL

from trellis.store import _pg, _sqlite
from trellis.store._dialect import dialect_name, normalize_url
from trellis.store._sqlite_saver import LoopSqliteSaver

CLOSE_TIMEOUT_SECONDS = 5.0
"""How long closing the PostgreSQL pool waits for connections in use before dropping them."""


def checkpoint_path(url: str | URL) -> Path | None:
    """The checkpoint file for a SQLite Trellis database (``None`` when it is in memory).

    Example:
        ``sqlite+aiosqlite:///./.trellis/trellis.db`` → ``.trellis/trellis.checkpoints.db``.
    """
    path = _sqlite.database_path(normalize_url(url))
    if path is None:
        return None
    return path.with_name(f"{path.stem}.checkpoints.db")


@asynccontextmanager
async def open_checkpointer(
    url: str | URL, *, max_connections: int = 10
) -> AsyncIterator[BaseCheckpointSaver[str]]:
    """Open (and set up) the LangGraph checkpointer belonging to the Trellis database at ``url``.

    Args:
        url: the Trellis database URL, as given to :func:`~trellis.store.open_store`.
        max_connections: PostgreSQL pool size (ignored for SQLite, which uses one connection).

    Example:
        ::

            async with open_checkpointer(url) as saver:
                graph = builder.compile(checkpointer=saver)
                await graph.ainvoke(inputs, {"configurable": {"thread_id": run.id}}, durability="sync")

    .. versionadded:: 0.1
    """
    normalized = normalize_url(url)
    if dialect_name(normalized) == "sqlite":
        async with _open_sqlite(normalized) as sqlite_saver:
            yield sqlite_saver
    else:
        async with _open_postgres(normalized, max_connections) as pg_saver:
            yield pg_saver


@asynccontextmanager
async def _open_sqlite(url: URL) -> AsyncIterator[LoopSqliteSaver]:
    path = checkpoint_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    saver = await asyncio.to_thread(_connect_saver, path)
    try:
        yield saver
    finally:
        await asyncio.to_thread(saver.close)


def _connect_saver(path: Path | None) -> LoopSqliteSaver:
    """Both connections of a :class:`LoopSqliteSaver`, tuned, and the saver's tables created."""
    if path is None:
        # One in-memory database is one connection: nothing else can lock it, nothing waits.
        conn = _sqlite.connect_raw(":memory:", loop=True)
        saver = LoopSqliteSaver(conn, conn)
    else:
        _sqlite.ensure_wal(path)
        saver = LoopSqliteSaver(_sqlite.connect_raw(str(path), loop=True), _sqlite.connect_raw(str(path)))
    # Created over the patient connection: several processes may be starting on one file.
    SqliteSaver.setup(saver.over_patient())
    saver.is_setup = True
    return saver


SETUP_LOCK_POLL_SECONDS = 0.05


async def _try_lock(conn: AsyncConnection[DictRow]) -> bool:
    cursor = await conn.execute("SELECT pg_try_advisory_lock(%s) AS locked", (_pg.CHECKPOINT_SETUP_LOCK_KEY,))
    row = await cursor.fetchone()
    return bool(row and row["locked"])


@asynccontextmanager
async def _open_postgres(url: URL, max_connections: int) -> AsyncIterator[AsyncPostgresSaver]:
    # The saver's own connections must autocommit (setup runs CREATE INDEX CONCURRENTLY), return
    # dict rows, and not use server-side prepared statements (safe behind PgBouncer).
    pool: AsyncConnectionPool[AsyncConnection[DictRow]] = AsyncConnectionPool(
        _pg.libpq_url(url),
        min_size=1,
        max_size=max(2, max_connections),
        open=False,
        connection_class=AsyncConnection[DictRow],
        kwargs={"autocommit": True, "row_factory": dict_row, "prepare_threshold": 0},
    )
    try:
        await pool.open(wait=True)
        saver = AsyncPostgresSaver(pool)
        # A session-level advisory lock on one pooled connection, while setup() runs on others.
        # Taken with pg_try_advisory_lock in a loop, never a blocking pg_advisory_lock: setup()
        # runs CREATE INDEX CONCURRENTLY, which waits for every open statement in the database
        # to end -- including another process's statement blocked waiting for this very lock,
        # a deadlock PostgreSQL cannot detect (this lock's holder is an idle session).
        async with pool.connection() as lock_conn:
            while not await _try_lock(lock_conn):  # noqa: ASYNC110 - polling the database, not an in-process event
                await asyncio.sleep(SETUP_LOCK_POLL_SECONDS)
            try:
                await saver.setup()
            finally:
                await lock_conn.execute("SELECT pg_advisory_unlock(%s)", (_pg.CHECKPOINT_SETUP_LOCK_KEY,))
        yield saver
    finally:
        await pool.close(timeout=CLOSE_TIMEOUT_SECONDS)

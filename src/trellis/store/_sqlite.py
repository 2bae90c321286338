"""SQLite specifics: engine tuning, point operations on the loop's thread, explicit transactions.

Trellis's SQLite file is written by one process at a time (``trellis serve`` with its embedded
worker), so everything here favours low latency for that writer.

**Point operations on the loop's own thread.** Every async SQLite driver (aiosqlite included)
runs each DBAPI call on a worker thread, and a hand-off between the event loop and a thread
costs more than the statement it carries (a WAL insert and commit take ~30 µs): a 3-node run
made ~55 such hand-offs, and the threads fought the loop for the GIL. So a repository function
marked :func:`~trellis.store._dialect.point` (a few indexed rows, whatever the database's size)
runs at once on the calling thread, over a connection kept for that thread whose busy timeout
is zero: if another connection holds the write lock, SQLite answers ``SQLITE_BUSY`` at once
instead of stalling the loop, and the call goes to a thread instead. That connection never
checkpoints the WAL itself (a checkpoint syncs the file); the writer thread does, now and then.

**Threads for the rest.** Scans, reports, bulk deletes, migrations, and point operations that
found the file locked run as ordinary sync SQLAlchemy Core (driver ``pysqlite``) on a thread,
one hop per transaction, over connections that wait out another writer's lock (5 s). Writes go
to one writer thread, which queues this process's writes in order instead of letting them spin
in SQLite's busy handler; readers get a small pool and, thanks to WAL, never wait for a writer.
The hot statements run on the raw cursor (:mod:`~trellis.store._prepared`). The public URL stays
``sqlite+aiosqlite://``.

**Explicit transactions.** The ``sqlite3`` driver's legacy transaction handling is switched off
(``isolation_level = None``) and write transactions start with ``BEGIN IMMEDIATE``: a deferred
``BEGIN`` that later upgrades to a write lock can fail at once with ``SQLITE_BUSY`` under WAL,
whatever the busy timeout. Reads run without ``BEGIN``: each statement is its own snapshot.

**Pragmas** on every connection: WAL, ``synchronous=NORMAL`` (commits survive a process crash;
only a power loss may drop the last few), ``busy_timeout=5000`` ms, foreign keys on.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Concatenate, Final, Literal

from sqlalchemy import Table, create_engine, event
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.sql.dml import Insert

from trellis.store._dialect import P, Runner, T, is_point
from trellis.store._journal import JournalWriter
from trellis.store._prepared import driver_connection

PRAGMAS: Final = (
    "PRAGMA busy_timeout=5000",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)
"""Applied to every new connection, after WAL mode (which is persistent, the others are not)."""

WAL_SWITCH_SECONDS: Final = 10.0
"""How long a new connection keeps trying to put a fresh database file into WAL mode."""

READER_THREADS: Final = 4
"""Threads (and so, at most, connections) serving reads of one store."""

LOOP_PRAGMAS: Final = ("PRAGMA busy_timeout=0", "PRAGMA wal_autocheckpoint=0")
"""Applied after :data:`PRAGMAS` to a connection used on the event loop's thread: it never waits
for another connection's lock (``SQLITE_BUSY`` comes at once) and never checkpoints the WAL
itself (a checkpoint syncs the file): :class:`WalCheckpoints` has a thread do that."""

CHECKPOINT_EVERY_COMMITS: Final = 200
"""Commits on a loop connection between two WAL checkpoints run by a thread."""

BUSY_CODES: Final = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def is_busy(exc: BaseException | None) -> bool:
    """Whether ``exc`` is SQLite refusing a lock held by another connection (``SQLITE_BUSY``)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return (code & 0xFF if isinstance(code, int) else None) in BUSY_CODES


class WalCheckpoints:
    """Counts a loop connection's commits; every :data:`CHECKPOINT_EVERY_COMMITS` of them,
    ``checkpoint`` (a passive WAL checkpoint) is handed to ``executor``, not waited for."""

    def __init__(self, executor: Executor, checkpoint: Callable[[], None]) -> None:
        self._executor = executor
        self._checkpoint = checkpoint
        self._commits = 0

    def committed(self) -> None:
        self._commits += 1
        if self._commits % CHECKPOINT_EVERY_COMMITS == 0:
            self._executor.submit(self._checkpoint)


def database_path(url: URL) -> Path | None:
    """The database file a SQLite URL points at, or ``None`` for an in-memory database."""
    if url.database in (None, "", ":memory:"):
        return None
    assert url.database is not None
    return Path(url.database)


def _use_wal(cursor: Any) -> None:
    """Put the database file into WAL mode, waiting out other processes doing the same.

    Switching a fresh file to WAL needs an exclusive lock, and SQLite answers ``SQLITE_BUSY`` at
    once, without consulting the busy handler, when two connections race for it (processes that
    start together on a new file do). The switch is retried with a short back-off for a bounded
    time; once any connection has made it, the mode is persistent and the first read sees it.
    """
    deadline = time.monotonic() + WAL_SWITCH_SECONDS
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def ensure_wal(path: Path) -> None:
    """Put the database file at ``path`` into WAL mode (for connections not made by this module)."""
    conn = sqlite3.connect(str(path))
    try:
        _use_wal(conn.cursor())
    finally:
        conn.close()


def connect_raw(database: str, *, loop: bool = False) -> sqlite3.Connection:
    """A plain ``sqlite3`` connection usable from any thread, with :data:`PRAGMAS` (and, for a
    connection used on the event loop's thread, :data:`LOOP_PRAGMAS`).

    The driver's own transaction handling is kept (LangGraph's saver relies on it); the file
    must already be in WAL mode (:func:`ensure_wal`).
    """
    conn = sqlite3.connect(database, check_same_thread=False)
    for pragma in (*PRAGMAS, *LOOP_PRAGMAS) if loop else PRAGMAS:
        conn.execute(pragma)
    return conn


def _on_connect(dbapi_connection: Any, _connection_record: Any) -> None:
    # Take transaction control away from the sqlite3 driver; see the module docstring.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        _use_wal(cursor)
        for pragma in PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _begin_at_once(conn: Connection) -> bool:
    """``BEGIN IMMEDIATE`` on the loop's connection; False when another connection holds the lock.

    BEGIN and COMMIT go straight to the driver: through SQLAlchemy they cost more than a small
    transaction's own statements. SQLAlchemy's bookkeeping is settled after, if ``fn`` used it.
    """
    try:
        driver_connection(conn).execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if not is_busy(exc):
            raise
        return False
    return True


def _run_and_commit(conn: Connection, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Finish the transaction :func:`_begin_at_once` opened: ``fn``, then commit (or roll back)."""
    driver = driver_connection(conn)
    try:
        result = fn(conn, *args, **kwargs)
    except BaseException:
        driver.rollback()
        if conn.in_transaction():
            conn.rollback()
        raise
    driver.commit()
    if conn.in_transaction():
        conn.commit()
    return result


class SqliteRunner:
    """A :class:`~trellis.store._dialect.Runner` for SQLite: point operations on the loop's thread.

    A :func:`~trellis.store._dialect.point` operation runs at once on the calling thread, over a
    connection kept for that thread with no busy timeout; anything else, and a point operation
    that finds the file locked (``SQLITE_BUSY``, answered at once), goes to the writer thread or
    a reader thread, whose connections wait for the lock. See the module docstring.
    """

    def __init__(self, engine: Engine, *, in_memory: bool) -> None:
        self._engine = engine
        self._in_memory = in_memory
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trellis-sqlite-writer")
        # An in-memory database is one shared connection: all work must go through one thread.
        self._reader = (
            self._writer
            if in_memory
            else ThreadPoolExecutor(max_workers=READER_THREADS, thread_name_prefix="trellis-sqlite-reader")
        )
        self._local: Connection | None = None
        self._local_thread: int | None = None
        self._wal = WalCheckpoints(self._writer, self._checkpoint_wal)
        self.fallbacks = 0
        """Point operations that found the file locked and went to a thread instead."""

    def _local_connection(self) -> Connection | None:
        """The calling thread's own connection, if it is the thread that runs point operations."""
        if self._in_memory:
            return None
        if self._local is None:
            conn = self._engine.connect()
            for pragma in LOOP_PRAGMAS:
                conn.exec_driver_sql(pragma)
            conn.rollback()
            self._local, self._local_thread = conn, threading.get_ident()
        elif self._local_thread != threading.get_ident():
            return None
        return self._local

    async def read(
        self, fn: Callable[Concatenate[Connection, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn`` outside any transaction: inline when it is a point operation, else on a reader."""
        if is_point(fn) and (conn := self._local_connection()) is not None:
            try:
                return fn(conn, *args, **kwargs)
            except OperationalError as exc:  # raised as SQLAlchemy's, also by prepared statements
                if not is_busy(exc.orig):
                    raise
            finally:
                if conn.in_transaction():  # SQLAlchemy's own bookkeeping (no statement is sent)
                    conn.rollback()
            self.fallbacks += 1
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, partial(self._read, fn, *args, **kwargs))

    async def write(
        self, fn: Callable[Concatenate[Connection, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn`` inside ``BEGIN IMMEDIATE ... COMMIT``: inline when it is a point operation
        and the write lock is free at once, else on the writer thread."""
        if is_point(fn) and (conn := self._local_connection()) is not None:
            if _begin_at_once(conn):
                result = _run_and_commit(conn, fn, *args, **kwargs)
                self._wal.committed()
                return result
            self.fallbacks += 1
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, partial(self._write, fn, *args, **kwargs))

    async def write_statement(
        self, fn: Callable[Concatenate[Connection, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """A write like any other: its ``BEGIN IMMEDIATE`` is what finds a locked file at once."""
        return await self.write(fn, *args, **kwargs)

    def _read(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        with self._engine.connect() as conn:
            return fn(conn, *args, **kwargs)

    def _write(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        with self._engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                result = fn(conn, *args, **kwargs)
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
            return result

    def _checkpoint_wal(self) -> None:
        with self._engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    async def close(self) -> None:
        """Let queued work finish, stop the threads and close the connections."""
        if self._local is not None:
            self._local.close()
            self._local = None
        await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)
        self._engine.dispose()

    def __repr__(self) -> str:
        return f"SqliteRunner(url={self._engine.url.render_as_string(hide_password=True)!r})"


class SqliteDialect:
    """The :class:`~trellis.store._dialect.Dialect` for ``sqlite+aiosqlite`` URLs."""

    name: Literal["sqlite"] = "sqlite"

    def create_runner(self, url: URL) -> Runner:
        """Create the database's parent directory and a sync ``pysqlite`` engine over the file."""
        path = database_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url.set(drivername="sqlite+pysqlite"),
            # Pooled connections are used by whichever reader thread checks them out.
            connect_args={"check_same_thread": False},
        )
        event.listen(engine, "connect", _on_connect)
        return SqliteRunner(engine, in_memory=path is None)

    def upsert(self, table: Table, *, index_elements: Sequence[str], update: Sequence[str]) -> Insert:
        """``INSERT ... ON CONFLICT DO UPDATE`` (SQLite ≥ 3.24)."""
        stmt = sqlite.insert(table)
        if not update:
            return stmt.on_conflict_do_nothing(index_elements=list(index_elements))
        return stmt.on_conflict_do_update(
            index_elements=list(index_elements),
            set_={name: stmt.excluded[name] for name in update},
        )

    def lock_for_migration(self, conn: Connection) -> None:
        """Nothing to do: the migration's ``BEGIN IMMEDIATE`` already holds the write lock."""

    def journal_writer(self) -> JournalWriter:
        """The common writer: its prepared statements already run on SQLite's raw cursor."""
        return JournalWriter(self)

    def __repr__(self) -> str:
        return "SqliteDialect()"

"""SQLite specifics: engine tuning, explicit transactions, one thread hop per transaction.

Trellis's SQLite file is written by one process at a time (``trellis serve`` with its embedded
worker), so everything here favours low latency for that writer.

**One hop per transaction.** Every async SQLite driver (aiosqlite included) runs each DBAPI call
on a worker thread, and a hand-off between the event loop and a thread costs ~0.1-0.2 ms. Going
through SQLAlchemy's async adapter, :meth:`Store.record` makes ~20 such calls (cursor, execute,
fetch, close per statement, plus BEGIN/COMMIT) and took ~4 ms. Here the whole transaction runs
as ordinary sync SQLAlchemy Core (driver ``pysqlite``) on a dedicated thread: one hop. On top of
that, :class:`SqliteJournalWriter` runs ``record()``'s statements on the raw cursor; together
~0.35 ms per call. The public URL stays ``sqlite+aiosqlite://`` (LangGraph's checkpointer does
use aiosqlite).

**One writer thread.** SQLite has one write lock per file; a single-thread executor queues this
process's writes in order instead of letting them spin in SQLite's busy handler. Readers get a
small pool of threads and, thanks to WAL, never wait for the writer.

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
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Concatenate, Final, Literal

from sqlalchemy import Table, create_engine, event
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.engine import Dialect as SADialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.expression import ClauseElement

from trellis.store._dialect import P, Runner, T
from trellis.store._journal import INSERT_EVENTS, RESERVE, JournalWriter, RunUpdateShape

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


class SqliteRunner:
    """A :class:`~trellis.store._dialect.Runner` running sync SQLAlchemy on dedicated threads."""

    def __init__(self, engine: Engine, *, in_memory: bool) -> None:
        self._engine = engine
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trellis-sqlite-writer")
        # An in-memory database is one shared connection: all work must go through one thread.
        self._reader = (
            self._writer
            if in_memory
            else ThreadPoolExecutor(max_workers=READER_THREADS, thread_name_prefix="trellis-sqlite-reader")
        )

    async def read(
        self, fn: Callable[Concatenate[Connection, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn`` on a reader thread, outside any transaction."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, partial(self._read, fn, *args, **kwargs))

    async def write(
        self, fn: Callable[Concatenate[Connection, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn`` on the writer thread inside ``BEGIN IMMEDIATE ... COMMIT``."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, partial(self._write, fn, *args, **kwargs))

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

    async def close(self) -> None:
        """Let queued work finish, stop the threads and close the connections."""
        await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)
        self._engine.dispose()

    def __repr__(self) -> str:
        return f"SqliteRunner(url={self._engine.url.render_as_string(hide_password=True)!r})"


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A Core statement compiled for pysqlite: SQL text and, per ``?``, its name and processor."""

    sql: str
    binds: tuple[tuple[str, Callable[[Any], Any] | None], ...]

    @classmethod
    def of(cls, stmt: ClauseElement, dialect: SADialect, keys: Sequence[str] | None = None) -> _Compiled:
        compiled = stmt.compile(dialect=dialect, column_keys=None if keys is None else list(keys))
        assert isinstance(compiled, SQLCompiler)
        assert compiled.positiontup is not None, "pysqlite compiles to positional parameters"
        binds = tuple(
            (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in compiled.positiontup
        )
        return cls(compiled.string, binds)

    def params(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """Positional parameters for ``values``, converted as SQLAlchemy would."""
        return tuple(
            values[name] if process is None else process(values[name]) for name, process in self.binds
        )


class SqliteJournalWriter(JournalWriter):
    """Runs the hot statements of ``record()`` straight on the ``sqlite3`` cursor.

    SQLAlchemy still writes the SQL (each statement is compiled from the Core objects once per
    shape) and converts the values (its own bind processors: UTC timestamps, JSON); only its
    per-execution machinery is skipped, which is most of the cost of a ~30 µs SQLite statement.
    The cursor belongs to the connection's current transaction, like any other statement.
    """

    def __init__(self, dialect: SqliteDialect) -> None:
        super().__init__(dialect)
        self._compiled: dict[object, _Compiled] = {}

    def _statement(self, conn: Connection, key: object, build: Callable[[SADialect], _Compiled]) -> _Compiled:
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = build(conn.dialect)
        return compiled

    @staticmethod
    def _cursor(conn: Connection) -> Any:
        dbapi_connection = conn.connection.dbapi_connection
        assert dbapi_connection is not None
        return dbapi_connection.cursor()

    def execute_reserve(self, conn: Connection, params: Mapping[str, Any]) -> int | None:
        """``UPDATE runs ... RETURNING last_seq`` on the raw cursor."""
        compiled = self._statement(conn, "reserve", lambda d: _Compiled.of(RESERVE, d))
        cursor = self._cursor(conn)
        try:
            row = cursor.execute(compiled.sql, compiled.params(params)).fetchone()
        finally:
            cursor.close()
        return None if row is None else int(row[0])

    def execute_run_update(
        self, conn: Connection, shape: RunUpdateShape, params: Mapping[str, Any]
    ) -> int | None:
        """The run update (fields, event reservation, fence) on the raw cursor."""
        compiled = self._statement(conn, ("run", shape), lambda d: _Compiled.of(self.run_update(shape), d))
        cursor = self._cursor(conn)
        try:
            row = cursor.execute(compiled.sql, compiled.params(params)).fetchone()
        finally:
            cursor.close()
        return None if row is None else int(row[0])

    def execute_insert_events(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """``executemany`` of the event inserts on the raw cursor."""
        compiled = self._statement(conn, "events", lambda d: _Compiled.of(INSERT_EVENTS, d, list(rows[0])))
        cursor = self._cursor(conn)
        try:
            cursor.executemany(compiled.sql, [compiled.params(row) for row in rows])
        finally:
            cursor.close()

    def execute_upsert(self, conn: Connection, given: frozenset[str], row: Mapping[str, Any]) -> None:
        """The node-state upsert for ``given`` on the raw cursor."""
        compiled = self._statement(
            conn, given, lambda d: _Compiled.of(self.node_state_upsert(given), d, list(row))
        )
        cursor = self._cursor(conn)
        try:
            cursor.execute(compiled.sql, compiled.params(row))
        finally:
            cursor.close()


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
        """Executes ``record()``'s statements on the raw cursor: see :class:`SqliteJournalWriter`."""
        return SqliteJournalWriter(self)

    def __repr__(self) -> str:
        return "SqliteDialect()"

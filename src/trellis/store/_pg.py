"""PostgreSQL specifics: engine creation, upserts, migration locking and libpq URLs.

PostgreSQL is the coordination engine when Trellis runs on more than one machine (DESIGN §6), so
everything here assumes many processes share the database: migrations take an advisory lock, and
the write path relies on row locks (``UPDATE runs ... RETURNING``) rather than on an in-process
lock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Concatenate, Final, Literal

from sqlalchemy import Table, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql.dml import Insert

from trellis.store._dialect import P, Runner, T
from trellis.store._journal import JournalWriter
from trellis.store._pg_journal import PostgresJournalWriter

MIGRATION_LOCK_KEY: Final = 0x7472_656C_6C69_73
"""``pg_advisory_xact_lock`` key taken while migrating (the bytes of ``"trellis"``)."""

CHECKPOINT_SETUP_LOCK_KEY: Final = MIGRATION_LOCK_KEY + 1
"""``pg_advisory_lock`` key taken while LangGraph's checkpointer creates its tables."""


def libpq_url(url: URL) -> str:
    """The ``postgresql://`` connection string psycopg itself accepts, password included.

    Query parameters such as ``options=-csearch_path=...`` pass through unchanged.
    """
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresRunner:
    """A :class:`~trellis.store._dialect.Runner` over async psycopg engines.

    The sync repository functions run through :meth:`AsyncConnection.run_sync`, which drives the
    async driver from a greenlet: no threads, one ``await`` per transaction. Transactions and
    autocommit work have a pool each: switching a pooled connection to autocommit and back
    for every read cost more CPU than the read itself.
    """

    def __init__(self, engine: AsyncEngine, autocommit: AsyncEngine) -> None:
        self._engine = engine
        self._autocommit_engine = autocommit

    async def read(
        self, fn: Callable[Concatenate[Connection, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn`` outside a transaction (autocommit): each statement is its own snapshot.

        A read inside ``BEGIN ... ROLLBACK`` would cost two more round trips than its queries.
        """
        return await self._autocommit(fn, *args, **kwargs)

    async def write(
        self, fn: Callable[Concatenate[Connection, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn`` in a transaction committed when it returns."""
        async with self._engine.begin() as conn:
            return await conn.run_sync(fn, *args, **kwargs)

    async def write_statement(
        self, fn: Callable[Concatenate[Connection, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn``, one statement, in autocommit: no ``BEGIN`` and ``COMMIT`` round trips."""
        return await self._autocommit(fn, *args, **kwargs)

    async def _autocommit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        async with self._autocommit_engine.connect() as conn:
            return await conn.run_sync(fn, *args, **kwargs)

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._engine.dispose()
        await self._autocommit_engine.dispose()

    def __repr__(self) -> str:
        return f"PostgresRunner(url={self._engine.url.render_as_string(hide_password=True)!r})"


class PostgresDialect:
    """The :class:`~trellis.store._dialect.Dialect` for ``postgresql+psycopg`` URLs."""

    name: Literal["postgresql"] = "postgresql"

    def create_runner(self, url: URL) -> Runner:
        """Async engines (psycopg 3), each keeping up to 5 connections open (as many as one
        engine of 10 did): up to 15 for transactions and up to 10 in autocommit."""
        return PostgresRunner(
            create_async_engine(url, pool_size=5, max_overflow=10),
            create_async_engine(url, pool_size=5, max_overflow=5, isolation_level="AUTOCOMMIT"),
        )

    def upsert(self, table: Table, *, index_elements: Sequence[str], update: Sequence[str]) -> Insert:
        """``INSERT ... ON CONFLICT DO UPDATE``."""
        stmt = postgresql.insert(table)
        if not update:
            return stmt.on_conflict_do_nothing(index_elements=list(index_elements))
        return stmt.on_conflict_do_update(
            index_elements=list(index_elements),
            set_={name: stmt.excluded[name] for name in update},
        )

    def lock_for_migration(self, conn: Connection) -> None:
        """Wait for any other process migrating the same database; released at commit."""
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})

    def journal_writer(self) -> JournalWriter:
        """Plain SQLAlchemy Core (the network round trips, not Python, dominate here), plus a
        notification of new events for other processes."""
        return PostgresJournalWriter(self)

    def __repr__(self) -> str:
        return "PostgresDialect()"

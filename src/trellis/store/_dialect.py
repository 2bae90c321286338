"""Database URLs and the small interface each dialect module (`_sqlite`, `_pg`) implements.

Everything that differs between SQLite and PostgreSQL sits behind :class:`Dialect`: how the engine
is created and tuned and how a transaction reaches it (its :class:`Runner`), how an upsert is
spelled, how concurrent migrations are kept apart and how the hot path executes. The repositories
(``_workflows``, ``_runs``, ``_journal``, ``_commands``) are plain sync SQLAlchemy Core, written
once, and never branch on the dialect themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Concatenate, Literal, ParamSpec, Protocol, TypeVar

from sqlalchemy import Table, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.sql.dml import Insert

if TYPE_CHECKING:
    from trellis.store._journal import JournalWriter

P = ParamSpec("P")
T = TypeVar("T")

DialectName = Literal["sqlite", "postgresql"]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./.trellis/trellis.db"
"""The database ``trellis`` uses when ``TRELLIS_DATABASE_URL`` is not set."""

_ASYNC_DRIVERS: dict[str, str] = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "postgresql+psycopg2": "postgresql+psycopg",
    "postgresql+psycopg_async": "postgresql+psycopg",
    "postgresql+asyncpg": "postgresql+psycopg",
}


def normalize_url(url: str | URL) -> URL:
    """Parse a database URL and point it at the async driver Trellis uses for that database.

    ``sqlite:///x.db`` becomes ``sqlite+aiosqlite:///x.db``; ``postgresql://...`` (and
    ``postgres://``, ``postgresql+psycopg2://``) becomes ``postgresql+psycopg://...``.
    Everything else in the URL (credentials, query parameters such as ``options``) is kept.

    Args:
        url: a SQLAlchemy-style URL, e.g. ``sqlite+aiosqlite:///./.trellis/trellis.db``.

    Raises:
        ValueError: the URL names a database Trellis does not support.
    """
    parsed = make_url(url) if isinstance(url, str) else url
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError(
            f"unsupported database URL scheme {parsed.drivername!r} in {mask_url(parsed)!r}: "
            "use sqlite+aiosqlite:///path/to/trellis.db or postgresql+psycopg://user@host:5432/db"
        )
    return parsed.set(drivername=driver)


def mask_url(url: str | URL) -> str:
    """Render ``url`` for logs and error messages, with any password replaced by ``***``."""
    parsed = make_url(url) if isinstance(url, str) else url
    return parsed.render_as_string(hide_password=True)


def dialect_name(url: URL) -> DialectName:
    """Which of the two supported databases a normalised URL points at."""
    name = url.get_backend_name()
    if name == "sqlite":
        return "sqlite"
    if name == "postgresql":
        return "postgresql"
    raise ValueError(f"unsupported database {name!r} in {mask_url(url)!r}")


_PG_NOTIFY = text("SELECT pg_notify(:c, :p)")


def pg_notify(conn: Connection, channel: str, payload: str) -> None:
    """PostgreSQL ``NOTIFY`` of ``payload`` on ``channel``, delivered when ``conn``'s transaction
    commits (at once in autocommit)."""
    conn.execute(_PG_NOTIFY, {"c": channel, "p": payload})


_POINT_OPERATIONS: set[Callable[..., object]] = set()

F = TypeVar("F", bound=Callable[..., object])


def point(fn: F) -> F:
    """Mark a repository function as a *point operation*: a few indexed row reads or writes.

    Its cost does not grow with the size of the database, so a runner may execute it on the
    calling thread instead of handing it to another (see ``_sqlite``). Scans, reports, bulk
    deletes and migrations stay unmarked.
    """
    _POINT_OPERATIONS.add(fn)
    return fn


def is_point(fn: Callable[..., object]) -> bool:
    """Whether ``fn`` was marked with :func:`point`."""
    return fn in _POINT_OPERATIONS


class Runner(Protocol):
    """Runs a sync function of a SQLAlchemy ``Connection`` as one transaction, from async code.

    The repositories are plain sync SQLAlchemy Core; the runner decides how that reaches the
    event loop. One ``await`` per transaction keeps the per-call cost to a single hand-off, which
    is what makes :meth:`~trellis.store.Store.record` cheap (see ``_sqlite``).
    """

    async def read(
        self, fn: Callable[Concatenate[Connection, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(conn, *args, **kwargs)``, which only reads, outside a transaction."""
        ...

    async def write(
        self, fn: Callable[Concatenate[Connection, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(conn, *args, **kwargs)`` in a write transaction, committed if it returns."""
        ...

    async def write_statement(
        self, fn: Callable[Concatenate[Connection, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn``, a write of ONE statement (atomic by itself), needing no transaction."""
        ...

    async def close(self) -> None:
        """Wait for work in flight, then close every connection."""
        ...


class Dialect(Protocol):
    """What the store needs from a database beyond portable SQLAlchemy Core."""

    @property
    def name(self) -> DialectName:
        """``"sqlite"`` or ``"postgresql"``."""
        ...

    def create_runner(self, url: URL) -> Runner:
        """Create the engine and the :class:`Runner` over it (connections open lazily)."""
        ...

    def upsert(self, table: Table, *, index_elements: Sequence[str], update: Sequence[str]) -> Insert:
        """``INSERT ... ON CONFLICT (index_elements) DO UPDATE SET col = excluded.col`` for ``update``."""
        ...

    def lock_for_migration(self, conn: Connection) -> None:
        """Serialise schema migrations of concurrent processes, inside ``conn``'s transaction."""
        ...

    def journal_writer(self) -> JournalWriter:
        """What executes the hot statements of :meth:`~trellis.store.Store.record`."""
        ...


def dialect_for(url: URL) -> Dialect:
    """The :class:`Dialect` implementation for a normalised URL."""
    if dialect_name(url) == "sqlite":
        from trellis.store._sqlite import SqliteDialect

        return SqliteDialect()
    from trellis.store._pg import PostgresDialect

    return PostgresDialect()


__all__ = [
    "DEFAULT_DATABASE_URL",
    "Dialect",
    "DialectName",
    "Runner",
    "dialect_for",
    "dialect_name",
    "is_point",
    "mask_url",
    "normalize_url",
    "pg_notify",
    "point",
]

"""Prepared statements: Core statements built once, run on SQLite's raw cursor.

The store's hot statements are tiny (one indexed row, ~30 µs in SQLite), and executing them
through SQLAlchemy's :meth:`Connection.execute` costs several times that in Python: building the
statement, its cache key, the execution context, the result object. A :class:`Prepared`
statement is built once at import, with a ``bindparam`` for every value; it is compiled once
per dialect and shape and executed on the DBAPI cursor of the connection's current transaction
(SQLite's ``sqlite3`` cursor; on PostgreSQL, the cursor of SQLAlchemy's adapter over async
psycopg), with SQLAlchemy's own bind and result processors converting the values (UTC
timestamps, JSON), so rows come back exactly as :meth:`Connection.execute` would give them. A
statement with an expanding parameter (``IN``) goes through ``execute`` as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.engine import Dialect as SADialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import Delete, Insert, Update
from sqlalchemy.sql.expression import ClauseElement, Select

Processor = Callable[[Any], Any]
Statement = Select[Any] | Insert | Update | Delete
Params = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Compiled:
    """A Core statement compiled for one dialect: SQL text, its parameters (in ``?`` order for
    pysqlite; by name for psycopg), and (for statements returning rows) each result column's key
    and processor."""

    sql: str
    binds: tuple[tuple[str, str, Any, Processor | None], ...]
    """Per parameter: its name, its name in the SQL text, its value when the statement carries
    one, its processor."""
    columns: tuple[tuple[str, Processor | None], ...]
    named: bool
    """Parameters go by name (``%(name)s``) rather than by position (``?``)."""

    @classmethod
    def of(
        cls, stmt: ClauseElement, dialect: SADialect, keys: Sequence[str] | None = None
    ) -> Compiled | None:
        """The compiled form, or None when the statement needs SQLAlchemy's own execution."""
        compiled = stmt.compile(dialect=dialect, column_keys=None if keys is None else list(keys))
        assert isinstance(compiled, SQLCompiler)
        names = compiled.positiontup if compiled.positiontup is not None else list(compiled.binds)
        if any(compiled.binds[name].expanding for name in names):
            return None
        escaped: Mapping[str, str] = compiled.escaped_bind_names or {}
        binds = tuple(
            (
                name,
                escaped.get(name, name),
                compiled.binds[name].effective_value if not compiled.binds[name].required else _REQUIRED,
                compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect),
            )
            for name in names
        )
        columns = tuple(
            (column.keyname, column.type.dialect_impl(dialect).result_processor(dialect, None))
            for column in compiled._result_columns
        )
        return cls(compiled.string, binds, columns, named=compiled.positiontup is None)

    def params(self, values: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        """The parameters for ``values``, converted as SQLAlchemy would."""
        converted = []
        for name, _, fixed, process in self.binds:
            value = values[name] if fixed is _REQUIRED or name in values else fixed
            converted.append(value if process is None else process(value))
        if self.named:
            return {sql_name: value for (_, sql_name, _, _), value in zip(self.binds, converted, strict=True)}
        return tuple(converted)

    def row(self, raw: Sequence[Any]) -> dict[str, Any]:
        """One result row as ``{column key: value}``, converted as SQLAlchemy would."""
        return {
            key: value if process is None else process(value)
            for (key, process), value in zip(self.columns, raw, strict=True)
        }


_REQUIRED: Any = object()
"""Marks a parameter the caller must give (as opposed to a literal built into the statement)."""


def driver_connection(conn: Connection) -> Any:
    """The DBAPI connection under ``conn`` (for SQLite, the ``sqlite3.Connection``)."""
    dbapi_connection = conn.connection.dbapi_connection
    assert dbapi_connection is not None
    return dbapi_connection


def raw_cursor(conn: Connection) -> Any:
    """A DBAPI cursor in ``conn``'s current transaction."""
    return driver_connection(conn).cursor()


class Prepared:
    """A statement built once; see the module docstring.

    Args:
        stmt: the statement, every varying value a ``bindparam``. An ``INSERT`` without
            ``.values()`` takes its columns from the parameters given, one compilation per set
            of column names.
    """

    __slots__ = ("_compiled", "stmt")

    def __init__(self, stmt: Statement) -> None:
        self.stmt = stmt
        self._compiled: dict[tuple[str, tuple[str, ...] | None], Compiled | None] = {}

    def _for(self, conn: Connection, params: Params, by_keys: bool) -> Compiled | None:
        key = (conn.dialect.name, tuple(params) if by_keys else None)
        try:
            return self._compiled[key]
        except KeyError:
            compiled = self._compiled[key] = Compiled.of(self.stmt, conn.dialect, key[1])
            return compiled

    def rows(
        self, conn: Connection, params: Mapping[str, Any], *, by_keys: bool = False
    ) -> list[dict[str, Any]]:
        """Execute with ``params``; every row it returns (none for a plain write)."""
        compiled = self._for(conn, params, by_keys)
        if compiled is None:
            result = conn.execute(self.stmt, dict(params))
            return [dict(row) for row in result.mappings()] if result.returns_rows else []
        with _raw(conn, compiled) as cursor:
            cursor.execute(compiled.sql, compiled.params(params))
            return [compiled.row(raw) for raw in cursor.fetchall()] if compiled.columns else []

    def first(
        self, conn: Connection, params: Mapping[str, Any], *, by_keys: bool = False
    ) -> dict[str, Any] | None:
        """Execute with ``params``; the first row it returns, if any."""
        found = self.rows(conn, params, by_keys=by_keys)
        return found[0] if found else None

    def run_many(self, conn: Connection, sets: Sequence[Mapping[str, Any]]) -> None:
        """Execute once per parameter set (``executemany``); every set has the first one's keys."""
        compiled = self._for(conn, sets[0], by_keys=True)
        if compiled is None:
            conn.execute(self.stmt, [dict(params) for params in sets])
            return
        with _raw(conn, compiled) as cursor:
            cursor.executemany(compiled.sql, [compiled.params(params) for params in sets])


@contextmanager
def _raw(conn: Connection, compiled: Compiled) -> Iterator[Any]:
    """A DBAPI cursor in ``conn``'s current transaction, closed after; the driver's errors are
    raised as SQLAlchemy raises them (``IntegrityError``, ``OperationalError``, ...), and a
    connection the error shows to be lost is invalidated, as SQLAlchemy would."""
    dialect = conn.dialect
    dbapi_error = dialect.loaded_dbapi.Error
    cursor = raw_cursor(conn)
    try:
        yield cursor
    except dbapi_error as exc:
        lost = dialect.is_disconnect(exc, driver_connection(conn), cursor)
        if lost:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            compiled.sql, None, exc, dbapi_error, connection_invalidated=lost, dialect=dialect
        ) from exc
    finally:
        cursor.close()

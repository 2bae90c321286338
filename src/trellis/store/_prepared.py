"""Prepared statements: Core statements built once, run on SQLite's raw cursor.

The store's hot statements are tiny (one indexed row, ~30 µs in SQLite), and executing them
through SQLAlchemy's :meth:`Connection.execute` costs several times that in Python: building the
statement, its cache key, the execution context, the result object. A :class:`Prepared`
statement is built once at import, with a ``bindparam`` for every value; on SQLite it is
compiled once per shape and executed on the DBAPI cursor of the connection's current
transaction, with SQLAlchemy's own bind and result processors converting the values (UTC
timestamps, JSON), so rows come back exactly as :meth:`Connection.execute` would give them. On
PostgreSQL, where the round trip and not Python dominates, it goes through ``execute`` as usual
(still skipping the statement's construction).
"""

from __future__ import annotations

import sqlite3
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
    """A Core statement compiled for pysqlite: SQL text, its parameters in ``?`` order, and
    (for statements returning rows) each result column's key and processor."""

    sql: str
    binds: tuple[tuple[str, Any, Processor | None], ...]
    """Per ``?``: the parameter's name, its value when the statement carries one, its processor."""
    columns: tuple[tuple[str, Processor | None], ...]

    @classmethod
    def of(cls, stmt: ClauseElement, dialect: SADialect, keys: Sequence[str] | None = None) -> Compiled:
        compiled = stmt.compile(dialect=dialect, column_keys=None if keys is None else list(keys))
        assert isinstance(compiled, SQLCompiler)
        assert compiled.positiontup is not None, "pysqlite compiles to positional parameters"
        binds = tuple(
            (
                name,
                compiled.binds[name].effective_value if not compiled.binds[name].required else _REQUIRED,
                compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect),
            )
            for name in compiled.positiontup
        )
        columns = tuple(
            (column.keyname, column.type.dialect_impl(dialect).result_processor(dialect, None))
            for column in compiled._result_columns
        )
        return cls(compiled.string, binds, columns)

    def params(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """Positional parameters for ``values``, converted as SQLAlchemy would."""
        out = []
        for name, fixed, process in self.binds:
            value = values[name] if fixed is _REQUIRED or name in values else fixed
            out.append(value if process is None else process(value))
        return tuple(out)

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
        self._compiled: dict[tuple[str, ...] | None, Compiled] = {}

    def _for(self, conn: Connection, params: Params, by_keys: bool) -> Compiled:
        keys = tuple(params) if by_keys else None
        compiled = self._compiled.get(keys)
        if compiled is None:
            compiled = self._compiled[keys] = Compiled.of(self.stmt, conn.dialect, keys)
        return compiled

    def rows(
        self, conn: Connection, params: Mapping[str, Any], *, by_keys: bool = False
    ) -> list[dict[str, Any]]:
        """Execute with ``params``; every row it returns (none for a plain write)."""
        if conn.dialect.name != "sqlite":
            result = conn.execute(self.stmt, dict(params))
            return [dict(row) for row in result.mappings()] if result.returns_rows else []
        compiled = self._for(conn, params, by_keys)
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
        if conn.dialect.name != "sqlite":
            conn.execute(self.stmt, [dict(params) for params in sets])
            return
        compiled = self._for(conn, sets[0], by_keys=True)
        with _raw(conn, compiled) as cursor:
            cursor.executemany(compiled.sql, [compiled.params(params) for params in sets])


@contextmanager
def _raw(conn: Connection, compiled: Compiled) -> Iterator[Any]:
    """A DBAPI cursor in ``conn``'s current transaction, closed after; the driver's errors are
    raised as SQLAlchemy raises them (``IntegrityError``, ``OperationalError``, ...)."""
    cursor = raw_cursor(conn)
    try:
        yield cursor
    except sqlite3.Error as exc:
        raise DBAPIError.instance(compiled.sql, None, exc, sqlite3.Error) from exc
    finally:
        cursor.close()

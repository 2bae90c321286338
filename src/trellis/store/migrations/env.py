"""Alembic environment: migrates over the connection :mod:`trellis.store._migrate` passes in.

Online migrations never open a connection of their own: the store hands over a connection that
is already inside its migration transaction (and, on PostgreSQL, holds the migration lock), via
``config.attributes["connection"]``. Offline mode (``--sql``) renders SQL for the URL in the
config's ``sqlalchemy.url``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from trellis.store.schema import metadata


def _run_offline() -> None:
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    if context.is_offline_mode():
        _run_offline()
        return
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError(
            "Trellis migrations run through trellis.store (open_store, Store.upgrade or "
            "`trellis db upgrade`), which passes the connection in config.attributes"
        )
    _run_online(connection)


_main()

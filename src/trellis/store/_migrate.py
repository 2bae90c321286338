"""Alembic, configured in code: no ``alembic.ini`` is needed, so an installed wheel can migrate.

Migrations run in one transaction that first takes the dialect's migration lock (an advisory lock
on PostgreSQL; ``BEGIN IMMEDIATE`` on SQLite), so processes starting together do not race to
create the same tables, and a failed migration leaves nothing half-done (both databases have
transactional DDL).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

from sqlalchemy import inspect, text
from sqlalchemy.engine import URL, Connection

from trellis.store._dialect import Dialect, normalize_url

if TYPE_CHECKING:  # Alembic loads only when a database needs migrating (or a revision is asked)
    from alembic.config import Config

MIGRATIONS_DIR: Final = Path(__file__).with_name("migrations")
"""Where the Alembic environment and revisions ship, inside the installed package."""

HEAD_REVISION: Final = "0007"
"""The newest revision in ``migrations/versions`` (a test holds it to Alembic's own answer).
Known without Alembic, so that a process whose database is current never imports it: a CLI
command that reads a run starts faster."""


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic :class:`~alembic.config.Config` for the Trellis migrations.

    Args:
        url: the database, only needed for offline (``--sql``) generation; online migrations
            receive their connection from :func:`upgrade`.

    Example:
        Render the SQL of every migration for a DBA to review::

            from alembic import command
            command.upgrade(alembic_config("postgresql://db.example/trellis"), "head", sql=True)
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    # ConfigParser interpolation: a literal % is written %%.
    config.set_main_option("file_template", "r%%(rev)s_%%(slug)s")
    if url is not None:
        rendered = normalize_url(url).render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


def head_revision() -> str:
    """The newest revision shipped with this version of Trellis, as Alembic reads the scripts."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the Trellis migrations have no head revision"
    return head


def current_revision(conn: Connection) -> str | None:
    """The revision the database behind ``conn`` is at (``None`` before the first migration)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def at_head(conn: Connection) -> bool:
    """Whether the database is at :data:`HEAD_REVISION` already: one query, no Alembic."""
    if not inspect(conn).has_table("alembic_version"):
        return False
    return list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars()) == [HEAD_REVISION]


def upgrade(conn: Connection, dialect: Dialect, revision: str = "head") -> None:
    """Migrate to ``revision`` inside ``conn``'s write transaction; a no-op when already there.

    Takes the dialect's migration lock first, so concurrent processes migrate one at a time and
    the later ones find the work done.
    """
    from alembic import command

    dialect.lock_for_migration(conn)
    config = alembic_config()
    config.attributes["connection"] = conn
    command.upgrade(config, revision)

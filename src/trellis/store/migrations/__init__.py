"""Alembic migrations of the Trellis schema, shipped inside the package.

Run them with :func:`trellis.store.open_store` (``migrate=True``), :meth:`Store.upgrade` or
``trellis db upgrade``; no ``alembic.ini`` is involved. To write a new revision, generate it
against a database at head::

    from alembic import command
    from trellis.store import alembic_config
    command.revision(alembic_config("sqlite:///dev.db"), message="add x", rev_id="0002", autogenerate=True)

then review it by hand: revisions are frozen snapshots and never import :mod:`trellis.store.schema`.
"""

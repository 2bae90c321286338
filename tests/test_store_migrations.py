"""trellis.store migrations and dialect set-up: Alembic in code, URLs, SQLite tuning.

Database tests run on SQLite and on PostgreSQL (see `database_url` in conftest.py).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import Connection

from trellis.store import (
    DEFAULT_DATABASE_URL,
    Store,
    alembic_config,
    mask_url,
    normalize_url,
    open_store,
)
from trellis.store._migrate import head_revision
from trellis.store.schema import metadata

TABLES = {
    "workflows",
    "runs",
    "node_states",
    "events",
    "commands",
    "workers",
    "api_keys",
    "audit_log",
    "agents",
    "breakers",
    "agent_samples",
    "system_events",
    "run_logs",
    "triggers",
    "trigger_leases",
    "callbacks",
    "deliveries",
    "publish_cursors",
    "publish_watermarks",
    "alembic_version",
}
VERSIONS = Path(__file__).parents[1] / "src" / "trellis" / "store" / "migrations" / "versions"


def sync_url(database_url: str) -> str:
    """The same database through a sync driver, to inspect it independently of the store."""
    url = normalize_url(database_url)
    driver = "sqlite+pysqlite" if url.get_backend_name() == "sqlite" else "postgresql+psycopg"
    return url.set(drivername=driver).render_as_string(hide_password=False)


class TestMigrations:
    async def test_migrations_apply_to_an_empty_database(self, database_url: str) -> None:
        store = await open_store(database_url, migrate=False)
        try:
            assert await store.current_revision() is None
            await store.upgrade()
            assert await store.current_revision() == store.head_revision()
            assert store.head_revision() == sorted(p.stem[1:5] for p in VERSIONS.glob("r*.py"))[-1]
            assert store.head_revision() == head_revision()  # the constant, and Alembic's reading
        finally:
            await store.close()
        engine = create_engine(sync_url(database_url))
        try:
            with engine.connect() as conn:
                assert set(inspect(conn).get_table_names()) == TABLES
        finally:
            engine.dispose()

    async def test_upgrading_again_changes_nothing(self, store: Store) -> None:
        await store.upgrade()
        await store.upgrade()
        assert await store.current_revision() == store.head_revision()

    def test_a_process_opening_a_current_database_imports_neither_alembic_nor_langgraph(
        self, database_url: str
    ) -> None:
        """What `trellis runs list` pays before its query: the store without its heavy neighbours."""
        asyncio.run(_migrated(database_url))
        script = (
            "import asyncio, sys\n"
            "from trellis.store import open_store\n"
            "async def main():\n"
            f"    store = await open_store({database_url!r})\n"
            "    await store.list_runs(limit=1)\n"
            "    await store.close()\n"
            "asyncio.run(main())\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'alembic', 'langgraph', 'langchain_core'}))\n"
        )
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "[]"

    async def test_processes_starting_together_migrate_once(self, database_url: str) -> None:
        stores = await asyncio.gather(*(open_store(database_url) for _ in range(3)))
        try:
            revisions = await asyncio.gather(*(s.current_revision() for s in stores))
            assert revisions == [stores[0].head_revision()] * 3
        finally:
            await asyncio.gather(*(s.close() for s in stores))

    async def test_the_migrated_schema_matches_schema_py(self, store: Store, database_url: str) -> None:
        """schema.py (what the code queries) and the revisions (what creates tables) agree."""
        engine = create_engine(sync_url(database_url))

        def differences(conn: Connection) -> list[object]:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))

        try:
            with engine.connect() as conn:
                assert differences(conn) == []
        finally:
            engine.dispose()

    def test_offline_mode_renders_sql_without_a_database(self, capsys: pytest.CaptureFixture[str]) -> None:
        command.upgrade(alembic_config("postgresql://dba@db.example/trellis"), "head", sql=True)
        rendered = capsys.readouterr().out
        assert "CREATE TABLE runs" in rendered
        assert "JSONB" in rendered
        assert "INSERT INTO alembic_version (version_num) VALUES ('0001')" in rendered


class TestUrls:
    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
            ("sqlite+aiosqlite:///./.trellis/trellis.db", "sqlite+aiosqlite:///./.trellis/trellis.db"),
            ("sqlite://", "sqlite+aiosqlite://"),
            ("postgresql://u@h:5432/d", "postgresql+psycopg://u@h:5432/d"),
            ("postgres://u@h/d", "postgresql+psycopg://u@h/d"),
            (
                "postgresql+psycopg2://u:pw@h/d?sslmode=require",
                "postgresql+psycopg://u:pw@h/d?sslmode=require",
            ),
        ],
    )
    def test_urls_are_pointed_at_the_async_drivers(self, given: str, expected: str) -> None:
        assert normalize_url(given).render_as_string(hide_password=False) == expected

    def test_unsupported_databases_are_refused_without_leaking_the_password(self) -> None:
        with pytest.raises(ValueError, match=r"mysql://u:\*\*\*@h/d") as raised:
            normalize_url("mysql://u:secret@h/d")
        assert "secret" not in str(raised.value)

    def test_mask_url_hides_the_password(self) -> None:
        assert mask_url("postgresql://u:secret@h/d") == "postgresql://u:***@h/d"

    async def test_store_repr_hides_the_password(self) -> None:
        store = Store("postgresql://u:secret@127.0.0.1:1/d")
        try:
            assert "secret" not in repr(store)
            assert store.dialect == "postgresql"
            assert store.url == "postgresql+psycopg://u:secret@127.0.0.1:1/d"
        finally:
            await store.close()


class TestSqlite:
    async def test_the_default_url_creates_its_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        async with await open_store(DEFAULT_DATABASE_URL) as store:
            assert store.dialect == "sqlite"
        assert (tmp_path / ".trellis" / "trellis.db").is_file()

    async def test_every_connection_is_tuned(self, tmp_path: Path) -> None:
        async with await open_store(f"sqlite:///{tmp_path / 't.db'}") as store:

            def pragmas(conn: Connection) -> dict[str, object]:
                names = ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
                return {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar() for name in names}

            expected = {"journal_mode": "wal", "synchronous": 1, "busy_timeout": 5000, "foreign_keys": 1}
            assert await store._runner.read(pragmas) == expected
            assert await store._runner.write(pragmas) == expected

    async def test_an_in_memory_database_works(self) -> None:
        async with await open_store("sqlite+aiosqlite://") as store:
            workflow, _ = await store.put_workflow(name="w", hash="h", kind="dsl", definition={}, source=None)
            run = await store.create_run(workflow="w", version=workflow.version, hash="h", input=None)
            runs, _ = await asyncio.gather(store.list_runs(), store.list_events(run.id))
            assert [r.id for r in runs[0]] == [run.id]


async def _migrated(url: str) -> None:
    store = await open_store(url)
    await store.close()

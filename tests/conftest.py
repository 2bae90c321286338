"""Shared pytest fixtures. Each section belongs to one package; keep sections grouped."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from psycopg import sql
from sqlalchemy.engine import make_url

from trellis.api import ApiSettings, create_app
from trellis.config import Settings
from trellis.queue import Worker
from trellis.registry import Registry
from trellis.runtime import Engine
from trellis.store import Store, mask_url, normalize_url, open_store

# ---------------------------------------------------------------------------------------------
# trellis.store: databases
#
# `database_url` (and `store` on top of it) runs a test once per backend: a SQLite file in
# tmp_path, and PostgreSQL at $TRELLIS_TEST_PG_URL. Every PostgreSQL test gets its own freshly
# created schema, selected through the connection's search_path (`?options=-csearch_path=...`),
# so tests never see each other's rows or tables; the schema is dropped afterwards.
# Without a reachable server the PostgreSQL cases are skipped, or fail when CI=true.
# ---------------------------------------------------------------------------------------------

PG_URL_ENV = "TRELLIS_TEST_PG_URL"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _libpq(url: str) -> str:
    return normalize_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """The PostgreSQL server for tests; skips (or fails on CI) when it cannot be reached."""
    url = os.environ.get(PG_URL_ENV, DEFAULT_PG_URL)
    try:
        with psycopg.connect(_libpq(url), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        message = f"PostgreSQL not reachable at {mask_url(url)}: {str(exc).strip() or type(exc).__name__}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture
def pg_url(pg_server_url: str) -> Iterator[str]:
    """A URL whose connections use a fresh, empty schema of their own (dropped afterwards)."""
    schema = f"trellis_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq(pg_server_url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    url = make_url(pg_server_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_libpq(pg_server_url), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty database on each backend: a SQLite file, then a PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'trellis.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """A migrated :class:`~trellis.store.Store` on an empty database, closed afterwards."""
    opened = await open_store(database_url)
    try:
        yield opened
    finally:
        await opened.close()


# ---------------------------------------------------------------------------------------------
# trellis.api: an app over a real engine (each backend), an in-process client, a worker
#
# `api_engine` uses `steerable_tools()` (see api_support.py). Runs stay queued unless the test
# also asks for `worker`, the real queue worker executing them in the test's event loop.
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def api_tools() -> Registry:
    from api_support import steerable_tools

    return steerable_tools()


@pytest.fixture
async def api_engine(database_url: str, api_tools: Registry) -> AsyncIterator[Engine]:
    async with Engine.open(Settings(database_url=database_url), registry=api_tools) as engine:
        yield engine


@pytest.fixture
def api_settings() -> ApiSettings:
    """Short stream and auth timings, so the tests see keep-alives and key changes at once."""
    return ApiSettings(
        keep_alive_seconds=0.2, stream_poll_seconds=0.2, wait_timeout_seconds=10, auth_refresh_seconds=0
    )


@pytest.fixture
def app(api_engine: Engine, api_settings: ApiSettings) -> FastAPI:
    return create_app(api_engine, settings=api_settings)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://trellis.test") as opened:
        yield opened


@pytest.fixture
async def worker(api_engine: Engine) -> AsyncIterator[Worker]:
    """The queue worker, executing the engine's runs until the test ends."""
    running = Worker(api_engine, concurrency=4, poll_seconds=0.05)
    task = asyncio.create_task(running.run(grace_seconds=1))
    try:
        yield running
    finally:
        running.request_stop()
        await asyncio.wait_for(task, 15)

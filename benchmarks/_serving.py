"""Both sides of the service benchmark: ``trellis serve`` in this event loop, and its raw floor.

* :func:`serving` — an :class:`Engine` with the benchmark's tools, ``create_app(engine)`` served
  by a real ``uvicorn`` on ``127.0.0.1`` (a free port) and an embedded :class:`Worker`, all in the
  running event loop: what ``trellis serve`` builds (:mod:`trellis.cli._serve`).
* :class:`Floor` — the same 3-node chain built by hand on raw LangGraph, run in-process.
* :func:`pg_server_url` / :func:`pg_schemas` — a PostgreSQL server if one answers, and fresh
  schemas on it selected through ``search_path`` (as ``tests/conftest.py`` does), dropped after.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import uvicorn
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg import AsyncConnection, sql
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import make_url

from benchmarks._graphs import LinearState, linear_definition, thread, tools
from benchmarks._load import Block, RunFailed, callers
from trellis._loop import freeze_startup_heap
from trellis.api import ApiSettings, create_app
from trellis.api._runs import wait_until_settled
from trellis.config import Settings
from trellis.queue import Worker
from trellis.runtime import Engine
from trellis.store import mask_url, normalize_url

NODES = 3
WORKFLOW = "bench-service-3"
WORKER_SLOTS = 16
"""Slots of the embedded worker (``trellis serve --concurrency 16``)."""
PG_URL_ENV = "TRELLIS_BENCH_PG_URL"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


class _Server(uvicorn.Server):
    """uvicorn leaving the process's signal handling alone, as ``trellis serve``'s does."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Service:
    """A running service: its engine, where it listens, its worker."""

    engine: Engine
    base_url: str
    worker: Worker
    settings: ApiSettings

    async def run_without_http(self, runs: int, concurrency: int, max_seconds: float | None) -> Block:
        """What ``POST /v1/runs`` with ``wait`` does, called in-process: ``submit`` + wait, no HTTP."""

        async def one() -> float:
            started = time.perf_counter()
            run = await self.engine.submit(WORKFLOW, {})
            run = await wait_until_settled(self.engine, run, 20.0, self.settings.stream_poll_seconds)
            if run.status.value != "succeeded":
                raise RunFailed(f"run {run.id} is {run.status.value} after waiting: {run.error}")
            return (time.perf_counter() - started) * 1000

        return await callers(concurrency, runs, one, max_seconds)


@asynccontextmanager
async def serving(database_url: str) -> AsyncIterator[Service]:
    """``trellis serve --concurrency 16`` on ``database_url``, in this event loop, on a free port.

    Unlike ``serve``'s default (``--log-level info``), requests are not logged: the benchmark
    would otherwise print an access-log line per request.
    """
    async with Engine.open(Settings(database_url=database_url), registry=tools()) as engine:
        await engine.register(linear_definition(NODES, name=WORKFLOW))
        settings = ApiSettings()
        app = create_app(engine, settings=settings)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        server = _Server(config)
        worker = Worker(engine, concurrency=WORKER_SLOTS)
        freeze_startup_heap()  # as `trellis serve` does once started
        worker_task = asyncio.create_task(worker.run(grace_seconds=5))
        server_task = asyncio.create_task(server.serve())
        try:
            while not server.started:
                if server_task.done():
                    server_task.result()
                    raise RuntimeError("uvicorn stopped before it started serving")
                await asyncio.sleep(0.01)
            port = int(server.servers[0].sockets[0].getsockname()[1])
            yield Service(engine, f"http://127.0.0.1:{port}", worker, settings)
        finally:  # what `serve` does on SIGTERM
            server.should_exit = True
            app.state.trellis.close_streams()
            worker.request_stop()
            await asyncio.gather(server_task, return_exceptions=True)
            await asyncio.wait_for(worker_task, 30)


# -- the floor ----------------------------------------------------------------------------------


@dataclass
class Floor:
    """Raw LangGraph on one checkpointer: the hand-built chain, a fresh thread per run."""

    graph: Any
    """The compiled 3-node ``StateGraph``."""
    prefix: str
    _ids: Iterator[int] = field(default_factory=itertools.count)

    def _thread(self) -> RunnableConfig:
        return thread(f"{self.prefix}-{next(self._ids)}")

    async def block(self, runs: int, concurrency: int, max_seconds: float | None = None) -> Block:
        async def one() -> float:
            started = time.perf_counter()
            await self.graph.ainvoke(LinearState(started=True), self._thread(), durability="sync")
            return (time.perf_counter() - started) * 1000

        return await callers(concurrency, runs, one, max_seconds)

    async def first_chunks(self, runs: int, max_seconds: float | None = None) -> list[float]:
        """ms from calling ``astream`` to its first chunk (the first task starting), per run."""
        firsts: list[float] = []
        deadline = time.perf_counter() + max_seconds if max_seconds is not None else float("inf")
        while len(firsts) < runs and time.perf_counter() < deadline:
            started, first = time.perf_counter(), 0.0
            async for _ in self.graph.astream(
                LinearState(started=True), self._thread(), stream_mode="tasks", durability="sync"
            ):
                first = first or time.perf_counter()
            firsts.append((first - started) * 1000)
        return firsts


# -- PostgreSQL ---------------------------------------------------------------------------------


def _libpq(url: str) -> str:
    return normalize_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def pg_server_url() -> tuple[str | None, str]:
    """``(url, masked url)`` of the PostgreSQL server to use, or ``(None, why not)``."""
    url = os.environ.get(PG_URL_ENV) or os.environ.get("TRELLIS_TEST_PG_URL") or DEFAULT_PG_URL
    try:
        with psycopg.connect(_libpq(url), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return (
            None,
            f"PostgreSQL not reachable at {mask_url(url)} ({reason}); set {PG_URL_ENV} to use another",
        )
    return url, mask_url(url)


@contextlib.contextmanager
def pg_schemas(server_url: str, count: int) -> Iterator[list[str]]:
    """``count`` URLs, each on a freshly created schema (``search_path``), dropped afterwards."""
    names = [f"trellis_bench_{uuid.uuid4().hex[:10]}" for _ in range(count)]
    with psycopg.connect(_libpq(server_url), autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield [
            make_url(server_url)
            .update_query_dict({"options": f"-csearch_path={name}"})
            .render_as_string(hide_password=False)
            for name in names
        ]
    finally:
        with psycopg.connect(_libpq(server_url), autocommit=True) as conn:
            for name in names:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


@asynccontextmanager
async def postgres_saver(url: str) -> AsyncIterator[AsyncPostgresSaver]:
    """``AsyncPostgresSaver`` over a pool of 4..16 connections (the research's floor set-up)."""
    pool: AsyncConnectionPool[AsyncConnection[DictRow]] = AsyncConnectionPool(
        _libpq(url),
        min_size=4,
        max_size=16,
        open=False,
        connection_class=AsyncConnection[DictRow],
        kwargs={"autocommit": True, "row_factory": dict_row, "prepare_threshold": 0},
    )
    await pool.open(wait=True)
    try:
        saver = AsyncPostgresSaver(pool)
        await saver.setup()
        yield saver
    finally:
        await pool.close()


class _Counting(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages[record.getMessage()] += 1


@contextlib.contextmanager
def counted_warnings(logger_name: str) -> Iterator[Counter[str]]:
    """Count (instead of print) the warnings of one logger while the block runs."""
    logger = logging.getLogger(logger_name)
    handler, propagate = _Counting(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate

"""Helpers for tests that run workflows through a real engine on a real SQLite file."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from trellis.config import AgentEndpoint, ModelAlias, Settings
from trellis.registry import Registry
from trellis.runtime import Engine
from trellis.store import EventRecord, RunRecord


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'trellis.db'}"


@asynccontextmanager
async def open_engine(
    where: Path | str,
    registry: Registry | None = None,
    *,
    models: dict[str, ModelAlias] | None = None,
    agents: dict[str, AgentEndpoint] | None = None,
    database_url: str | None = None,
) -> AsyncIterator[Engine]:
    """An engine on ``where``: a database URL, or a directory to put a SQLite file in."""
    url = database_url or (where if isinstance(where, str) else sqlite_url(where))
    settings = Settings(database_url=url, models=models or {}, agents=agents or {})
    async with Engine.open(settings, registry=registry or Registry()) as engine:
        yield engine


def yaml(text: str) -> str:
    return textwrap.dedent(text).strip() + "\n"


async def run_definition(engine: Engine, definition: str, run_input: Any = None, **options: Any) -> RunRecord:
    """Register, submit and execute (following timers) in one go."""
    record = await engine.register(yaml(definition))
    run = await engine.submit(f"{record.name}@{record.version}", run_input, options=options or None)
    return await engine.execute(run.id, follow_timers=True)


async def event_types(
    engine: Engine, run_id: str, where: Callable[[EventRecord], bool] | None = None
) -> list[str]:
    events = await engine.store.list_events(run_id)
    return [f"{e.type}:{e.node}" if e.node else e.type for e in events if where is None or where(e)]

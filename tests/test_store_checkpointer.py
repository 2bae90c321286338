"""trellis.store.checkpointer: LangGraph's checkpointer for the Trellis database, on both backends."""

from __future__ import annotations

import asyncio
import operator
import sqlite3
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from sqlalchemy import create_engine, inspect

from trellis.store import checkpoint_path, open_checkpointer, open_store
from trellis.store._sqlite_saver import LoopSqliteSaver


class Counter(TypedDict):
    n: int
    path: Annotated[list[str], operator.add]


def build_graph(saver: BaseCheckpointSaver[Any]) -> Any:
    async def one(state: Counter) -> dict[str, Any]:
        return {"n": state["n"] + 1, "path": ["one"]}

    async def two(state: Counter) -> dict[str, Any]:
        return {"n": state["n"] * 10, "path": ["two"]}

    builder = StateGraph(Counter)
    builder.add_node("one", one)
    builder.add_node("two", two)
    builder.add_edge(START, "one")
    builder.add_edge("one", "two")
    builder.add_edge("two", END)
    return builder.compile(checkpointer=saver)


CONFIG: RunnableConfig = {"configurable": {"thread_id": "run-1"}}


class TestCheckpointer:
    async def test_a_graph_runs_durably_and_its_state_survives_reopening(self, database_url: str) -> None:
        async with open_checkpointer(database_url) as saver:
            graph = build_graph(saver)
            result = await graph.ainvoke({"n": 1, "path": []}, CONFIG, durability="sync")
            assert result == {"n": 20, "path": ["one", "two"]}
            history = [snapshot async for snapshot in graph.aget_state_history(CONFIG)]
            assert len(history) == 4  # input, one, two, and the initial empty checkpoint

        async with open_checkpointer(database_url) as reopened:
            state = await build_graph(reopened).aget_state(CONFIG)
            assert state.values == {"n": 20, "path": ["one", "two"]}

    async def test_opening_twice_is_idempotent(self, database_url: str) -> None:
        """setup() runs on every open; the second time it has nothing to do."""
        for _ in range(2):
            async with open_checkpointer(database_url) as saver:
                assert await saver.aget_tuple(CONFIG) is None

    async def test_sqlite_checkpoints_live_in_their_own_file(self, tmp_path: Path) -> None:
        url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'trellis.db'}"
        assert checkpoint_path(url) == tmp_path / "data" / "trellis.checkpoints.db"
        async with await open_store(url), open_checkpointer(url) as saver:
            await build_graph(saver).ainvoke({"n": 0, "path": []}, CONFIG, durability="sync")
        engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'trellis.db'}")
        try:
            with engine.connect() as conn:
                assert "checkpoints" not in inspect(conn).get_table_names()
        finally:
            engine.dispose()
        assert (tmp_path / "data" / "trellis.checkpoints.db").is_file()

    async def test_an_in_memory_database_gets_in_memory_checkpoints(self) -> None:
        assert checkpoint_path("sqlite://") is None
        async with open_checkpointer("sqlite://") as saver:
            result = await build_graph(saver).ainvoke({"n": 2, "path": []}, CONFIG, durability="sync")
            assert result["n"] == 30


class TestLoopSaverWhenTheFileIsLocked:
    """The SQLite saver runs on the event loop; a locked file sends a call to its thread."""

    async def test_a_write_waits_on_its_thread_while_the_loop_goes_on(self, tmp_path: Path) -> None:
        url = f"sqlite+aiosqlite:///{tmp_path / 'trellis.db'}"
        async with open_checkpointer(url) as saver:
            assert isinstance(saver, LoopSqliteSaver)
            graph = build_graph(saver)
            other = sqlite3.connect(str(checkpoint_path(url)), isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")  # another process holding the write lock
                run = asyncio.create_task(graph.ainvoke({"n": 1, "path": []}, CONFIG, durability="sync"))
                ticks = 0
                while ticks < 20:  # the loop keeps turning while the write waits for the lock
                    await asyncio.sleep(0.01)
                    ticks += 1
                assert not run.done()
                other.execute("COMMIT")
                assert await asyncio.wait_for(run, 10) == {"n": 20, "path": ["one", "two"]}
            finally:
                other.close()
            assert saver.fallbacks >= 1
            assert (await graph.aget_state(CONFIG)).values["path"] == ["one", "two"]

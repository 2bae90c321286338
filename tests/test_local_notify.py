"""Notifications between processes sharing one SQLite file (trellis.store._local_notify)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine_support import yaml
from trellis.config import Settings
from trellis.registry import Registry
from trellis.runtime import Engine
from trellis.store._local_notify import SUPPORTED, LocalNotifier, notify_dir
from trellis.types import RunStatus

pytestmark = pytest.mark.skipif(not SUPPORTED, reason="local notifications need Linux's abstract sockets")

HELD = yaml(
    """
    name: held
    start: a
    nodes:
      a: {type: tool, tool: hold}
    """
)


async def _first(listening: AsyncIterator[tuple[str, str]]) -> None:
    assert await anext(listening) == ("", "")


class TestLocalNotifier:
    async def test_a_datagram_reaches_every_other_listener_on_the_file_and_not_the_sender(
        self, tmp_path: Path
    ) -> None:
        database = tmp_path / "trellis.db"
        sender, receiver, elsewhere = (
            LocalNotifier(database),
            LocalNotifier(database),
            LocalNotifier(tmp_path / "other.db"),
        )
        own = sender.listen(["c"])
        theirs = receiver.listen(["c"])
        unrelated = elsewhere.listen(["c"])
        try:
            for listening in (own, theirs, unrelated):
                await _first(listening)
            sender.send("c", ["one", "two"])
            sender.send("ignored-channel", ["x"])
            assert [await asyncio.wait_for(anext(theirs), 5) for _ in range(2)] == [
                ("c", "one"),
                ("c", "two"),
            ]
            for quiet in (own, unrelated):
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(anext(quiet), 0.2)
        finally:
            for listening in (own, theirs, unrelated):
                await listening.aclose()
            for notifier in (sender, receiver, elsewhere):
                notifier.close()
        assert list(notify_dir(database.resolve()).iterdir()) == []  # registrations removed on close

    async def test_the_registration_of_a_dead_process_is_removed_by_the_next_send(
        self, tmp_path: Path
    ) -> None:
        database = tmp_path / "trellis.db"
        directory = notify_dir(database.resolve())
        directory.mkdir()
        (directory / "99999999-deadbeef0000").touch()  # registered, but no socket behind it
        notifier = LocalNotifier(database)
        try:
            notifier.send("c", ["anyone?"])
        finally:
            notifier.close()
        assert list(directory.iterdir()) == []


HOLDING = asyncio.Event()
"""Set while the ``hold`` tool runs (one test at a time uses it)."""


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    registry = Registry()
    release = asyncio.Event()
    HOLDING.clear()

    @registry.tool("hold")
    async def hold() -> None:
        HOLDING.set()
        await release.wait()

    url = f"sqlite+aiosqlite:///{tmp_path / 'trellis.db'}"
    async with Engine.open(Settings(database_url=url), registry=registry) as opened:
        yield opened
        release.set()


def _in_another_process(database_url: str, body: str) -> None:
    script = "import asyncio\nfrom trellis.store import open_store\n" + textwrap.dedent(body)
    done = subprocess.run(
        [sys.executable, "-c", script, database_url], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


class TestBetweenProcesses:
    async def test_a_command_from_another_process_reaches_the_run_without_a_sweep(
        self, engine: Engine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        swept: list[set[str]] = []
        sweep = engine.store.runs_with_pending_commands

        async def counted(run_ids: Any) -> set[str]:
            swept.append(found := await sweep(run_ids))
            return found

        monkeypatch.setattr(engine.store, "runs_with_pending_commands", counted)
        await engine.register(HELD)
        run = await engine.submit("held")
        execution = asyncio.create_task(engine.execute(run.id))
        await asyncio.wait_for(HOLDING.wait(), 10)
        await asyncio.to_thread(
            _in_another_process,
            engine.store.url,
            """
            import sys
            async def main():
                store = await open_store(sys.argv[1])
                await store.post_command(sys.argv[2], "cancel", actor="elsewhere")
                await store.notify("trellis_commands", sys.argv[2])
                await store.close()
            """.replace("sys.argv[2]", repr(run.id))
            + "asyncio.run(main())\n",
        )
        finished = await asyncio.wait_for(execution, 10)
        assert finished.status == RunStatus.CANCELLED
        assert all(run.id not in found for found in swept)  # the notification did it

    async def test_events_written_by_another_process_reach_this_one_s_subscribers(
        self, engine: Engine
    ) -> None:
        await engine.register(HELD)
        run = await engine.submit("held")
        async with engine.bus.subscribe(run.id) as queue:
            await asyncio.to_thread(
                _in_another_process,
                engine.store.url,
                f"""
                import sys
                from trellis.store import NewEvent
                async def main():
                    store = await open_store(sys.argv[1])
                    await store.record({run.id!r}, events=[NewEvent("node.progress", data={{"n": 1}})])
                    await store.close()
                asyncio.run(main())
                """,
            )
            event = await asyncio.wait_for(queue.get(), 5)
        assert event is not None
        assert (event.type, event.data) == ("node.progress", {"n": 1})

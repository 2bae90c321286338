"""State versions: inspect, diff, retry from the failed node, roll back to an earlier version."""

from __future__ import annotations

import pytest

from engine_support import open_engine, run_definition, yaml
from trellis.errors import Conflict, NotFound
from trellis.registry import Registry
from trellis.runtime._diff import diff
from trellis.types import RunStatus

CHAIN = """
    name: chain
    state: {log: {reducer: append}, n: {type: integer}}
    start: a
    nodes:
      a: {type: tool, tool: step, args: {name: '"a"'}, output: {log: '[result]', n: 1}, next: b}
      b: {type: tool, tool: step, args: {name: '"b"'}, output: {log: '[result]', n: 2}, next: c}
      c: {type: tool, tool: step, args: {name: '"c"'}, output: {log: '[result]', n: 3}}
    """


@pytest.fixture
def tools() -> Registry:
    registry = Registry()
    registry.calls = []  # type: ignore[attr-defined]
    registry.broken = set()  # type: ignore[attr-defined]

    @registry.tool("step")
    def step(name: str) -> str:
        registry.calls.append(name)  # type: ignore[attr-defined]
        if name in registry.broken:  # type: ignore[attr-defined]
            raise RuntimeError(f"{name} is broken")
        return name

    return registry


class TestDiff:
    def test_appended_lists_and_changed_fields_are_reported_with_old_values(self) -> None:
        assert diff({"log": ["a"], "n": 1, "gone": True}, {"log": ["a", "b"], "n": 2, "new": "x"}) == [
            {"op": "remove", "path": "/gone", "old": True},
            {"op": "add", "path": "/log/1", "new": "b"},
            {"op": "replace", "path": "/n", "old": 1, "new": 2},
            {"op": "add", "path": "/new", "new": "x"},
        ]


class TestHistory:
    async def test_every_step_is_a_version_and_each_diffs_against_its_parent(
        self, database_url: str, tools: Registry
    ) -> None:
        async with open_engine(database_url, tools) as engine:
            run = await run_definition(engine, CHAIN)
            versions = await engine.history(run.id)
            assert [v["next"] for v in versions[:4]] == [[], ["c"], ["b"], ["a"]]
            newest = versions[0]
            changes = await engine.diff(run.id, newest["checkpoint_id"])
            assert changes["against"] == versions[1]["checkpoint_id"]
            assert changes["changes"] == [
                {"op": "add", "path": "/log/2", "new": "c"},
                {"op": "replace", "path": "/n", "old": 2, "new": 3},
            ]
            oldest_vs_newest = await engine.diff(
                run.id, newest["checkpoint_id"], against=versions[3]["checkpoint_id"]
            )
            assert {c["path"] for c in oldest_vs_newest["changes"]} == {"/log", "/n"}
            with pytest.raises(NotFound, match="no state version"):
                await engine.diff(run.id, "nope")

    async def test_retry_continues_from_the_failed_node(self, database_url: str, tools: Registry) -> None:
        tools.broken.add("b")  # type: ignore[attr-defined]
        async with open_engine(database_url, tools) as engine:
            failed = await run_definition(engine, CHAIN)
            assert failed.status == RunStatus.FAILED
            tools.broken.clear()  # type: ignore[attr-defined]
            queued = await engine.retry(failed.id, actor="ops")
            assert (queued.status, queued.error) == (RunStatus.QUEUED, None)
            done = await engine.execute(failed.id)
            assert done.status == RunStatus.SUCCEEDED, done.error
            assert done.output["log"] == ["a", "b", "c"]
            assert tools.calls == ["a", "b", "b", "c"]  # type: ignore[attr-defined]
            with pytest.raises(Conflict, match="only a failed run"):
                await engine.retry(failed.id)

    async def test_rollback_forks_from_an_earlier_version_and_keeps_history(
        self, database_url: str, tools: Registry
    ) -> None:
        async with open_engine(database_url, tools) as engine:
            run = await run_definition(engine, CHAIN)
            before = await engine.history(run.id)
            target = next(v for v in before if v["next"] == ["b"])
            queued = await engine.rollback(run.id, target["checkpoint_id"], actor="ops")
            assert queued.status == RunStatus.QUEUED
            done = await engine.execute(run.id)
            assert done.status == RunStatus.SUCCEEDED
            assert done.output["log"] == ["a", "b", "c"]
            assert tools.calls == ["a", "b", "c", "b", "c"]  # type: ignore[attr-defined]
            after = await engine.history(run.id)
            assert len(after) > len(before)
            assert {v["checkpoint_id"] for v in before} <= {v["checkpoint_id"] for v in after}
            events = await engine.store.list_events(run.id)
            rollback = next(e for e in events if e.type == "run.queued" and (e.data or {}).get("reason"))
            assert rollback.data is not None
            assert rollback.data["checkpoint_id"] == target["checkpoint_id"]

    async def test_rollback_to_an_unknown_version_is_not_found(
        self, database_url: str, tools: Registry
    ) -> None:
        async with open_engine(database_url, tools) as engine:
            run = await run_definition(engine, CHAIN)
            with pytest.raises(NotFound):
                await engine.rollback(run.id, "1ef00000-0000-6000-8000-000000000000")


async def test_registering_identical_content_is_a_no_op(database_url: str, tools: Registry) -> None:
    async with open_engine(database_url, tools) as engine:
        first = await engine.register(yaml(CHAIN))
        again = await engine.register(yaml(CHAIN))
        changed = await engine.register(yaml(CHAIN.replace("n: 3", "n: 4")))
        assert (first.version, again.version, changed.version) == (1, 1, 2)
        assert first.hash == again.hash != changed.hash

"""The run queue and workers: claims, priorities, limits, leases, fencing, draining (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from engine_support import yaml
from trellis.config import Settings
from trellis.errors import Conflict
from trellis.queue import Worker
from trellis.registry import Registry
from trellis.runtime import Engine
from trellis.runtime._execute import LeaseLost
from trellis.types import NodeStatus, RunStatus

SLOW = yaml(
    """
    name: slow
    state: {log: {reducer: append}}
    start: a
    nodes:
      a: {type: tool, tool: step, args: {name: '"a"', seconds: 0.3}, output: {log: '[result]'}, next: b}
      b: {type: tool, tool: step, args: {name: '"b"', seconds: 0.3}, output: {log: '[result]'}, next: c}
      c: {type: tool, tool: step, args: {name: '"c"', seconds: 0.3}, output: {log: '[result]'}}
    """
)

QUICK = yaml(
    """
    name: quick
    state: {tag: {type: string}, out: {}}
    start: one
    nodes:
      one: {type: tool, tool: note, args: {tag: state.tag}, output: {out: result}}
    """
)


class Tracker:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.active = 0
        self.peak = 0


@pytest.fixture
def tracker() -> Tracker:
    return Tracker()


@pytest.fixture
def tools(tracker: Tracker) -> Registry:
    registry = Registry()

    @registry.tool("step")
    async def step(name: str, seconds: float) -> str:
        tracker.calls.append(name)
        tracker.active += 1
        tracker.peak = max(tracker.peak, tracker.active)
        try:
            await asyncio.sleep(seconds)
        finally:
            tracker.active -= 1
        return name

    @registry.tool("note")
    async def note(tag: str) -> str:
        tracker.calls.append(tag)
        return tag

    return registry


@asynccontextmanager
async def engine_at(url: str, tools: Registry, lease_seconds: float = 30.0) -> AsyncIterator[Engine]:
    async with Engine.open(Settings(database_url=url), registry=tools, lease_seconds=lease_seconds) as engine:
        yield engine


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    task = asyncio.create_task(worker.run(grace_seconds=5))
    try:
        yield worker
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 15)


async def until(predicate: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def finished(engine: Engine, run_id: str) -> bool:
    return (await engine.get_run(run_id)).status.terminal


class TestClaiming:
    async def test_a_worker_runs_queued_runs_highest_priority_first_then_oldest(
        self, database_url: str, tools: Registry, tracker: Tracker
    ) -> None:
        async with engine_at(database_url, tools) as engine:
            await engine.register(QUICK)
            order = [("low-1", 0), ("high", 5), ("low-2", 0), ("mid", 1)]
            runs = [await engine.submit("quick", {"tag": tag}, priority=p) for tag, p in order]
            async with running(Worker(engine, concurrency=1)):
                for run in runs:
                    await until(lambda run=run: finished(engine, run.id))
            assert tracker.calls == ["high", "mid", "low-1", "low-2"]

    async def test_submitting_wakes_an_idle_worker_without_waiting_for_the_poll(
        self, database_url: str, tools: Registry
    ) -> None:
        async with engine_at(database_url, tools) as engine:
            await engine.register(QUICK)
            async with running(Worker(engine, concurrency=2, poll_seconds=30)):
                await asyncio.sleep(0.2)  # the worker is idle, waiting
                started = time.monotonic()
                run = await engine.submit("quick", {"tag": "x"})
                await until(lambda: finished(engine, run.id), within=5)
                assert time.monotonic() - started < 2.0

    async def test_a_workflow_concurrency_limit_holds_across_worker_slots(
        self, database_url: str, tools: Registry, tracker: Tracker
    ) -> None:
        limited = SLOW.replace("name: slow", "name: limited\nconcurrency: 1").replace("0.3", "0.05")
        async with engine_at(database_url, tools) as engine:
            await engine.register(limited)
            runs = [await engine.submit("limited") for _ in range(3)]
            async with running(Worker(engine, concurrency=4)):
                for run in runs:
                    await until(lambda run=run: finished(engine, run.id))
            assert tracker.peak == 1
            statuses = [(await engine.get_run(r.id)).status for r in runs]
            assert statuses == [RunStatus.SUCCEEDED] * 3

    async def test_a_claim_increments_the_fencing_token_and_stale_writes_are_refused(
        self, database_url: str, tools: Registry
    ) -> None:
        async with engine_at(database_url, tools) as engine:
            await engine.register(QUICK)
            run = await engine.submit("quick", {"tag": "x"})
            (first,) = await engine.store.claim_runs(owner="a", limit=5, lease_seconds=0.05)
            assert (first.id, first.lease_owner, first.lease_token) == (run.id, "a", run.lease_token + 1)
            assert await engine.store.claim_runs(owner="b", limit=5, lease_seconds=30) == []
            await asyncio.sleep(0.1)  # the lease expires: the run is claimable again
            (second,) = await engine.store.claim_runs(owner="b", limit=5, lease_seconds=30)
            assert second.lease_token == first.lease_token + 1
            with pytest.raises(Conflict, match="another worker claimed it"):
                await engine.store.record(run.id, run={"status": "succeeded"}, lease_token=first.lease_token)
            assert not await engine.store.heartbeat_lease(run.id, first.lease_token, lease_seconds=30)
            assert await engine.store.heartbeat_lease(run.id, second.lease_token, lease_seconds=30)


class TestLeases:
    async def test_an_expired_lease_is_reclaimed_and_the_run_resumes_from_its_checkpoint(
        self, database_url: str, tools: Registry, tracker: Tracker
    ) -> None:
        async with engine_at(database_url, tools, lease_seconds=0.5) as engine:
            await engine.register(SLOW)
            run = await engine.submit("slow")
            execution = asyncio.create_task(engine.execute(run.id))
            await until(lambda: _node_done(engine, run.id, "a"))
            execution.cancel()  # the "process" dies mid-run: its lease is left to expire
            await asyncio.gather(execution, return_exceptions=True)
            assert (await engine.get_run(run.id)).status == RunStatus.RUNNING
            async with running(Worker(engine, concurrency=1)):
                await until(lambda: finished(engine, run.id))
            done = await engine.get_run(run.id)
            assert done.status == RunStatus.SUCCEEDED
            assert done.output == {"log": ["a", "b", "c"]}
            assert tracker.calls.count("a") == 1

    async def test_an_execution_whose_lease_was_taken_over_stops_without_writing(
        self, database_url: str, tools: Registry, tracker: Tracker, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A worker that cannot reach the database to heartbeat loses its lease, and must not
        advance the run once another worker has claimed it."""
        stalled = SLOW.replace(
            "seconds: 0.3}, output: {log: '[result]'}, next: c",
            "seconds: 1.2}, output: {log: '[result]'}, next: c",
        )
        async with engine_at(database_url, tools, lease_seconds=0.6) as engine:
            await engine.register(stalled)
            run = await engine.submit("slow")

            async def stuck(*args: Any, **kwargs: Any) -> bool:
                await asyncio.sleep(30)
                return True

            monkeypatch.setattr(engine.store, "heartbeat_lease", stuck)
            execution = asyncio.create_task(engine.execute(run.id))
            await until(lambda: _node_running(engine, run.id, "b"))
            await asyncio.sleep(0.5)  # past the lease's expiry, b still running
            (taken,) = await engine.store.claim_runs(owner="other", limit=1, lease_seconds=30)
            with pytest.raises(LeaseLost):
                await asyncio.wait_for(execution, 10)
            after = await engine.get_run(run.id)
            assert (after.lease_owner, after.lease_token, after.status) == (
                "other",
                taken.lease_token,
                RunStatus.RUNNING,
            )
            assert tracker.calls == ["a", "b"]


class TestDraining:
    async def test_a_stopping_worker_hands_its_runs_back_and_another_finishes_them(
        self, database_url: str, tools: Registry, tracker: Tracker
    ) -> None:
        async with engine_at(database_url, tools) as engine:
            await engine.register(SLOW)
            run = await engine.submit("slow")
            first = Worker(engine, concurrency=1)
            task = asyncio.create_task(first.run(grace_seconds=5))
            await until(lambda: _node_running(engine, run.id, "a"))
            await first.stop(grace_seconds=5)
            await asyncio.wait_for(task, 10)
            handed_back = await engine.get_run(run.id)
            assert handed_back.status == RunStatus.QUEUED
            assert handed_back.lease_owner is None
            assert tracker.calls == ["a"]
            async with running(Worker(engine, concurrency=1)):
                await until(lambda: finished(engine, run.id))
            assert (await engine.get_run(run.id)).output == {"log": ["a", "b", "c"]}
            assert tracker.calls == ["a", "b", "c"]


HELD = SLOW.replace("name: slow", "name: held").replace("seconds: 0.3}", "seconds: 30}")


class CountedCalls:
    """Counts the store's command lookups; remembers the runs each sweep reported."""

    def __init__(self, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
        self.per_run: list[str] = []
        self.sweeps: list[set[str]] = []
        store = engine.store
        pending, sweep = store.pending_commands, store.runs_with_pending_commands

        async def counted_pending(run_id: str) -> Any:
            self.per_run.append(run_id)
            return await pending(run_id)

        async def counted_sweep(run_ids: Any) -> set[str]:
            found = await sweep(run_ids)
            self.sweeps.append(found)
            return found

        monkeypatch.setattr(store, "pending_commands", counted_pending)
        monkeypatch.setattr(store, "runs_with_pending_commands", counted_sweep)


class TestCommands:
    async def test_one_sweep_per_process_finds_a_command_no_notification_announced(
        self, database_url: str, tools: Registry, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Runs held by a worker cost no query each while nobody commands them; a command
        written by a process that could not signal (no notification) is found by the sweep."""
        async with engine_at(database_url, tools) as engine:
            calls = CountedCalls(engine, monkeypatch)
            await engine.register(HELD)
            runs = [await engine.submit("held") for _ in range(3)]
            async with running(Worker(engine, concurrency=3)):
                for run in runs:
                    await until(lambda run=run: _node_running(engine, run.id, "a"))
                await asyncio.sleep(0.5)
                assert calls.per_run == []  # nobody polls a run of its own
                assert calls.sweeps == [] or max(len(s) for s in calls.sweeps) == 0
                target = runs[1]
                await engine.store.post_command(target.id, "cancel", actor="elsewhere")
                await until(lambda: finished(engine, target.id), within=5)
                cancelled = await engine.get_run(target.id)
                assert cancelled.status == RunStatus.CANCELLED
                assert calls.per_run == [target.id]
                assert {target.id} in calls.sweeps
                others = [await engine.get_run(run.id) for run in (runs[0], runs[2])]
                assert [run.status for run in others] == [RunStatus.RUNNING] * 2
                for run in (runs[0], runs[2]):
                    await engine.cancel(run.id, actor="test")
            assert len(calls.sweeps) <= 30  # one per sweep interval, not one per run and interval

    async def test_a_command_announced_before_its_run_registers_reaches_it_at_registration(
        self, database_url: str, tools: Registry, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A notification can arrive between a worker's claim and the moment the run is
        registered with it; the command then reaches the run as it registers, not at a sweep."""
        async with engine_at(database_url, tools) as engine:
            calls = CountedCalls(engine, monkeypatch)
            await engine.register(HELD)
            run = await engine.submit("held")
            await engine.store.post_command(run.id, "cancel", actor="early")
            engine.executor.notice_command(run.id)  # what the notification listener does
            started = time.monotonic()
            async with running(Worker(engine, concurrency=1)):
                await until(lambda: finished(engine, run.id), within=5)
            assert (await engine.get_run(run.id)).status == RunStatus.CANCELLED
            assert calls.per_run == [run.id]
            if engine.store.dialect == "postgresql":  # sweeps are 2 s apart there: not one of them
                assert time.monotonic() - started < 1.5
                assert all(run.id not in found for found in calls.sweeps)


class TestQueueStats:
    async def test_stats_report_depth_workers_and_leases(self, database_url: str, tools: Registry) -> None:
        async with engine_at(database_url, tools) as engine:
            await engine.register(SLOW)
            queued = [await engine.submit("slow") for _ in range(2)]
            stats = await engine.queue_stats()
            assert stats["depth"]["queued"] == {"total": 2, "by_workflow": {"slow": 2}}
            assert stats["oldest_queued_age_seconds"] >= 0
            async with running(Worker(engine, concurrency=1)):
                await until(lambda: _node_running(engine, queued[0].id, "a"))
                live = await engine.queue_stats()
                (worker,) = live["workers"]
                assert (worker["id"], worker["concurrency"], worker["alive"]) == (engine.owner, 1, True)
                assert [lease["run_id"] for lease in live["leases"]] == [queued[0].id]
                assert live["depth"]["running"]["total"] == 1
            assert (await engine.queue_stats())["workers"] == []


async def _node_done(engine: Engine, run_id: str, node: str) -> bool:
    state = await engine.store.get_node_state(run_id, node)
    return state is not None and state.status == NodeStatus.SUCCEEDED


async def _node_running(engine: Engine, run_id: str, node: str) -> bool:
    state = await engine.store.get_node_state(run_id, node)
    return state is not None and state.status == NodeStatus.RUNNING


def test_a_worker_needs_a_slot(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        Worker(object(), concurrency=0)  # type: ignore[arg-type]

"""trellis.store: Store.record (events + node states + run fields in one transaction) and commands.

Every test runs on SQLite and on PostgreSQL (see the `store` fixture in conftest.py).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from trellis.errors import Conflict, NotFound
from trellis.store import UNSET, NewEvent, NodeStateUpdate, RunRecord, Store
from trellis.types import NodeStatus, RunStatus


@pytest.fixture
async def run(store: Store) -> RunRecord:
    """A queued run (its ``run.queued`` event is seq 1)."""
    workflow, _ = await store.put_workflow(name="w", hash="h", kind="dsl", definition={}, source=None)
    return await store.create_run(workflow="w", version=workflow.version, hash="h", input={})


class TestRecord:
    async def test_events_get_consecutive_seq_after_the_last(self, store: Store, run: RunRecord) -> None:
        ts = datetime(2025, 1, 1, tzinfo=UTC)
        inserted = await store.record(
            run.id,
            events=[
                NewEvent("run.started"),
                NewEvent("node.started", node="a", attempt=1, data={"k": [1, 2]}, ts=ts),
            ],
        )
        assert [(e.seq, e.type, e.node, e.attempt) for e in inserted] == [
            (2, "run.started", None, None),
            (3, "node.started", "a", 1),
        ]
        assert inserted[1].ts == ts
        assert inserted[0].ts.tzinfo is UTC
        assert await store.list_events(run.id, after=1) == inserted
        assert inserted[1].to_dict() == {
            "run_id": run.id,
            "seq": 3,
            "ts": "2025-01-01T00:00:00.000000Z",
            "type": "node.started",
            "node": "a",
            "attempt": 1,
            "data": {"k": [1, 2]},
        }
        stored = await store.get_run(run.id)
        assert stored is not None
        assert stored.last_seq == 3

    async def test_run_fields_change_in_the_same_transaction(self, store: Store, run: RunRecord) -> None:
        started = datetime.now(UTC)
        await store.record(
            run.id, events=[NewEvent("run.started")], run={"status": "running", "started_at": started}
        )
        stored = await store.get_run(run.id)
        assert stored is not None
        assert (stored.status, stored.started_at, stored.last_seq) == (RunStatus.RUNNING, started, 2)

    async def test_nothing_is_written_when_any_part_fails(self, store: Store, run: RunRecord) -> None:
        with pytest.raises(ValueError, match="bogus"):
            await store.record(
                run.id,
                events=[NewEvent("node.started", node="a")],
                node_states=[NodeStateUpdate("a", status="bogus")],
                run={"status": "running"},
            )
        assert [e.seq for e in await store.list_events(run.id)] == [1]
        stored = await store.get_run(run.id)
        assert stored is not None
        assert (stored.status, stored.last_seq) == (RunStatus.QUEUED, 1)
        assert await store.list_node_states(run.id) == []

    async def test_concurrent_writers_get_gapless_monotonic_seq(self, store: Store, run: RunRecord) -> None:
        """20 tasks append 3 events each: seq is 2..61 without gaps, each batch contiguous."""

        async def writer(i: int) -> list[int]:
            inserted = await store.record(
                run.id,
                events=[NewEvent("node.progress", node=f"n{i}", data={"i": i, "j": j}) for j in range(3)],
                node_states=[NodeStateUpdate(f"n{i}", status="running")],
            )
            return [e.seq for e in inserted]

        batches = await asyncio.gather(*(writer(i) for i in range(20)))
        for batch in batches:
            assert batch == list(range(batch[0], batch[0] + 3))
        assert sorted(seq for batch in batches for seq in batch) == list(range(2, 62))
        stored = await store.list_events(run.id)
        assert [e.seq for e in stored] == list(range(1, 62))
        for event in stored[1:]:
            assert event.data is not None
            assert event.node == f"n{event.data['i']}"
        assert len(await store.list_node_states(run.id)) == 20

    @pytest.mark.parametrize("count", [1, 32, 33, 80], ids=lambda n: f"{n}-events")
    async def test_batches_of_any_size_keep_their_order_and_node_states(
        self, store: Store, run: RunRecord, count: int
    ) -> None:
        """On PostgreSQL a batch of up to 32 events is one statement and a larger one a
        transaction of several: both number, store and notify the same way."""
        inserted = await store.record(
            run.id,
            events=[NewEvent("node.progress", node="a", data={"j": j}) for j in range(count)],
            node_states=[NodeStateUpdate("a", status="running", attempt=1), NodeStateUpdate("b")],
            run={"status": "running"},
        )
        assert [e.seq for e in inserted] == list(range(2, count + 2))
        stored = await store.list_events(run.id)
        assert [(e.seq, (e.data or {}).get("j")) for e in stored[1:]] == [(j + 2, j) for j in range(count)]
        states = {s.node: (s.status, s.attempt) for s in await store.list_node_states(run.id)}
        assert states == {"a": (NodeStatus.RUNNING, 1), "b": (NodeStatus.PENDING, 0)}
        again = await store.record(run.id, node_states=[NodeStateUpdate("b", status="succeeded")])
        assert again == []
        state = await store.get_node_state(run.id, "b")
        assert state is not None
        assert (state.status, state.attempt) == (NodeStatus.SUCCEEDED, 0)
        stored_run = await store.get_run(run.id)
        assert stored_run is not None
        assert (stored_run.status, stored_run.last_seq) == (RunStatus.RUNNING, count + 1)

    async def test_an_unknown_run_is_not_found(self, store: Store) -> None:
        with pytest.raises(NotFound, match="nope"):
            await store.record("nope", events=[NewEvent("run.started")])
        with pytest.raises(NotFound, match="nope"):
            await store.record("nope", run={"status": "running"})

    async def test_a_stale_lease_token_writes_nothing(self, store: Store, run: RunRecord) -> None:
        """Fencing: a worker whose lease was taken over cannot write to the run any more."""
        await store.update_run(run.id, lease_owner="w2", lease_token=3)
        with pytest.raises(Conflict) as raised:
            await store.record(
                run.id,
                events=[NewEvent("node.succeeded", node="a")],
                node_states=[NodeStateUpdate("a", status="succeeded")],
                lease_token=2,
            )
        assert raised.value.details["current_lease_token"] == 3
        assert [e.seq for e in await store.list_events(run.id)] == [1]
        assert await store.list_node_states(run.id) == []
        await store.record(run.id, node_states=[NodeStateUpdate("a", status="running")], lease_token=3)
        state = await store.get_node_state(run.id, "a")
        assert state is not None
        assert state.status is NodeStatus.RUNNING

    async def test_list_events_pages_by_seq(self, store: Store, run: RunRecord) -> None:
        await store.record(run.id, events=[NewEvent("node.progress", data={"i": i}) for i in range(10)])
        assert [e.seq for e in await store.list_events(run.id, after=3, limit=4)] == [4, 5, 6, 7]
        assert [e.seq for e in await store.list_events(run.id, after=9)] == [10, 11]
        assert await store.list_events(run.id, after=11) == []
        assert await store.list_events("unknown") == []


class TestNodeStates:
    async def test_a_new_node_starts_from_the_defaults(self, store: Store, run: RunRecord) -> None:
        await store.record(run.id, node_states=[NodeStateUpdate("a")])
        state = await store.get_node_state(run.id, "a")
        assert state is not None
        assert (state.status, state.attempt, state.started_at, state.error) == (
            NodeStatus.PENDING,
            0,
            None,
            None,
        )
        assert state.updated_at.tzinfo is UTC

    async def test_updates_change_only_the_fields_given(self, store: Store, run: RunRecord) -> None:
        t0 = datetime(2025, 1, 1, tzinfo=UTC)
        retry_at = t0 + timedelta(seconds=2)
        problem = {"type": "https://trellis.dev/problems/Timeout", "title": "Timeout"}
        await store.record(
            run.id, node_states=[NodeStateUpdate("a", status="running", attempt=1, started_at=t0)]
        )
        await store.record(
            run.id,
            node_states=[
                NodeStateUpdate("a", status=NodeStatus.RETRYING, error=problem, next_attempt_at=retry_at)
            ],
        )
        retrying = await store.get_node_state(run.id, "a")
        assert retrying is not None
        assert (retrying.status, retrying.attempt, retrying.started_at) == (NodeStatus.RETRYING, 1, t0)
        assert (retrying.error, retrying.next_attempt_at) == (problem, retry_at)

        await store.record(
            run.id,
            node_states=[
                NodeStateUpdate(
                    "a",
                    status="succeeded",
                    attempt=2,
                    error=None,
                    next_attempt_at=None,
                    finished_at=t0 + timedelta(seconds=3),
                    duration_ms=3000.5,
                    data={"tokens": 7},
                )
            ],
        )
        done = await store.get_node_state(run.id, "a")
        assert done is not None
        assert (done.status, done.attempt, done.started_at, done.error, done.next_attempt_at) == (
            NodeStatus.SUCCEEDED,
            2,
            t0,
            None,
            None,
        )
        assert (done.duration_ms, done.data) == (3000.5, {"tokens": 7})
        assert done.updated_at >= retrying.updated_at
        assert done.to_dict()["started_at"] == "2025-01-01T00:00:00.000000Z"

    async def test_unset_is_distinct_from_none(self) -> None:
        update = NodeStateUpdate("a", error=None, attempt=UNSET)
        assert update.values() == {"error": None}

    async def test_nodes_list_in_start_order_with_unstarted_last(self, store: Store, run: RunRecord) -> None:
        t0 = datetime(2025, 1, 1, tzinfo=UTC)
        await store.record(
            run.id,
            node_states=[
                NodeStateUpdate("z", started_at=t0),
                NodeStateUpdate("pending"),
                NodeStateUpdate("b", started_at=t0 + timedelta(seconds=1)),
                NodeStateUpdate("a", started_at=t0),
            ],
        )
        assert [s.node for s in await store.list_node_states(run.id)] == ["a", "z", "b", "pending"]
        assert await store.get_node_state(run.id, "missing") is None


class TestCommands:
    async def test_commands_are_pending_until_consumed(self, store: Store, run: RunRecord) -> None:
        pause = await store.post_command(run.id, "pause", actor="ada")
        approve = await store.post_command(run.id, "approve", {"comment": "ok"})
        assert (pause.kind, pause.actor, pause.payload, pause.consumed_at) == ("pause", "ada", None, None)
        assert approve.id > pause.id
        assert approve.created_at.tzinfo is UTC
        assert await store.pending_commands(run.id) == [pause, approve]

        assert await store.consume_command(pause.id)
        assert not await store.consume_command(pause.id)
        assert await store.pending_commands(run.id) == [approve]
        assert approve.to_dict()["payload"] == {"comment": "ok"}

    async def test_a_command_for_an_unknown_run_is_not_found(self, store: Store) -> None:
        with pytest.raises(NotFound, match="ghost"):
            await store.post_command("ghost", "cancel")

    async def test_concurrent_consumers_consume_once(self, store: Store, run: RunRecord) -> None:
        command = await store.post_command(run.id, "cancel")
        outcomes = await asyncio.gather(*(store.consume_command(command.id) for _ in range(5)))
        assert sorted(outcomes) == [False, False, False, False, True]

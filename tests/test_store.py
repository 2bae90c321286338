"""trellis.store: workflows, runs, the journal (events + node states), listing and commands.

Every test runs on SQLite and on PostgreSQL (see the `store` fixture in conftest.py).
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import make_url, update
from sqlalchemy.engine import Connection

from trellis.errors import Conflict, NotFound, ValidationError
from trellis.store import NewEvent, NodeStateUpdate, RunRecord, Store, WorkflowRecord, open_store
from trellis.store._pg import libpq_url
from trellis.store.schema import runs
from trellis.types import EventType, RunStatus


@pytest.fixture
async def workflow(store: Store) -> WorkflowRecord:
    """A registered DSL workflow ``hello`` version 1."""
    record, _ = await store.put_workflow(
        name="hello", hash="h1", kind="dsl", definition={"start": "a"}, source="start: a\n"
    )
    return record


async def new_run(store: Store, workflow: WorkflowRecord, **kwargs: Any) -> RunRecord:
    return await store.create_run(
        workflow=workflow.name, version=workflow.version, hash=workflow.hash, input={"n": 1}, **kwargs
    )


class TestWorkflows:
    async def test_a_new_name_starts_at_version_1(self, store: Store) -> None:
        record, created = await store.put_workflow(
            name="w", hash="a", kind="dsl", definition={"x": 1}, source="x: 1"
        )
        assert created
        assert (record.name, record.version, record.hash, record.kind) == ("w", 1, "a", "dsl")
        assert record.definition == {"x": 1}
        assert record.source == "x: 1"
        assert record.created_at.tzinfo is UTC

    async def test_registering_identical_content_is_a_noop(self, store: Store) -> None:
        first, _ = await store.put_workflow(name="w", hash="a", kind="dsl", definition={}, source=None)
        again, created = await store.put_workflow(name="w", hash="a", kind="dsl", definition={}, source=None)
        assert not created
        assert again == first
        assert [w.version for w in await store.list_workflow_versions("w")] == [1]

    async def test_changed_content_gets_the_next_version(self, store: Store) -> None:
        await store.put_workflow(name="w", hash="a", kind="dsl", definition={"v": 1}, source=None)
        second, created = await store.put_workflow(
            name="w", hash="b", kind="dsl", definition={"v": 2}, source=None
        )
        assert created
        assert second.version == 2
        back, created = await store.put_workflow(
            name="w", hash="a", kind="dsl", definition={"v": 1}, source=None
        )
        assert (back.version, created) == (1, False)

    async def test_get_workflow_latest_or_pinned(self, store: Store) -> None:
        await store.put_workflow(name="w", hash="a", kind="dsl", definition={"v": 1}, source=None)
        await store.put_workflow(name="w", hash="b", kind="dsl", definition={"v": 2}, source=None)
        latest = await store.get_workflow("w")
        assert latest is not None
        assert latest.version == 2
        pinned = await store.get_workflow("w", 1)
        assert pinned is not None
        assert pinned.definition == {"v": 1}
        assert await store.get_workflow("w", 3) is None
        assert await store.get_workflow("nope") is None

    async def test_list_workflows_gives_the_latest_version_of_each_name(self, store: Store) -> None:
        await store.put_workflow(name="b", hash="1", kind="dsl", definition={}, source=None)
        await store.put_workflow(name="a", hash="1", kind="python", definition=None, source=None)
        await store.put_workflow(name="b", hash="2", kind="dsl", definition={}, source=None)
        listed = await store.list_workflows()
        assert [(w.name, w.version, w.kind) for w in listed] == [("a", 1, "python"), ("b", 2, "dsl")]
        assert [w.version for w in await store.list_workflow_versions("b")] == [1, 2]
        assert await store.list_workflow_versions("zzz") == []

    async def test_unknown_kind_is_refused(self, store: Store) -> None:
        with pytest.raises(ValueError, match="kind"):
            await store.put_workflow(name="w", hash="a", kind="yaml", definition={}, source=None)

    async def test_concurrent_registration_of_the_same_content_creates_one_version(
        self, store: Store
    ) -> None:
        results = await asyncio.gather(
            *(
                store.put_workflow(name="w", hash="same", kind="dsl", definition={}, source=None)
                for _ in range(10)
            )
        )
        assert {record.version for record, _ in results} == {1}
        assert sum(created for _, created in results) == 1

    async def test_concurrent_registration_of_different_content_numbers_versions_uniquely(
        self, store: Store
    ) -> None:
        results = await asyncio.gather(
            *(
                store.put_workflow(name="w", hash=f"h{i}", kind="dsl", definition={}, source=None)
                for i in range(10)
            )
        )
        assert sorted(record.version for record, _ in results) == list(range(1, 11))
        assert len(await store.list_workflow_versions("w")) == 10

    async def test_to_dict_is_json_ready(self, workflow: WorkflowRecord) -> None:
        document = workflow.to_dict()
        assert document["name"] == "hello"
        assert isinstance(document["created_at"], str)
        assert document["created_at"].endswith("Z")


class TestRuns:
    async def test_a_new_run_is_queued_with_a_run_queued_event(
        self, store: Store, workflow: WorkflowRecord
    ) -> None:
        run = await new_run(store, workflow, priority=5, options={"step": True})
        assert run.status is RunStatus.QUEUED
        assert (run.workflow, run.version, run.hash, run.priority) == ("hello", 1, "h1", 5)
        assert run.input == {"n": 1}
        assert run.options == {"step": True}
        assert run.output is None
        assert run.error is None
        assert run.parked is None
        assert run.last_seq == 1
        assert run.created_at == run.updated_at
        assert run.created_at.tzinfo is UTC
        [queued] = await store.list_events(run.id)
        assert (queued.seq, queued.type, queued.ts) == (1, EventType.RUN_QUEUED, run.created_at)
        assert await store.get_run(run.id) == run

    async def test_run_ids_sort_by_creation(self, store: Store, workflow: WorkflowRecord) -> None:
        ids = [(await new_run(store, workflow)).id for _ in range(20)]
        assert ids == sorted(ids)
        assert all(len(i) == 32 for i in ids)

    async def test_a_run_of_an_unregistered_version_is_refused(
        self, store: Store, workflow: WorkflowRecord
    ) -> None:
        with pytest.raises(NotFound, match="hello@2"):
            await store.create_run(workflow="hello", version=2, hash="x", input={})

    async def test_an_idempotency_key_names_one_run(self, store: Store, workflow: WorkflowRecord) -> None:
        run = await new_run(store, workflow, idempotency_key="k1", request_hash="rh")
        found = await store.find_run_by_idempotency_key("k1")
        assert found is not None
        assert (found.id, found.request_hash) == (run.id, "rh")
        assert await store.find_run_by_idempotency_key("k2") is None
        with pytest.raises(Conflict) as raised:
            await new_run(store, workflow, idempotency_key="k1")
        assert raised.value.details["run_id"] == run.id

    async def test_update_run_walks_the_lifecycle(self, store: Store, workflow: WorkflowRecord) -> None:
        run = await new_run(store, workflow)
        started = datetime.now(UTC)
        running = await store.update_run(run.id, status=RunStatus.RUNNING, started_at=started)
        assert running.status is RunStatus.RUNNING
        assert running.started_at == started
        assert running.updated_at >= run.updated_at
        parked = await store.update_run(
            run.id,
            status="waiting",
            parked={"kind": "approval", "node": "approve", "payload": {"q": 1}},
            wake_at=started + timedelta(hours=1),
        )
        assert parked.to_dict()["waiting_for"] == {"kind": "approval", "node": "approve", "payload": {"q": 1}}
        assert parked.wake_at == started + timedelta(hours=1)
        done = await store.update_run(
            run.id, status="succeeded", output={"ok": True}, parked=None, wake_at=None, finished_at=started
        )
        assert (done.status, done.output, done.parked, done.wake_at) == (
            RunStatus.SUCCEEDED,
            {"ok": True},
            None,
            None,
        )
        assert await store.get_run(run.id) == done

    async def test_update_run_refuses_unknown_fields_statuses_and_runs(
        self, store: Store, workflow: WorkflowRecord
    ) -> None:
        run = await new_run(store, workflow)
        with pytest.raises(TypeError, match="last_seq"):
            await store.update_run(run.id, last_seq=9)
        with pytest.raises(ValueError, match="done"):
            await store.update_run(run.id, status="done")
        with pytest.raises(NotFound):
            await store.update_run("missing", status="running")

    async def test_naive_datetimes_are_refused(self, store: Store, workflow: WorkflowRecord) -> None:
        """A timestamp without a zone is a bug, not something to guess about."""
        run = await new_run(store, workflow)
        with pytest.raises(Exception, match="naive datetime"):
            await store.update_run(run.id, started_at=datetime(2025, 1, 1))

    async def test_other_zones_are_stored_as_utc(self, store: Store, workflow: WorkflowRecord) -> None:
        run = await new_run(store, workflow)
        tokyo = datetime(2025, 1, 1, 9, 0, tzinfo=timezone(timedelta(hours=9)))
        updated = await store.update_run(run.id, started_at=tokyo)
        assert updated.started_at == datetime(2025, 1, 1, 0, 0, tzinfo=UTC)
        assert updated.started_at is not None
        assert updated.started_at.tzinfo is UTC

    async def test_to_dict_is_the_run_document(self, store: Store, workflow: WorkflowRecord) -> None:
        run = await new_run(store, workflow)
        document = run.to_dict()
        assert list(document) == [
            "id",
            "status",
            "workflow",
            "version",
            "hash",
            "input",
            "output",
            "error",
            "priority",
            "options",
            "waiting_for",
            "created_at",
            "started_at",
            "finished_at",
            "updated_at",
        ]
        assert document["status"] == "queued"
        assert document["created_at"] == run.created_at.isoformat(timespec="microseconds")[:-6] + "Z"
        assert document["started_at"] is None

    async def test_delete_run_cascades_to_its_journal_and_commands(
        self, store: Store, workflow: WorkflowRecord
    ) -> None:
        run = await new_run(store, workflow)
        other = await new_run(store, workflow)
        for target in (run, other):
            await store.record(
                target.id, events=[NewEvent("node.started", node="a")], node_states=[NodeStateUpdate("a")]
            )
            await store.post_command(target.id, "cancel")
        assert await store.delete_run(run.id)
        assert await store.get_run(run.id) is None
        assert await store.list_events(run.id) == []
        assert await store.list_node_states(run.id) == []
        assert await store.pending_commands(run.id) == []
        assert not await store.delete_run(run.id)
        assert len(await store.list_events(other.id)) == 2
        assert len(await store.pending_commands(other.id)) == 1

    async def test_a_transition_and_its_event_commit_together(
        self, store: Store, workflow: WorkflowRecord
    ) -> None:
        """A reader never sees the new status without the event announcing it (a stream ending at
        a terminal status would otherwise miss that event)."""
        run = await new_run(store, workflow)
        missed = await store.transition_run(
            run.id, RunStatus.RUNNING.value, events=[NewEvent("run.cancelled")], status="cancelled"
        )
        assert missed is None
        assert [e.type for e in await store.list_events(run.id)] == ["run.queued"]
        changed = await store.transition_run(
            run.id, RunStatus.QUEUED.value, events=[NewEvent("run.cancelled")], status="cancelled"
        )
        assert changed is not None
        cancelled, [event] = changed
        assert (cancelled.status, event.type, event.seq) == (RunStatus.CANCELLED, "run.cancelled", 2)
        stored = await store.get_run(run.id)
        assert stored is not None
        assert stored.last_seq == cancelled.last_seq == 2

    @pytest.mark.postgres
    async def test_a_new_run_wakes_listeners_as_it_commits(self, pg_url: str) -> None:
        """On PostgreSQL the queue's notification rides in the run's own transaction (SQLite has
        none: its one process wakes its worker in memory)."""
        store = await open_store(pg_url)
        listener = await psycopg.AsyncConnection.connect(libpq_url(make_url(pg_url)), autocommit=True)
        try:
            record, _ = await store.put_workflow(name="w", hash="h", kind="dsl", definition={}, source=None)
            await listener.execute("LISTEN trellis_test_queue")
            run = await new_run(store, record, wake_channel="trellis_test_queue")
            notifies = listener.notifies(timeout=5, stop_after=1)
            assert [n.payload async for n in notifies] == [run.id]
        finally:
            await listener.close()
            await store.close()


class TestListRuns:
    async def test_newest_first_with_filters(self, store: Store, workflow: WorkflowRecord) -> None:
        other, _ = await store.put_workflow(name="other", hash="o", kind="dsl", definition={}, source=None)
        first = await new_run(store, workflow)
        second = await new_run(store, other)
        third = await new_run(store, workflow)
        await store.update_run(second.id, status="running")

        everything, cursor = await store.list_runs()
        assert [r.id for r in everything] == [third.id, second.id, first.id]
        assert cursor is None
        hello, _ = await store.list_runs(workflow="hello")
        assert [r.id for r in hello] == [third.id, first.id]
        running, _ = await store.list_runs(status=["running"])
        assert [r.id for r in running] == [second.id]
        either, _ = await store.list_runs(status=[RunStatus.RUNNING, RunStatus.QUEUED], workflow="other")
        assert [r.id for r in either] == [second.id]
        after, _ = await store.list_runs(created_after=first.created_at)
        assert [r.id for r in after] == [third.id, second.id]
        before, _ = await store.list_runs(created_before=third.created_at)
        assert [r.id for r in before] == [second.id, first.id]

    async def test_cursor_pages_neither_repeat_nor_skip_runs_created_meanwhile(
        self, store: Store, workflow: WorkflowRecord
    ) -> None:
        """Pages are keyed on (created_at, id): runs created while paging do not shift them."""
        created = [await new_run(store, workflow) for _ in range(23)]
        expected = [r.id for r in reversed(created)]
        seen: list[str] = []
        page, cursor = await store.list_runs(limit=5)
        seen += [r.id for r in page]
        while cursor is not None:
            await new_run(store, workflow)  # lands before the cursor: never on a later page
            page, cursor = await store.list_runs(limit=5, cursor=cursor)
            seen += [r.id for r in page]
        assert seen == expected

    async def test_an_exact_last_page_has_no_cursor(self, store: Store, workflow: WorkflowRecord) -> None:
        for _ in range(4):
            await new_run(store, workflow)
        page, cursor = await store.list_runs(limit=2)
        page, cursor = await store.list_runs(limit=2, cursor=cursor)
        assert len(page) == 2
        assert cursor is None

    async def test_runs_created_in_the_same_instant_page_by_id(
        self, store: Store, workflow: WorkflowRecord
    ) -> None:
        created = [await new_run(store, workflow) for _ in range(6)]
        await _set_created_at(store, [r.id for r in created], datetime(2025, 1, 1, tzinfo=UTC))
        seen: list[str] = []
        cursor: str | None = None
        while True:
            page, cursor = await store.list_runs(limit=4, cursor=cursor)
            seen += [r.id for r in page]
            if cursor is None:
                break
        assert seen == sorted((r.id for r in created), reverse=True)

    async def test_bad_cursors_and_limits_are_validation_errors(self, store: Store) -> None:
        with pytest.raises(ValidationError, match="cursor"):
            await store.list_runs(cursor="not a cursor")
        with pytest.raises(ValidationError, match="limit"):
            await store.list_runs(limit=0)


async def _set_created_at(store: Store, run_ids: list[str], when: datetime) -> None:
    """created_at cannot be changed through the API; set it directly, in the store's transaction."""

    def apply(conn: Connection) -> None:
        conn.execute(update(runs).where(runs.c.id.in_(run_ids)).values(created_at=when))

    await store._runner.write(apply)


class TestSqlitePointOperations:
    """On SQLite, point operations run on the loop's thread; a locked file sends them to a thread."""

    async def test_a_locked_file_sends_the_write_to_a_thread_and_the_loop_goes_on(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "trellis.db"
        store = await open_store(f"sqlite+aiosqlite:///{path}")
        try:
            record, _ = await store.put_workflow(name="w", hash="h", kind="dsl", definition={}, source=None)
            run = await new_run(store, record)
            other = sqlite3.connect(str(path), isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")  # another process holding the write lock
                write = asyncio.create_task(store.record(run.id, events=[NewEvent("run.started")]))
                reads = 0
                while reads < 10:  # reads and the loop go on meanwhile (WAL: readers never wait)
                    assert (await store.get_run(run.id)) is not None
                    await asyncio.sleep(0.01)
                    reads += 1
                assert not write.done()
                other.execute("COMMIT")
                [event] = await asyncio.wait_for(write, 10)
            finally:
                other.close()
            assert event.seq == 2
            assert [e.type for e in await store.list_events(run.id)] == ["run.queued", "run.started"]
            assert store._runner.fallbacks == 1  # type: ignore[attr-defined]
        finally:
            await store.close()

    async def test_a_point_operation_from_another_thread_uses_the_thread_pool(self, tmp_path: Path) -> None:
        store = await open_store(f"sqlite+aiosqlite:///{tmp_path / 'trellis.db'}")
        try:
            record, _ = await store.put_workflow(name="w", hash="h", kind="dsl", definition={}, source=None)
            run = await new_run(store, record)  # the loop's connection now belongs to this thread

            def elsewhere() -> RunRecord | None:
                return asyncio.run(store.get_run(run.id))

            assert await asyncio.to_thread(elsewhere) == await store.get_run(run.id)
        finally:
            await store.close()

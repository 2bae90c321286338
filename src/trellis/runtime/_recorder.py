"""Buffers a run's events and node-state changes and writes them in batches.

The graph never waits for the store on its hot path: events queue here and a writer task
writes whatever accumulated in one transaction (:meth:`Store.record`), then publishes the
persisted records. Transitions that must be durable before the run goes on (a retry's
backoff, the run's own status changes) call :meth:`flush` and wait for it.

Every write carries the execution's lease token; a write refused because another worker took
the run over is reported through :attr:`Recorder.on_failure`, and nothing more is written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from trellis.runtime._bus import EventBus
from trellis.store import EventRecord, NewEvent, NodeStateUpdate, Store


class Recorder:
    """Batched, fenced writer of one run's events and node states."""

    def __init__(self, store: Store, bus: EventBus, run_id: str, *, lease_token: int | None = None) -> None:
        self.store = store
        self.bus = bus
        self.run_id = run_id
        self.lease_token = lease_token
        self.on_failure: Callable[[BaseException], None] | None = None
        self.fence_needed: Callable[[], bool] = lambda: True
        """Whether writes must carry the lease token (False while the lease is surely held)."""
        self._events: list[NewEvent] = []
        self._nodes: dict[str, NodeStateUpdate] = {}
        self._run: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._writer(), name=f"recorder-{self.run_id}")

    def add(
        self,
        event: NewEvent | None = None,
        node_state: NodeStateUpdate | None = None,
        run: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue changes; the writer picks them up on its next turn."""
        if event is not None:
            self._events.append(event)
        if node_state is not None:
            self._nodes[node_state.node] = _merge(self._nodes.get(node_state.node), node_state)
        if run:
            self._run.update(run)
        self._wake.set()

    async def flush(self) -> list[EventRecord]:
        """Write everything queued so far and wait until it is durable."""
        if self._error is not None:
            raise self._error
        async with self._lock:
            events, nodes, run = self._events, list(self._nodes.values()), self._run
            self._events, self._nodes, self._run = [], {}, {}
            if not (events or nodes or run):
                return []
            token = self.lease_token if self.fence_needed() else None
            records = await self.store.record(
                self.run_id, events=events, node_states=nodes, run=run or None, lease_token=token
            )
        self.bus.publish(records)
        return records

    async def close(self) -> None:
        """Let the writer finish what it is writing, then write the rest."""
        await self._stop_writer()
        await self.flush()  # raises the writer's error, if it had one

    async def abandon(self) -> None:
        """Stop writing and drop what is queued (the execution ended without an outcome)."""
        self._events, self._nodes, self._run = [], {}, {}
        await self._stop_writer()

    async def _stop_writer(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _writer(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:
                self._error = exc
                if self.on_failure is not None:
                    self.on_failure(exc)
                return


def _merge(old: NodeStateUpdate | None, new: NodeStateUpdate) -> NodeStateUpdate:
    """Later fields win; fields the newer update leaves unset keep the older value."""
    if old is None:
        return new
    return NodeStateUpdate(node=new.node, **{**old.values(), **new.values()})

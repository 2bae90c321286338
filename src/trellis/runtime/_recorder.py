"""Buffers a run's events and node-state changes and writes them in batches.

The graph never waits for the store on its hot path: events queue here and a writer task
writes whatever accumulated in one transaction (:meth:`Store.record`, which hands the
persisted records to the engine's event bus). Transitions that must be durable before the run
goes on (a retry's backoff, the run's own status changes) call :meth:`flush` and wait for it.

Every write carries the execution's lease token; a write refused because another worker took
the run over is reported through :attr:`Recorder.on_failure`, and nothing more is written.

Log lines the run's nodes emit (:meth:`add_log`, possibly from a tool's worker thread) ride
along: they are written after each batch, unfenced, and a failure to store them is logged,
never fatal. Persisted events are handed to :attr:`Recorder.observe` (metrics).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from trellis.store import EventRecord, NewEvent, NodeStateUpdate, Store

log = logging.getLogger(__name__)


class Recorder:
    """Batched, fenced writer of one run's events and node states."""

    def __init__(self, store: Store, run_id: str, *, lease_token: int | None = None) -> None:
        self.store = store
        self.run_id = run_id
        self.lease_token = lease_token
        self.on_failure: Callable[[BaseException], None] | None = None
        self.fence_needed: Callable[[], bool] = lambda: True
        """Whether writes must carry the lease token (False while the lease is surely held)."""
        self.observe: Callable[[Iterable[EventRecord]], None] | None = None
        """Sees every batch of events once it is persisted (the metrics' :class:`RunObserver`)."""
        self._logs: list[dict[str, Any]] = []
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
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

    def add_log(self, line: dict[str, Any]) -> None:
        """Queue a node's log line; safe to call from another thread (a tool in ``to_thread``)."""
        if threading.get_ident() == self._loop_thread:
            self._logs.append(line)
            self._wake.set()
        else:
            self._loop.call_soon_threadsafe(self.add_log, line)

    async def flush(self) -> list[EventRecord]:
        """Write everything queued so far and wait until it is durable."""
        if self._error is not None:
            raise self._error
        async with self._lock:
            events, nodes, run = self._events, list(self._nodes.values()), self._run
            self._events, self._nodes, self._run = [], {}, {}
            logs, self._logs = self._logs, []
            records: list[EventRecord] = []
            if events or nodes or run:
                token = self.lease_token if self.fence_needed() else None
                records = await self.store.record(
                    self.run_id, events=events, node_states=nodes, run=run or None, lease_token=token
                )
            if logs:
                await self._write_logs(logs)
        # (the store published the records to the engine's bus as the write returned)
        if records and self.observe is not None:
            self.observe(records)
        return records

    async def _write_logs(self, logs: list[dict[str, Any]]) -> None:
        try:
            await self.store.append_logs(self.run_id, logs)
        except Exception:  # lines are diagnostics: losing them must not stop the run
            log.exception("run %s: could not store %d node log line(s)", self.run_id, len(logs))

    async def close(self) -> None:
        """Let the writer finish what it is writing, then write the rest."""
        await self._stop_writer()
        await self.flush()  # raises the writer's error, if it had one

    async def abandon(self) -> None:
        """Stop writing and drop what is queued (the execution ended without an outcome)."""
        self._events, self._nodes, self._run, self._logs = [], {}, {}, []
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

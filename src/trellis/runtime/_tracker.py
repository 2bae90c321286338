"""Turns LangGraph's stream (``tasks``, ``updates``, ``custom``, ``values``) into Trellis events
and node states, and serves the run's facts to its nodes (:class:`RunServices`).

Definition nodes report their own lifecycle through the custom stream (the node wrapper
knows attempts, retries and delays, which the ``tasks`` stream does not show); Python
workflows are reported from the ``tasks`` stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from trellis.errors import as_workflow_error
from trellis.nodes._context import EVENT_MARKER
from trellis.runtime._recorder import Recorder
from trellis.store import NewEvent, NodeStateRecord, NodeStateUpdate
from trellis.types import NodeStatus

_ACTIVE = (NodeStatus.RUNNING, NodeStatus.RETRYING)


def _now() -> datetime:
    return datetime.now(UTC)


class RunTracker:
    """Per-execution view of a run's node states; also the :class:`RunServices` of its nodes."""

    def __init__(
        self,
        run_id: str,
        run_input: Any,
        recorder: Recorder,
        node_states: Sequence[NodeStateRecord],
        *,
        wraps_nodes: bool,
    ) -> None:
        self.run_id = run_id
        self.run_input = run_input
        self.key_prefix = ""
        self.recorder = recorder
        self.wraps_nodes = wraps_nodes
        self.states: dict[str, tuple[NodeStatus, int, datetime | None]] = {
            s.node: (s.status, s.attempt, s.next_attempt_at) for s in node_states
        }
        self.values: dict[str, Any] | None = None
        self.interrupted = False
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._task_names: dict[str, str] = {}
        self._task_started: dict[str, datetime] = {}
        """When each running node of a Python workflow started (its duration is not reported)."""

    # -- RunServices ------------------------------------------------------------------------------

    def prior_attempt(self, node_key: str) -> tuple[int, float | None]:
        status, attempt, due = self.states.get(node_key, (NodeStatus.PENDING, 0, None))
        if status == NodeStatus.RETRYING:
            return attempt, due.timestamp() if due else None
        if status == NodeStatus.RUNNING:
            return max(attempt - 1, 0), None  # the attempt in flight at a crash runs again
        return 0, None

    def semaphore(self, key: str, limit: int) -> asyncio.Semaphore:
        return self._semaphores.setdefault(key, asyncio.Semaphore(limit))

    def record_log(self, line: dict[str, Any]) -> None:
        self.recorder.add_log(line)

    # -- stream -----------------------------------------------------------------------------------

    def on_chunk(self, namespace: tuple[str, ...], mode: str, chunk: Any) -> bool:
        """Translate one stream item; returns True when it must be made durable at once."""
        if mode == "custom":
            if isinstance(chunk, dict) and EVENT_MARKER in chunk:
                return self._lifecycle(chunk)
            node = namespace[-1].split(":")[0] if namespace else None
            self.recorder.add(NewEvent("node.progress", node=node, data={"value": chunk}))
            return False
        if mode == "updates":
            if isinstance(chunk, dict) and "__interrupt__" in chunk:
                self.interrupted = True
            elif (
                isinstance(chunk, dict)
                and not self.wraps_nodes
                and chunk.get("__metadata__", {}).get("cached")
            ):
                self._replayed(namespace, chunk)
            return False
        if mode == "values" and not namespace and isinstance(chunk, dict):
            self.values = chunk
            return False
        if mode == "tasks" and not self.wraps_nodes:
            self._task(namespace, chunk)
        return False

    def _lifecycle(self, chunk: Mapping[str, Any]) -> bool:
        kind: str = chunk[EVENT_MARKER]
        node: str = chunk["node"]
        attempt: int | None = chunk.get("attempt")
        data = dict(chunk.get("data") or {})
        now = _now()
        if kind == "node.started":
            previous = self.states.get(node)
            if previous is not None and previous[0] == NodeStatus.RUNNING and previous[1] == attempt:
                return False  # an interrupted node re-executing on resume, or a crash re-run
            self._set(node, NodeStatus.RUNNING, attempt or 1)
            self.recorder.add(
                NewEvent(kind, node=node, attempt=attempt, data=data, ts=now),
                NodeStateUpdate(
                    node=node,
                    status=NodeStatus.RUNNING,
                    attempt=attempt or 1,
                    started_at=now,
                    finished_at=None,
                    error=None,
                    next_attempt_at=None,
                ),
            )
            return False
        if kind == "node.retrying":
            due = datetime.fromtimestamp(data["next_attempt_at"], UTC)
            self._set(node, NodeStatus.RETRYING, attempt or 1, due)
            self.recorder.add(
                NewEvent(kind, node=node, attempt=attempt, data=data, ts=now),
                NodeStateUpdate(
                    node=node,
                    status=NodeStatus.RETRYING,
                    attempt=attempt or 1,
                    error=data.get("error"),
                    next_attempt_at=due,
                ),
            )
            return True  # the attempt count must survive a crash during the backoff
        if kind in ("node.succeeded", "node.failed"):
            status = NodeStatus.SUCCEEDED if kind == "node.succeeded" else NodeStatus.FAILED
            self._set(node, status, attempt or 1)
            update = data.pop("update", None)
            if update is not None:
                data["output_keys"] = sorted(update)
            self.recorder.add(
                NewEvent(kind, node=node, attempt=attempt, data=data, ts=now),
                NodeStateUpdate(
                    node=node,
                    status=status,
                    attempt=attempt or 1,
                    finished_at=now,
                    duration_ms=data.get("duration_ms"),
                    error=data.get("error"),
                    next_attempt_at=None,
                    data={"output": update} if update is not None else None,
                ),
            )
            return False
        self.recorder.add(NewEvent(kind, node=node, attempt=attempt, data=data, ts=now))
        return False

    def _task(self, namespace: tuple[str, ...], chunk: Mapping[str, Any]) -> None:
        """``tasks`` stream of a Python workflow: start and finish of each node."""
        name = str(chunk.get("name", ""))
        if name.startswith("__"):
            return
        prefix = "/".join(part.split(":")[0] for part in namespace)
        node = f"{prefix}/{name}" if prefix else name
        now = _now()
        if "input" in chunk:  # start
            if self.states.get(node, (None,))[0] == NodeStatus.RUNNING:
                return  # re-run after a crash or an interrupt: the same attempt, already announced
            attempt = self.states.get(node, (None, 0))[1] + 1
            self._set(node, NodeStatus.RUNNING, attempt)
            self._task_started[node] = now
            self.recorder.add(
                NewEvent("node.started", node=node, attempt=attempt, ts=now),
                NodeStateUpdate(node=node, status=NodeStatus.RUNNING, attempt=attempt, started_at=now),
            )
            return
        if chunk.get("interrupts"):
            return
        attempt = self.states.get(node, (None, 1))[1]
        started = self._task_started.pop(node, None)
        duration_ms = None if started is None else (now - started).total_seconds() * 1000
        error = chunk.get("error")
        if error is not None:
            problem = as_workflow_error(error, node=node).to_problem()
            self._set(node, NodeStatus.FAILED, attempt)
            self.recorder.add(
                NewEvent(
                    "node.failed",
                    node=node,
                    attempt=attempt,
                    data={"error": problem, "duration_ms": duration_ms},
                    ts=now,
                ),
                NodeStateUpdate(
                    node=node,
                    status=NodeStatus.FAILED,
                    finished_at=now,
                    error=problem,
                    duration_ms=duration_ms,
                ),
            )
            return
        result = chunk.get("result")
        self._set(node, NodeStatus.SUCCEEDED, attempt)
        self.recorder.add(
            NewEvent(
                "node.succeeded",
                node=node,
                attempt=attempt,
                data={
                    "output_keys": sorted(result) if isinstance(result, dict) else [],
                    "duration_ms": duration_ms,
                },
                ts=now,
            ),
            NodeStateUpdate(
                node=node,
                status=NodeStatus.SUCCEEDED,
                finished_at=now,
                duration_ms=duration_ms,
                data={"output": result} if isinstance(result, dict) else None,
            ),
        )

    def _replayed(self, namespace: tuple[str, ...], chunk: Mapping[str, Any]) -> None:
        """Writes LangGraph kept from before an interrupt or crash: those nodes did not run again."""
        prefix = "/".join(part.split(":")[0] for part in namespace)
        for name in chunk:
            node = f"{prefix}/{name}" if prefix else name
            state = self.states.get(node)
            if state is not None and state[0] == NodeStatus.RUNNING:
                self._set(node, NodeStatus.SUCCEEDED, state[1])
                self.recorder.add(node_state=NodeStateUpdate(node=node, status=NodeStatus.SUCCEEDED))

    def _set(self, node: str, status: NodeStatus, attempt: int, due: datetime | None = None) -> None:
        self.states[node] = (status, attempt, due)

    def cancel_active(self) -> list[str]:
        """Mark every running or retrying node cancelled (the run was cancelled); their keys."""
        now = _now()
        cancelled = []
        for node, (status, attempt, _) in list(self.states.items()):
            if status in _ACTIVE:
                self._set(node, NodeStatus.CANCELLED, attempt)
                cancelled.append(node)
                self.recorder.add(
                    node_state=NodeStateUpdate(
                        node=node, status=NodeStatus.CANCELLED, finished_at=now, next_attempt_at=None
                    )
                )
        return cancelled

"""Public value types shared by every layer: statuses and event types (DESIGN §4)."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """Lifecycle of a run."""

    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True once the run can no longer change by itself."""
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


class NodeStatus(StrEnum):
    """Lifecycle of one node within a run."""

    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class EventType(StrEnum):
    """The event vocabulary of DESIGN §4 (``breaker.*`` and ``agent.*`` come from their modules)."""

    RUN_QUEUED = "run.queued"
    RUN_STARTED = "run.started"
    NODE_STARTED = "node.started"
    NODE_RETRYING = "node.retrying"
    NODE_SUCCEEDED = "node.succeeded"
    NODE_FAILED = "node.failed"
    NODE_PROGRESS = "node.progress"
    RUN_WAITING = "run.waiting"
    RUN_RESUMED = "run.resumed"
    RUN_PAUSED = "run.paused"
    RUN_CANCELLED = "run.cancelled"
    RUN_SUCCEEDED = "run.succeeded"
    RUN_FAILED = "run.failed"


__all__ = ["EventType", "NodeStatus", "RunStatus"]

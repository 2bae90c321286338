"""Trellis's persistence: workflow versions, runs, node states, event logs, commands, checkpoints.

SQLAlchemy 2 (async, Core) over SQLite (one machine) or PostgreSQL (many), with the schema
migrated by Alembic revisions shipped in the package. Open it with :func:`open_store`; open
LangGraph's checkpointer for the same database with :func:`open_checkpointer`.

Example:
    ::

        store = await open_store("sqlite+aiosqlite:///./.trellis/trellis.db")
        workflow, created = await store.put_workflow(
            name="hello", hash=digest, kind="dsl", definition=definition, source=yaml_text
        )
        run = await store.create_run(workflow="hello", version=workflow.version,
                                     hash=workflow.hash, input={"name": "Ada"})
        await store.record(run.id, events=[NewEvent("run.started")], run={"status": "running"})
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from trellis.store._access import ApiKeyRecord, AuditRecord
from trellis.store._dialect import DEFAULT_DATABASE_URL, DialectName, mask_url, normalize_url
from trellis.store._observability import LogRecord
from trellis.store._resilience import AgentRecord, AgentSample, BreakerRecord, SystemEvent
from trellis.store._store import Store, open_store
from trellis.store._triggers import CallbackRecord, DeliveryRecord, TriggerRecord
from trellis.store.records import (
    UNSET,
    CommandRecord,
    EventRecord,
    NewEvent,
    NodeStateRecord,
    NodeStateUpdate,
    RunRecord,
    WorkflowKind,
    WorkflowRecord,
)

__all__ = [
    "DEFAULT_DATABASE_URL",
    "UNSET",
    "AgentRecord",
    "AgentSample",
    "ApiKeyRecord",
    "AuditRecord",
    "BreakerRecord",
    "CallbackRecord",
    "CommandRecord",
    "DeliveryRecord",
    "DialectName",
    "EventRecord",
    "LogRecord",
    "NewEvent",
    "NodeStateRecord",
    "NodeStateUpdate",
    "RunRecord",
    "Store",
    "SystemEvent",
    "TriggerRecord",
    "WorkflowKind",
    "WorkflowRecord",
    "alembic_config",
    "checkpoint_path",
    "mask_url",
    "normalize_url",
    "open_checkpointer",
    "open_store",
]

if TYPE_CHECKING:
    from trellis.store._migrate import alembic_config
    from trellis.store.checkpointer import checkpoint_path, open_checkpointer

_ON_FIRST_USE = {
    "alembic_config": "trellis.store._migrate",
    "checkpoint_path": "trellis.store.checkpointer",
    "open_checkpointer": "trellis.store.checkpointer",
}
"""Names imported when first used: LangGraph's checkpointers and Alembic take longer to import
than the rest of the store, and a command that only reads runs needs neither."""


def __getattr__(name: str) -> Any:
    module = _ON_FIRST_USE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module), name)

"""Starting a run for a trigger, exactly once per delivery.

Every start carries an idempotency key made of the trigger's name and what identifies the
delivery (a schedule tick, a webhook delivery id, a stream sequence number). The key is unique
in the ``runs`` table, so a delivery seen again — a replayed webhook, a redelivered message, two
schedulers on the same tick — finds the run the first one created instead of creating another.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from trellis.errors import Conflict
from trellis.runtime import Engine
from trellis.store import RunRecord, TriggerRecord

MAX_KEY_LENGTH = 255


def delivery_key(trigger: str, delivery: str) -> str:
    """The idempotency key of one delivery of ``trigger`` (hashed when it would be too long)."""
    key = f"trigger:{trigger}:{delivery}"
    if len(key) <= MAX_KEY_LENGTH:
        return key
    return "trigger:sha256:" + hashlib.sha256(key.encode()).hexdigest()


async def find_started(engine: Engine, trigger: str, delivery: str) -> RunRecord | None:
    """The run a delivery already started, if any."""
    return await engine.store.find_run_by_idempotency_key(delivery_key(trigger, delivery))


async def start_run(
    engine: Engine,
    trigger: TriggerRecord,
    run_input: Any,
    *,
    delivery: str,
    source: Mapping[str, Any] | None = None,
) -> tuple[RunRecord, bool]:
    """Queue a run of the trigger's workflow for one delivery: ``(run, created)``.

    ``created`` is False when the delivery had started a run already (that run is returned).
    The run's ``options.trigger`` says what started it: ``{name, kind, delivery, ...source}``.
    """
    key = delivery_key(trigger.name, delivery)
    options = {
        "trigger": {"name": trigger.name, "kind": trigger.kind, "delivery": delivery, **(source or {})}
    }
    try:
        return await engine.submit(trigger.workflow, run_input, options=options, idempotency_key=key), True
    except Conflict as exc:
        if exc.details.get("idempotency_key") != key:
            raise
        existing = await engine.store.find_run_by_idempotency_key(key)
        if existing is None:  # pragma: no cover - the key's run was deleted in between
            raise
        return existing, False

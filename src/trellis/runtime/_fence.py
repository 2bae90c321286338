"""A checkpointer that refuses writes from an execution whose lease was taken over.

LangGraph's savers accept any writer on a thread (two workers on one thread silently fork its
history). Trellis's leases stop that: while a run executes, its checkpoint writes first check
that the run's lease token is still the one this execution claimed it under. A worker that
stalled past its lease expiry (and whose run another worker now owns) fails its next
checkpoint write instead of advancing the run, and stops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)

from trellis.errors import Conflict
from trellis.store import Store


@dataclass
class _Fence:
    token: int
    on_lost: Callable[[], None]
    surely_held: Callable[[], bool]


class FencedSaver(BaseCheckpointSaver[Any]):
    """Delegates to ``inner``; checks the lease of registered threads before every write."""

    def __init__(self, inner: BaseCheckpointSaver[Any], store: Store) -> None:
        super().__init__(serde=inner.serde)
        self.inner = inner
        self.store = store
        self.fences: dict[str, _Fence] = {}

    def guard(
        self, thread_id: str, token: int, on_lost: Callable[[], None], surely_held: Callable[[], bool]
    ) -> None:
        """Fence writes to ``thread_id`` with ``token`` until :meth:`release`.

        ``surely_held`` says when no check is needed: before the lease's confirmed expiry no
        other worker can have claimed the run, so the database is asked only after it.
        """
        self.fences[thread_id] = _Fence(token, on_lost, surely_held)

    def release(self, thread_id: str) -> None:
        self.fences.pop(thread_id, None)

    async def _check(self, config: RunnableConfig) -> None:
        thread_id = config.get("configurable", {}).get("thread_id")
        fence = self.fences.get(thread_id) if isinstance(thread_id, str) else None
        if fence is None or fence.surely_held():
            return
        if not await self.store.lease_holds(thread_id, fence.token):  # type: ignore[arg-type]
            fence.on_lost()
            raise Conflict(
                f"run {thread_id}: lease token {fence.token} was superseded; another worker owns the run",
                details={"run_id": thread_id, "lease_token": fence.token},
            )

    # -- writes (fenced) ----------------------------------------------------------------------

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        await self._check(config)
        return await self.inner.aput(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await self._check(config)
        await self.inner.aput_writes(config, writes, task_id, task_path)

    # -- everything else (delegated) ----------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self.inner.aget_tuple(config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        async for item in self.inner.alist(config, filter=filter, before=before, limit=limit):
            yield item

    async def adelete_thread(self, thread_id: str) -> None:
        await self.inner.adelete_thread(thread_id)

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.inner.get_tuple(config)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        return self.inner.list(config, filter=filter, before=before, limit=limit)

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        raise NotImplementedError("Trellis executes runs asynchronously; use aput")

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        raise NotImplementedError("Trellis executes runs asynchronously; use aput_writes")

    def get_next_version(self, current: Any, channel: None) -> Any:
        return self.inner.get_next_version(current, channel)

    def with_allowlist(self, extra_allowlist: Any) -> FencedSaver:
        clone = FencedSaver(self.inner.with_allowlist(extra_allowlist), self.store)
        clone.fences = self.fences
        return clone

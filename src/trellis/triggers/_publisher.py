"""The event publisher: every run's events, in order, to a NATS subject or a Redis stream.

**Position.** A publisher's progress is one cursor per run (``publish_cursors``: the last
``seq`` it published). A pass reads the runs whose ``last_seq`` is beyond their cursor,
publishes their new events in ``seq`` order, and then moves the cursor. Nothing is skipped: an
event is only counted once the bus accepted it (a JetStream publish acknowledgement, a Redis
``XADD`` reply). A crash between publishing and moving the cursor publishes those events again
on the next pass — delivery is *at least once*, and every message carries ``run_id`` and
``seq`` so consumers can drop repeats. On JetStream the message id header is ``<run_id>:<seq>``,
so the server itself drops repeats within its duplicate window.

**Only live and recently finished runs are read.** A publisher also keeps a watermark
(``publish_watermarks``): every run that finished before it is published in full. A pass reads
the runs not finished and those finished since the watermark, so its cost follows the live and
recent work, not the size of the ``runs`` table. (A finished run gets no event unless it leaves
its final status first: retry and rollback queue it again.) After a pass that found less than a
page, the watermark moves to :data:`WATERMARK_LAG` before the pass, so runs stamped by a process
whose clock runs behind, or committed late, stay within reach; a full page leaves it where it
is. Before its first pass a publisher reads every run once.

**One publisher process.** Only the process holding the lease ``publisher:<name>`` publishes,
so events of one run never interleave from two processes; the lease passes to another process
when its holder stops renewing it.

Messages: the event document (``run_id, seq, ts, type, node, attempt, data``) plus
``workflow`` and ``version``; on NATS to ``<subject>.<event type>`` (``trellis.events.run.succeeded``),
on Redis as the ``event`` field (with ``run_id``, ``seq``, ``type``) of an entry of ``stream``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from trellis.runtime import Engine
from trellis.store import EventRecord, RunRecord

log = logging.getLogger("trellis.triggers")

WATERMARK_LAG = timedelta(minutes=5)
"""How far behind the present a drained publisher's watermark stays: more than any commit delay
or clock difference between the processes writing runs."""


@dataclass(frozen=True, slots=True)
class PublisherSpec:
    """Where one publisher sends events (``[publishers.<name>]`` in ``trellis.toml``)."""

    kind: Literal["nats", "redis"]
    url: str
    subject: str = "trellis.events"
    """NATS: subject prefix; each event goes to ``<subject>.<type>``."""
    stream: str | None = None
    """NATS: JetStream stream to create over ``<subject>.>`` when missing (required for
    acknowledged publishing); Redis: the stream key (default ``trellis:events``)."""
    types: tuple[str, ...] = ("run.", "node.")
    """Prefixes of the event types published; others are passed over (and counted as done)."""
    maxlen: int | None = None
    """Redis: trim the stream to about this many entries."""


class _Sink(Protocol):
    async def send(self, run: RunRecord, event: EventRecord, body: bytes) -> None: ...

    async def close(self) -> None: ...


class _NatsSink:
    def __init__(self, spec: PublisherSpec) -> None:
        self.spec = spec
        self._client: Any = None
        self._js: Any = None

    async def _connect(self) -> Any:
        if self._js is None:
            import nats
            from nats.js.errors import NotFoundError

            self._client = await nats.connect(self.spec.url, connect_timeout=5, max_reconnect_attempts=-1)
            self._js = self._client.jetstream()
            if self.spec.stream:
                try:
                    await self._js.stream_info(self.spec.stream)
                except NotFoundError:
                    await self._js.add_stream(name=self.spec.stream, subjects=[f"{self.spec.subject}.>"])
        return self._js

    async def send(self, run: RunRecord, event: EventRecord, body: bytes) -> None:
        js = await self._connect()
        await js.publish(
            f"{self.spec.subject}.{event.type}",
            body,
            timeout=5,
            headers={"Nats-Msg-Id": f"{event.run_id}:{event.seq}"},
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


class _RedisSink:
    def __init__(self, spec: PublisherSpec) -> None:
        import redis.asyncio as redis

        self.spec = spec
        self._client = redis.from_url(spec.url)

    async def send(self, run: RunRecord, event: EventRecord, body: bytes) -> None:
        fields: dict[Any, Any] = {"run_id": event.run_id, "seq": event.seq, "type": event.type, "event": body}
        await self._client.xadd(
            self.spec.stream or "trellis:events", fields, maxlen=self.spec.maxlen, approximate=True
        )

    async def close(self) -> None:
        await self._client.aclose()


@dataclass
class EventPublisher:
    """Publishes the events of every run to one bus destination; see the module docstring."""

    engine: Engine
    name: str
    spec: PublisherSpec
    poll_seconds: float = 1.0
    lease_seconds: float = 15.0
    published: int = 0
    """Events this publisher sent since it started."""
    _sink: _Sink | None = field(default=None, repr=False)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish while holding the lease, every ``poll_seconds``, until ``stop`` is set."""
        lease = f"publisher:{self.name}"
        try:
            while not stop.is_set():
                try:
                    if await self.engine.store.take_lease(
                        lease, owner=self.engine.owner, seconds=self.lease_seconds
                    ):
                        while await self.publish_pending() and not stop.is_set():
                            pass
                except Exception:
                    log.exception("publisher %s: pass failed; trying again", self.name)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_seconds)
        finally:
            if self._sink is not None:
                await self._sink.close()
            await asyncio.shield(self.engine.store.release_lease(lease, owner=self.engine.owner))

    async def publish_pending(self, *, runs: int = 100) -> int:
        """One pass: publish what is new in up to ``runs`` runs; the number of events sent."""
        store = self.engine.store
        sink = self._sink = self._sink or (
            _NatsSink(self.spec) if self.spec.kind == "nats" else _RedisSink(self.spec)
        )
        sent = 0
        since = await store.publish_watermark(self.name)
        settled = datetime.now(UTC) - WATERMARK_LAG  # taken before the query, never after it
        backlog = await store.publish_backlog(self.name, limit=runs, since=since)
        for run_id, seq, _ in backlog:
            run = await store.get_run(run_id)
            events = await store.list_events(run_id, after=seq, limit=500)
            if run is None or not events:
                continue
            sent += await self._send(sink, run, events)
            await store.set_publish_cursor(self.name, run_id, events[-1].seq)
        # A short page was everything there was: every run that finished before `settled` is
        # published (one stamped earlier may still be committing, or be on a slower clock).
        if len(backlog) < runs and (since is None or settled > since):
            await store.set_publish_watermark(self.name, settled)
        self.published += sent
        return sent

    async def _send(self, sink: _Sink, run: RunRecord, events: Sequence[EventRecord]) -> int:
        sent = 0
        for event in events:
            if not event.type.startswith(self.spec.types):
                continue
            document = {**event.to_dict(), "workflow": run.workflow, "version": run.version}
            await sink.send(run, event, json.dumps(document, separators=(",", ":"), default=str).encode())
            sent += 1
        return sent

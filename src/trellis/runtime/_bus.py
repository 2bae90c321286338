"""In-process fan-out of persisted events to live subscribers (CLI live view, SSE, WebSocket).

Only events already in the store are published. Events written in this process are published
as soon as their transaction commits; events written by other processes arrive as
notifications (``run id, first seq, last seq`` — PostgreSQL ``LISTEN``) and are read from the
store. Delivery here is best effort and in order per run; a subscriber that must see every
event (an SSE stream) closes any gap by reading the store from the last ``seq`` it sent —
which is also how it resumes after a reconnect (``Last-Event-ID``).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from trellis.store import EventRecord

ALL_RUNS = "*"
"""Subscribe to every run's events."""

Fetch = Callable[[str, int], Awaitable[Sequence[EventRecord]]]
"""``(run id, after seq) -> events`` read from the store."""

_MARKS_KEPT = 10_000


class EventBus:
    """Publish/subscribe of event records, per run or for all runs."""

    def __init__(self, fetch: Fetch | None = None, queue_size: int = 10_000) -> None:
        self._subscribers: dict[str, set[asyncio.Queue[EventRecord | None]]] = defaultdict(set)
        self._queue_size = queue_size
        self._fetch = fetch
        self._marks: OrderedDict[str, int] = OrderedDict()
        self._fills: dict[str, asyncio.Task[None]] = {}
        self._wanted: dict[str, int] = {}
        """Highest ``seq`` announced per run while a fill is running."""

    def _interested(self, run_id: str) -> bool:
        return bool(self._subscribers.get(run_id) or self._subscribers.get(ALL_RUNS))

    def publish(self, events: Sequence[EventRecord]) -> None:
        """Deliver events of one run, in ``seq`` order, that were not delivered yet."""
        if not events or not self._interested(events[0].run_id):
            return
        run_id = events[0].run_id
        mark = self._marks.get(run_id)
        if run_id in self._fills or (mark is not None and events[0].seq > mark + 1):
            self.announce(run_id, events[0].seq, events[-1].seq)  # a gap: read it from the store
            return
        self._dispatch(run_id, events)

    def announce(self, run_id: str, first: int, last: int) -> None:
        """Another process committed events ``first..last`` of ``run_id``: fetch and deliver them."""
        if self._fetch is None or not self._interested(run_id):
            return
        mark = self._marks.get(run_id)
        if mark is not None and last <= mark:
            return
        self._wanted[run_id] = max(self._wanted.get(run_id, 0), last)
        if run_id not in self._fills:
            start = first - 1 if mark is None else mark
            self._fills[run_id] = asyncio.get_running_loop().create_task(self._fill(run_id, start))

    async def _fill(self, run_id: str, after: int) -> None:
        """Read and deliver events after ``after`` until everything announced was delivered."""
        assert self._fetch is not None
        empty_reads = 0
        try:
            while True:
                events = await self._fetch(run_id, after)
                if events:
                    self._dispatch(run_id, events)
                    after = events[-1].seq
                    continue
                # Announcements that arrived during the last read are served by this same task
                # (a second one would race it); stop once nothing announced is missing.
                if self._wanted.get(run_id, 0) <= self._marks.get(run_id, 0) or empty_reads >= 3:
                    return
                empty_reads += 1
                await asyncio.sleep(0.01 * empty_reads)
        finally:
            self._fills.pop(run_id, None)
            self._wanted.pop(run_id, None)

    def _dispatch(self, run_id: str, events: Sequence[EventRecord]) -> None:
        mark = self._marks.get(run_id, 0)
        fresh = [e for e in events if e.seq > mark]
        if not fresh:
            return
        self._marks[run_id] = fresh[-1].seq
        self._marks.move_to_end(run_id)
        while len(self._marks) > _MARKS_KEPT:
            self._marks.popitem(last=False)
        for key in (run_id, ALL_RUNS):
            for queue in self._subscribers.get(key, ()):
                for event in fresh:
                    if queue.full():  # a subscriber that stopped reading: drop its oldest, it can replay
                        queue.get_nowait()
                    queue.put_nowait(event)

    @asynccontextmanager
    async def subscribe(self, run_id: str = ALL_RUNS) -> AsyncIterator[asyncio.Queue[EventRecord | None]]:
        """A queue receiving the run's events from now on, until the context exits."""
        queue: asyncio.Queue[EventRecord | None] = asyncio.Queue(self._queue_size)
        self._subscribers[run_id].add(queue)
        try:
            yield queue
        finally:
            self._subscribers[run_id].discard(queue)
            if not self._subscribers[run_id]:
                del self._subscribers[run_id]

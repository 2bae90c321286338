"""Workers: claim queued runs under leases and execute them, many at once.

A worker claims as many runs as it has free slots (priority first, then oldest), executes each
in its own task, and goes back to claiming when a slot frees or when it is told runs were
queued: in-process by the engine's wake-up event, across processes by PostgreSQL ``NOTIFY``.
Polling is only the fallback for missed signals (and, on SQLite, for runs queued by other
processes), so no polling interval caps throughput or adds latency.

Stopping is graceful: the worker stops claiming, asks every run it executes to stop at its
next step boundary (their checkpoints are written; they go back to ``queued`` for another
worker), and hands back the lease of any run that does not stop within the grace period.

Example::

    async with Engine.open(settings) as engine:
        worker = Worker(engine, concurrency=8)
        task = asyncio.create_task(worker.run())
        ...
        await worker.stop(grace_seconds=10)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

from trellis.runtime import Engine
from trellis.runtime._execute import SHUTDOWN, LeaseLost
from trellis.store import RunRecord

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
"""Fallback poll when no wake-up signal arrives."""


class Worker:
    """Claims and executes runs for one engine (one process)."""

    def __init__(self, engine: Engine, *, concurrency: int = 8, poll_seconds: float = POLL_SECONDS) -> None:
        if concurrency < 1:
            raise ValueError(f"a worker needs at least one slot, got concurrency={concurrency}")
        self.engine = engine
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._stop = asyncio.Event()
        self._stopped = asyncio.Event()
        self._running = False
        self._grace = 30.0
        self._slot_freed = asyncio.Event()
        self.claimed = 0
        """Runs claimed since start (for tests and metrics)."""

    def __repr__(self) -> str:
        return f"Worker(id={self.engine.owner!r}, concurrency={self.concurrency}, running={len(self.tasks)})"

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def request_stop(self) -> None:
        """Stop claiming; :meth:`run` then drains and returns."""
        self._stop.set()

    async def stop(self, grace_seconds: float = 30.0) -> None:
        """Request a stop and wait until running runs stopped or were handed back."""
        self._grace = grace_seconds
        self.request_stop()
        if self._running:
            await self._stopped.wait()

    async def run(self, grace_seconds: float = 30.0) -> None:
        """Claim and execute runs until :meth:`request_stop`; then drain."""
        self._grace = grace_seconds
        self._running = True
        self._stopped.clear()
        store = self.engine.store
        await self._beat(started=True)
        beat = asyncio.create_task(self._heartbeat(), name="trellis-worker-heartbeat")
        try:
            while not self.stopping:
                self.engine.wakeup.clear()
                self._slot_freed.clear()
                free = self.concurrency - len(self.tasks)
                claimed: list[RunRecord] = []
                if free > 0:
                    claimed = await store.claim_runs(
                        owner=self.engine.owner, limit=free, lease_seconds=self.engine.executor.lease_seconds
                    )
                for run in claimed:
                    self._start(run)
                if claimed and len(claimed) == free:
                    continue  # every slot filled: more may be waiting once one frees
                await self._idle()
        finally:
            await self._drain()
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
            with contextlib.suppress(Exception):
                await store.remove_worker(self.engine.owner)
            self._running = False
            self._stopped.set()

    def _start(self, run: RunRecord) -> None:
        self.claimed += 1
        task = asyncio.create_task(self._execute(run), name=f"run-{run.id}")
        self.tasks[run.id] = task

    async def _execute(self, run: RunRecord) -> None:
        try:
            await self.engine.executor.run_claimed(run)
        except LeaseLost as exc:
            log.warning("%s", exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("run %s: execution failed outside the workflow", run.id)
        finally:
            self.tasks.pop(run.id, None)
            self._slot_freed.set()

    async def _idle(self) -> None:
        """Wait for a wake-up, a free slot, a stop request, or the poll interval."""
        waiters = [
            asyncio.ensure_future(self.engine.wakeup.wait()),
            asyncio.ensure_future(self._stop.wait()),
        ]
        if len(self.tasks) >= self.concurrency:
            waiters.append(asyncio.ensure_future(self._slot_freed.wait()))
            waiters = [w for w in waiters if w is not waiters[0]] + [waiters[0]]
        # Nothing signals a lease that expires (its worker died): look at least four times per
        # lease period, so a dead worker's runs are resumed within about a lease of its death.
        timeout = min(self.poll_seconds, self.engine.executor.lease_seconds / 4)
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _drain(self) -> None:
        """Ask every run this worker executes to stop at its next step boundary, then wait."""
        executions = [self.engine.executor.active.get(run_id) for run_id in self.tasks]
        for execution in executions:
            if execution is not None:
                execution.pause(SHUTDOWN)
        if not self.tasks:
            return
        _, pending = await asyncio.wait(list(self.tasks.values()), timeout=self._grace)
        for run_id, task in list(self.tasks.items()):
            if task in pending:
                execution = self.engine.executor.active.get(run_id)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                if execution is not None:  # hand it back so another worker resumes it at once
                    await self.engine.store.release_run(run_id, execution.token)

    async def _beat(self, *, started: bool = False) -> None:
        await self.engine.store.beat_worker(
            worker_id=self.engine.owner,
            host=socket.gethostname(),
            pid=os.getpid(),
            concurrency=self.concurrency,
            running=len(self.tasks),
            draining=self.stopping,
            started=started,
        )

    async def _heartbeat(self) -> None:
        interval = self.engine.executor.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self._beat()
            except Exception:
                log.warning("worker heartbeat failed", exc_info=True)


__all__ = ["Worker"]

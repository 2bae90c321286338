"""Webhooks out: POST a run's final document (and, if asked, each event) to its callback URL.

A run names its callback when it is created (``POST /v1/runs`` ``"callback": {"url": ...}``);
the ``callbacks`` row records how far its deliveries got. The dispatcher finds, in the store,
callbacks whose run has events beyond that point — it never depends on the process that
executed the run — and delivers them in ``seq`` order:

* the event itself when the callback asked for ``events``;
* the run document when the event ended the run (``run.succeeded|failed|cancelled``);

then moves ``delivered_seq`` on. A failed POST (no answer, or not 2xx) is retried with
exponential backoff; after ``max_attempts`` the delivery is given up and the next one goes
ahead. Every attempt is recorded (``GET /v1/runs/{id}/deliveries``).

Each POST carries ``X-Trellis-Delivery: <run_id>:<seq>:<run|event>`` (stable across retries,
for deduplication: delivery is *at least once*), ``X-Trellis-Event`` and, when a secret is
configured, ``X-Trellis-Signature: sha256=<hex HMAC-SHA256 of the body>``. Only the process
holding the ``dispatcher`` lease delivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import httpx

from trellis.errors import WorkflowError
from trellis.runtime import Engine
from trellis.store import CallbackRecord, EventRecord
from trellis.triggers._specs import read_secret
from trellis.triggers._webhooks import sign

log = logging.getLogger("trellis.triggers")

FINAL_EVENTS: Final = frozenset({"run.succeeded", "run.failed", "run.cancelled"})


@dataclass
class CallbackDispatcher:
    """Delivers due callbacks; see the module docstring."""

    engine: Engine
    secret: str | None = None
    """Secret reference signing callbacks that name none themselves (``[callbacks] secret``)."""
    max_attempts: int = 8
    initial_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 300.0
    timeout_seconds: float = 10.0
    poll_seconds: float = 1.0
    lease_seconds: float = 15.0
    client: httpx.AsyncClient | None = field(default=None, repr=False)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver while holding the ``dispatcher`` lease, until ``stop`` is set."""
        client = self.client or httpx.AsyncClient(timeout=self.timeout_seconds)
        try:
            while not stop.is_set():
                try:
                    if await self.engine.store.take_lease(
                        "dispatcher", owner=self.engine.owner, seconds=self.lease_seconds
                    ):
                        await self.dispatch_due(client)
                except Exception:
                    log.exception("callback dispatcher pass failed; trying again")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_seconds)
        finally:
            if self.client is None:
                await client.aclose()
            await asyncio.shield(self.engine.store.release_lease("dispatcher", owner=self.engine.owner))

    async def dispatch_due(self, client: httpx.AsyncClient) -> int:
        """One pass over the due callbacks; the number of successful deliveries."""
        delivered = 0
        for callback in await self.engine.store.due_callbacks():
            delivered += await self._deliver(client, callback)
        return delivered

    async def _deliver(self, client: httpx.AsyncClient, callback: CallbackRecord) -> int:
        store = self.engine.store
        delivered = 0
        for event in await store.list_events(callback.run_id, after=callback.delivered_seq, limit=100):
            for kind, body in await self._bodies(callback, event):
                ok = await self._post(client, callback, event, kind, body)
                if not ok and callback.attempts + 1 < self.max_attempts:
                    delay = min(self.initial_backoff_seconds * 2**callback.attempts, self.max_backoff_seconds)
                    await store.progress_callback(
                        callback.run_id,
                        delivered_seq=callback.delivered_seq,
                        attempts=callback.attempts + 1,
                        next_attempt_at=datetime.now(UTC) + timedelta(seconds=delay),
                    )
                    return delivered
                if not ok:
                    log.warning(
                        "run %s: giving up the %s delivery of event %d to %s after %d attempts",
                        callback.run_id,
                        kind,
                        event.seq,
                        callback.url,
                        self.max_attempts,
                    )
                delivered += int(ok)
                callback = _replace(callback, attempts=0)
            await store.progress_callback(
                callback.run_id, delivered_seq=event.seq, attempts=0, next_attempt_at=None
            )
            callback = _replace(callback, delivered_seq=event.seq, attempts=0)
        return delivered

    async def _bodies(self, callback: CallbackRecord, event: EventRecord) -> list[tuple[str, bytes]]:
        bodies: list[tuple[str, Any]] = []
        if callback.events:
            bodies.append(("event", event.to_dict()))
        if event.type in FINAL_EVENTS:
            run = await self.engine.store.get_run(callback.run_id)
            if run is not None:
                bodies.append(("run", run.to_dict()))
        return [(kind, json.dumps(doc, separators=(",", ":"), default=str).encode()) for kind, doc in bodies]

    async def _post(
        self, client: httpx.AsyncClient, callback: CallbackRecord, event: EventRecord, kind: str, body: bytes
    ) -> bool:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "trellis-callbacks",
            "X-Trellis-Delivery": f"{callback.run_id}:{event.seq}:{kind}",
            "X-Trellis-Event": event.type,
        }
        status: int | None = None
        error: str | None = None
        started = time.monotonic()
        try:
            reference = callback.secret or self.secret
            if reference:
                headers["X-Trellis-Signature"] = sign(
                    read_secret(reference, f"run {callback.run_id} callback"), body
                )
            response = await client.post(
                callback.url, content=body, headers=headers, timeout=self.timeout_seconds
            )
            status = response.status_code
            if not response.is_success:
                error = f"HTTP {status}: {response.text[:200]}"
        except WorkflowError as exc:
            error = exc.message
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        await self.engine.store.record_delivery(
            callback.run_id,
            seq=event.seq,
            kind=kind,
            url=callback.url,
            attempt=callback.attempts + 1,
            ok=error is None,
            status_code=status,
            error=error,
            duration_ms=(time.monotonic() - started) * 1000,
        )
        return error is None


def _replace(callback: CallbackRecord, **changes: Any) -> CallbackRecord:
    from dataclasses import replace

    return replace(callback, **changes)

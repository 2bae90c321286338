"""``trellis runs events RUN --follow``: print a run's events as they happen.

With ``--server URL`` it follows the API's SSE stream, reconnecting with ``Last-Event-ID``
after a dropped connection, so every event is printed once and in order; without, it tails the
configured database directly. Either way it stops once the run finished (succeeded, failed,
cancelled) and keeps waiting while the run is parked.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from trellis.cli._common import EXIT_FAILED, EXIT_INVALID, err_console, fail

TERMINAL_EVENTS: Final = frozenset({"run.succeeded", "run.failed", "run.cancelled"})
TERMINAL_STATUSES: Final = frozenset({"succeeded", "failed", "cancelled"})
MAX_FAILURES: Final = 30
"""Consecutive failed connection attempts before giving up (about 2.5 minutes of backoff)."""


@dataclass
class SseFrame:
    """One dispatched Server-Sent Events frame."""

    id: str | None = None
    event: str = "message"
    data: list[str] = field(default_factory=list)


async def sse_frames(lines: AsyncIterator[str]) -> AsyncIterator[SseFrame]:
    """Parse SSE lines into frames (comments and ``retry:`` are skipped)."""
    frame = SseFrame()
    async for line in lines:
        if not line:
            if frame.data:
                yield frame
            frame = SseFrame()
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            frame.id = value
        elif name == "event":
            frame.event = value
        elif name == "data":
            frame.data.append(value)


async def follow_http(
    server: str,
    run_id: str,
    on_event: Callable[[dict[str, Any]], None],
    *,
    api_key: str | None = None,
    after: int = 0,
    retry_seconds: float = 0.2,
) -> None:
    """Print (via ``on_event``) every event of ``run_id`` after ``after`` until the run finished."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    last, failures, delay = after, 0, retry_seconds
    timeout = httpx.Timeout(10.0, read=None)
    async with httpx.AsyncClient(base_url=server.rstrip("/"), headers=headers, timeout=timeout) as client:
        while True:
            received, last_type = 0, None
            try:
                async with client.stream(
                    "GET", f"/v1/runs/{run_id}/stream", headers={"Last-Event-ID": str(last)}
                ) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        _refused(response)
                    failures, delay = 0, retry_seconds
                    async for frame in sse_frames(response.aiter_lines()):
                        event = json.loads("\n".join(frame.data))
                        if event["seq"] <= last:
                            continue
                        on_event(event)
                        last, last_type, received = event["seq"], event["type"], received + 1
                if last_type in TERMINAL_EVENTS or received == 0:
                    run = await client.get(f"/v1/runs/{run_id}")
                    if run.status_code < 400 and run.json().get("status") in TERMINAL_STATUSES:
                        return
            except httpx.TransportError as exc:
                failures += 1
                if failures >= MAX_FAILURES:
                    fail(f"lost {server} and could not reconnect: {exc}", EXIT_FAILED)
                err_console.print(f"[dim]connection lost ({type(exc).__name__}); resuming after {last}[/]")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def _refused(response: httpx.Response) -> None:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    fail(f"{response.status_code}: {detail}", EXIT_INVALID if response.status_code < 500 else EXIT_FAILED)


async def follow_store(
    database_url: str, run_id: str, on_event: Callable[[dict[str, Any]], None], *, after: int = 0
) -> None:
    """Tail the run's events in the database until the run finished (polling every 0.2 s)."""
    from trellis.store import open_store

    store = await open_store(database_url)
    try:
        last = after
        while True:
            run = await store.get_run(run_id)
            if run is None:
                fail(f"no run with id {run_id!r}", EXIT_INVALID)
            for event in await store.list_events(run_id, after=last):
                on_event(event.to_dict())
                last = event.seq
            if run.status.terminal and last >= run.last_seq:
                return
            await asyncio.sleep(0.2)
    finally:
        await store.close()


async def list_http(
    server: str, run_id: str, on_event: Callable[[dict[str, Any]], None], *, api_key: str | None, after: int
) -> None:
    """Print the events stored so far, page by page (``GET /v1/runs/{id}/events``)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(base_url=server.rstrip("/"), headers=headers, timeout=30) as client:
        while True:
            response = await client.get(f"/v1/runs/{run_id}/events", params={"after": after})
            if response.status_code >= 400:
                _refused(response)
            page = response.json()
            for event in page["events"]:
                on_event(event)
            if page["next_after"] is None:
                return
            after = page["next_after"]


def follow_events(
    run_id: str, *, after: int, as_json: bool, server: str | None, api_key: str | None, follow: bool
) -> None:
    """``trellis runs events RUN [--follow] [--server URL]``: print the events (until the run finished)."""
    from trellis.cli._common import STATE, console, print_json, run_async

    def show(event: dict[str, Any]) -> None:
        if as_json:
            print(json.dumps(event, ensure_ascii=False), flush=True)
            return
        node = f" {event['node']}" if event.get("node") else ""
        attempt = f" #{event['attempt']}" if event.get("attempt") else ""
        ts = (event.get("ts") or "")[11:26]
        console.print(f"{event['seq']:>5} {ts} {event['type']}{node}{attempt}", highlight=False)

    if server and not follow:
        collected: list[dict[str, Any]] = []
        run_async(
            lambda: list_http(
                server, run_id, collected.append if as_json else show, api_key=api_key, after=after
            )
        )
        if as_json:
            print_json(collected)  # the same JSON array as without --server
    elif server:
        run_async(lambda: follow_http(server, run_id, show, api_key=api_key, after=after))
    else:
        run_async(lambda: follow_store(STATE.settings().database_url, run_id, show, after=after))

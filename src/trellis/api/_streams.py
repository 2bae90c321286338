"""Live event streams: SSE (``/v1/runs/{id}/stream``) and WebSocket (``/v1/runs/{id}/ws``, ``/ws``).

Both deliver every event of a run exactly once and in ``seq`` order, across reconnects
(DESIGN §5). :func:`follow` does it the same way for both:

1. subscribe to the engine's event bus *first*, so nothing committed from now on is missed;
2. replay the store from the client's position (``Last-Event-ID`` or ``?after=``);
3. forward live events, skipping any ``seq`` already sent; a jump in ``seq`` (an event the live
   feed dropped) or an idle ``stream_poll_seconds`` sends it back to the store, which is the
   source of truth — so a stream stays complete even where no live notification reaches this
   process.

A stream ends once the run is finished (succeeded, failed, cancelled) and its last event has been
sent; it stays open while the run is parked (``waiting``, ``paused``), which will continue.

SSE frames are ``id: <seq>``, ``event: <type>``, ``data: <event JSON>``; an idle stream sends
``: keep-alive`` comments every ``keep_alive_seconds`` (15 s by default). WebSocket messages
are the event documents as JSON; the socket closes with 1000 when the run finished, or with
``4000 + status`` after a problem message (4404 unknown run, 4403 role, 4401 key).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Header, Query, WebSocket, WebSocketDisconnect
from starlette.responses import StreamingResponse

from trellis.api._access import caller, require
from trellis.api._app import ApiContext, context
from trellis.api._problems import json_default
from trellis.auth import Forbidden, Permission
from trellis.errors import ValidationError, WorkflowError
from trellis.store import EventRecord, RunRecord

router = APIRouter(tags=["streams"])
log = logging.getLogger("trellis.api")

TERMINAL_EVENTS: Final = frozenset({"run.succeeded", "run.failed", "run.cancelled"})
REPLAY_PAGE: Final = 500


async def _run_now(ctx: ApiContext, run_id: str) -> RunRecord:
    # Shielded: a client that hangs up after the terminal frame cancels this stream, and a
    # cancelled query in flight makes psycopg close its pooled connection.
    return await asyncio.shield(ctx.engine.get_run(run_id))


async def first_page(ctx: ApiContext, run_id: str, after: int) -> list[EventRecord]:
    """The first events a stream replays; raises ``NotFound`` (before any answer) for no such run.

    Read before the run itself: a run that has events exists, so the common case costs one query.
    """
    page = await ctx.engine.store.list_events(run_id, after=after, limit=REPLAY_PAGE)
    if not page:
        await ctx.engine.get_run(run_id)
    return page


async def follow(
    ctx: ApiContext, run_id: str, after: int, replayed: list[EventRecord] | None = None
) -> AsyncIterator[EventRecord | None]:
    """Events of ``run_id`` with ``seq > after``, each once and in order, until the run finished.

    ``replayed``: the first page of the replay, already read (:func:`first_page`). Yields
    ``None`` whenever ``stream_poll_seconds`` passed without an event, so the caller can send
    keep-alives. Ends early when the server shuts down (:meth:`ApiContext.close_streams`).
    """
    subscribers = ctx.engine.instruments.stream_subscribers
    subscribers.inc()
    try:
        async for item in _follow(ctx, run_id, after, replayed):
            yield item
    finally:
        subscribers.dec()


async def _follow(
    ctx: ApiContext, run_id: str, after: int, replayed: list[EventRecord] | None
) -> AsyncIterator[EventRecord | None]:
    engine, store = ctx.engine, ctx.engine.store
    last = after
    async with engine.bus.subscribe(run_id) as live:
        replay, reread_after = True, None
        while not ctx.closing.is_set():
            if replay:
                while True:
                    if replayed is not None:
                        page, replayed = replayed, None
                    else:
                        page = await store.list_events(run_id, after=last, limit=REPLAY_PAGE)
                    for event in page:
                        yield event
                        last = event.seq
                    if len(page) < REPLAY_PAGE:
                        break
                run = await _run_now(ctx, run_id)
                if run.last_seq > last and last != reread_after:
                    # Written since that page was read (perhaps before the live feed began). A
                    # re-read that finds nothing means the gap is gone for good (pruned events).
                    reread_after = last
                    continue
                if run.status.terminal:
                    return
                replay = False
            try:
                async with asyncio.timeout(ctx.settings.stream_poll_seconds):
                    received = await live.get()
            except TimeoutError:
                replay = True
                yield None
                continue
            if received is None or received.seq <= last:
                continue
            if received.seq > last + 1:
                replay = True  # the live feed skipped something: the store has it
                continue
            yield received
            last = received.seq
            if received.type in TERMINAL_EVENTS:
                run = await _run_now(ctx, run_id)
                if run.status.terminal and run.last_seq <= last:
                    return


def sse_frame(event: EventRecord) -> str:
    """``id``, ``event`` and ``data`` lines of one event (the JSON is a single line)."""
    data = json.dumps(event.to_dict(), default=json_default, ensure_ascii=False, separators=(",", ":"))
    return f"id: {event.seq}\nevent: {event.type}\ndata: {data}\n\n"


def _resume_point(last_event_id: str | None, after: int) -> int:
    if last_event_id is None or not last_event_id.strip():
        return after
    value = last_event_id.strip()
    if not value.isdigit():
        raise ValidationError(
            f"Last-Event-ID must be the seq of the last event received (an integer >= 0), not {value!r}",
            details={"location": "header.last-event-id"},
        )
    return int(value)


@router.get(
    "/v1/runs/{run_id}/stream",
    summary="Follow a run's events (Server-Sent Events)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "SSE frames"}},
    dependencies=[require(Permission.READ)],
)
async def stream(
    run_id: str,
    ctx: Annotated[ApiContext, Depends(context)],
    after: Annotated[int, Query(ge=0, description="Resume after this seq (Last-Event-ID wins).")] = 0,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Replays from ``Last-Event-ID`` (or ``?after=``), then tails live; ends after the run finished."""
    start = _resume_point(last_event_id, after)
    replayed = await first_page(ctx, run_id, start)  # 404 before the stream starts
    keep_alive = ctx.settings.keep_alive_seconds

    async def frames() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        yield "retry: 1000\n\n"
        written = loop.time()
        async for event in follow(ctx, run_id, start, replayed):
            if event is not None:
                yield sse_frame(event)
                written = loop.time()
            elif loop.time() - written >= keep_alive:
                yield ": keep-alive\n\n"
                written = loop.time()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(frames(), media_type="text/event-stream", headers=headers)


async def _send_events(websocket: WebSocket, ctx: ApiContext, run_id: str, after: int) -> None:
    try:
        if not caller(websocket).can(Permission.READ):
            raise Forbidden(f"{caller(websocket).name!r} may not read runs")
        replayed = await first_page(ctx, run_id, after)
        async for event in follow(ctx, run_id, after, replayed):
            if event is not None:
                await websocket.send_text(json.dumps(event.to_dict(), default=json_default))
    except WorkflowError as exc:
        await websocket.send_text(json.dumps(exc.to_problem(instance=websocket.url.path)))
        await websocket.close(4000 + exc.status, exc.message[:120])
        return
    await websocket.close(1000, "run finished" if not ctx.closing.is_set() else "server shutting down")


async def _serve_socket(websocket: WebSocket, ctx: ApiContext, run_id: str | None, after: int) -> None:
    """Send events until the run finished, while noticing the client going away."""
    await websocket.accept()
    if run_id is None:  # /ws without ?run=: the first message says what to follow
        try:
            message = json.loads(await websocket.receive_text())
            run_id, after = str(message["subscribe"]), int(message.get("after", 0))
        except (ValueError, KeyError, TypeError):
            problem = {"status": 422, "detail": 'expected {"subscribe": "<run id>", "after": <seq>}'}
            await websocket.send_text(json.dumps(problem))
            await websocket.close(4422, "expected a subscribe message")
            return
        except WebSocketDisconnect:
            return
    sender = asyncio.create_task(_send_events(websocket, ctx, run_id, after))
    listener = asyncio.create_task(_drain(websocket))
    try:
        await asyncio.wait({sender, listener}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sender, listener):
            task.cancel()
        for outcome in await asyncio.gather(sender, listener, return_exceptions=True):
            # A client that went away mid-send surfaces here as a disconnect or an OSError.
            if isinstance(outcome, Exception) and not isinstance(outcome, WebSocketDisconnect | OSError):
                log.warning("WebSocket stream of run %s ended with %r", run_id, outcome)


async def _drain(websocket: WebSocket) -> None:
    """Read (and ignore) client messages until it disconnects."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


@router.websocket("/v1/runs/{run_id}/ws")
async def run_socket(
    websocket: WebSocket,
    run_id: str,
    ctx: Annotated[ApiContext, Depends(context)],
    after: Annotated[int, Query(ge=0)] = 0,
) -> None:
    """A run's events as JSON messages: replay after ``after``, then live, until it finished."""
    await _serve_socket(websocket, ctx, run_id, after)


@router.websocket("/ws")
async def socket(
    websocket: WebSocket,
    ctx: Annotated[ApiContext, Depends(context)],
    run: Annotated[str | None, Query()] = None,
    after: Annotated[int, Query(ge=0)] = 0,
) -> None:
    """``/ws?run=<id>&after=<seq>``, or send ``{"subscribe": "<id>", "after": <seq>}`` first."""
    await _serve_socket(websocket, ctx, run, after)

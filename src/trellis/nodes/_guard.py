"""Calls guarded by a shared circuit breaker, with their outcomes reported.

:func:`guarded` is what ``agent`` and ``http`` nodes wrap their calls in: ask the breaker
(an open circuit raises ``CircuitOpen`` at once, without touching the network), make the call,
and report how it went, both to the breaker and to whoever watches the target's health.
Breaker transitions the call caused become events of the run, besides the store's own record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from trellis.errors import TimeoutExceeded, WorkflowError
from trellis.nodes._context import NodeContext, emit
from trellis.nodes._env import BuildEnv
from trellis.resilience import BreakerPolicy, counts_as_failure
from trellis.store import SystemEvent

T = TypeVar("T")

Observer = Callable[[bool, float | None, str | None], None]
"""``(ok, latency_ms, error) -> None``: told the outcome of every call made."""


def _announce(ctx: NodeContext, events: Sequence[SystemEvent]) -> None:
    for event in events:
        emit(event.type, ctx.node, ctx.attempt, **event.data)


async def guarded(
    ctx: NodeContext,
    env: BuildEnv,
    key: str,
    policy: BreakerPolicy | None,
    call: Callable[[], Awaitable[T]],
    observe: Observer | None = None,
) -> T:
    """Run ``call`` under breaker ``key`` (unguarded when there is no board or no policy)."""
    board = env.breakers
    if board is None or policy is None:
        return await call()
    admission, events = await board.admit(key, policy)
    _announce(ctx, events)
    started = time.perf_counter()

    async def report(error: BaseException | None) -> None:
        elapsed = (time.perf_counter() - started) * 1000
        if error is None:
            _announce(ctx, await board.succeeded(admission))
            if observe is not None:
                observe(True, elapsed, None)
        elif isinstance(error, WorkflowError) and counts_as_failure(error):
            _announce(ctx, await board.failed(admission, error))
            if observe is not None:
                observe(False, None, f"{error.name}: {error.message}")
        else:  # the target answered; the mistake was the caller's
            _announce(ctx, await board.succeeded(admission))
            if observe is not None:
                observe(True, elapsed, None)

    async def settle(error: BaseException | None) -> None:
        # A call cut short: the node's timeout is the target's failure, a cancellation is not.
        if isinstance(error, TimeoutExceeded):
            await report(error)
        else:
            await board.abandoned(admission)

    try:
        result = await call()
    except asyncio.CancelledError:
        ctx.defer_outcome(settle)
        raise
    except Exception as exc:
        await report(exc)
        raise
    await report(None)
    return result

"""The event loop Trellis's processes run on: uvloop's, unless ``TRELLIS_EVENT_LOOP=asyncio``.

uvloop (libuv) schedules callbacks, timers and socket I/O in C; a run through the service spends
a large share of its CPU in the event loop's own machinery (tasks, futures, ``select``), so
``trellis serve`` and ``trellis worker`` do measurably more runs per second on it. Setting
``TRELLIS_EVENT_LOOP=asyncio`` selects the standard library's loop, e.g. to rule uvloop out
when chasing a problem.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

T = TypeVar("T")

ENV: Final = "TRELLIS_EVENT_LOOP"
CHOICES: Final = ("uvloop", "asyncio")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """What creates the event loop, per ``TRELLIS_EVENT_LOOP`` (default ``uvloop``)."""
    choice = os.environ.get(ENV, "uvloop").strip().lower() or "uvloop"
    if choice not in CHOICES:
        raise ValueError(f"{ENV}={choice!r} is not one of {', '.join(CHOICES)}")
    if choice == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the loop :func:`loop_factory` chooses."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


def freeze_startup_heap() -> None:
    """Move every object alive now out of the garbage collector's sight (``gc.freeze``).

    Called once a long-running process (``serve``, ``worker``) has started: the modules, the
    compiled graphs and the app are alive for good, and without this each full collection
    walks all of them again (~200,000 objects) while serving, which cost ~12% of the CPU of a
    run. Objects created later are collected as usual.
    """
    gc.collect()
    gc.freeze()

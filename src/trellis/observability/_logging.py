"""Structured JSON logs for the service processes (``trellis serve``, ``trellis worker``).

One JSON object per line on stderr, from structlog and from the standard library alike
(uvicorn, httpx, Trellis's own ``logging`` calls), each with ``timestamp`` (UTC, ISO 8601),
``level``, ``logger``, ``event`` (the message) and whatever is bound to structlog's context —
while a node runs that is ``run_id``, ``node`` and ``attempt`` (see
:func:`trellis.nodes._logs.node_scope`), while a run executes ``run_id`` and ``workflow``.

Example line::

    {"event": "fetched 3 rows", "level": "info", "logger": "myproject.tools",
     "run_id": "0193…", "node": "fetch", "attempt": 1, "timestamp": "2026-11-24T10:00:00.1Z"}
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from structlog.typing import Processor

from trellis.nodes._logs import install_capture


def _shared() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(allow={"trellis_data"}),
    ]


def _flatten_data(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    data = event.pop("trellis_data", None)  # ctx.log(..., **fields) — put the fields at top level
    if isinstance(data, dict):
        for key, value in data.items():
            event.setdefault(key, value)
    return event


def configure_logging(level: str = "info", *, json: bool = True) -> None:
    """Route structlog and ``logging`` through one JSON renderer on stderr; capture node logs.

    Args:
        level: the root level (``debug``, ``info``, ``warning``, ...). Python ``logging`` lines
            a node's code emits are stored with the run only if they pass this level;
            ``ctx.log`` lines always are.
        json: JSON lines (the default); ``False`` renders for a terminal.

    Calling it again replaces the previous configuration.

    .. versionadded:: 0.1
    """
    shared = _shared()
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    renderer: Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _flatten_data,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.set_name("trellis-json")
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "trellis-json":
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    install_capture()

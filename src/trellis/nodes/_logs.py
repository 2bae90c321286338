"""A node's log lines: captured while it runs and handed to the run's services to be stored.

While a node attempt runs, :func:`node_scope` sets a context variable naming the run, the node
and the attempt (and binds the same to structlog's context, so the process's own JSON logs carry
them too). Two things write into it:

* ``ctx.log(...)`` / ``ctx.logger.info(...)`` on the :class:`~trellis.nodes.NodeContext`:
  always stored, whatever the process's log level;
* Python ``logging`` calls made by the node's code — a tool, a library it calls — that pass the
  logger's level: :func:`install_capture` hooks the log-record factory, so every record made
  inside a node's scope is stored (structlog calls routed through ``logging`` too). The
  context variable follows the code into asyncio tasks it creates and into
  ``asyncio.to_thread``, so tools running in a worker thread are captured too; a thread started
  by hand (``threading.Thread``) is not.

Lines are buffered in memory and written with the run's next batch of events, never on the
node's hot path.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import structlog

NODE_LOGGER: Final = "trellis.node"
"""The Python logger ``ctx.log`` also writes to (so the process's own logs show the line)."""
MAX_MESSAGE_CHARS: Final = 8000
"""A longer message is cut (with ``…``): a log line is not a place for payloads."""

_STRUCTLOG_KEYS: Final = frozenset(
    {
        "event",
        "level",
        "logger",
        "timestamp",
        "run_id",
        "node",
        "attempt",
        "workflow",
        "_record",
        "_from_structlog",
    }
)
"""Keys of a structlog event dict that are not the caller's own fields."""

LogSink = Callable[[dict[str, Any]], None]
"""Takes one line: ``{ts, level, message, node, attempt, logger, data}``."""


@dataclass(frozen=True, slots=True)
class NodeScope:
    """The node attempt running in this context, and where its lines go."""

    run_id: str
    node: str
    attempt: int
    sink: LogSink


_SCOPE: ContextVar[NodeScope | None] = ContextVar("trellis_node_scope", default=None)
_STORING: ContextVar[bool] = ContextVar("trellis_node_log_storing", default=False)


def current_scope() -> NodeScope | None:
    """The node attempt running in this context, if any."""
    return _SCOPE.get()


@contextlib.contextmanager
def node_scope(run_id: str, node: str, attempt: int, sink: LogSink) -> Iterator[NodeScope]:
    """Capture log lines as ``node``'s (attempt ``attempt``) until the block ends."""
    scope = NodeScope(run_id, node, attempt, sink)
    token = _SCOPE.set(scope)
    try:
        with structlog.contextvars.bound_contextvars(run_id=run_id, node=node, attempt=attempt):
            yield scope
    finally:
        _SCOPE.reset(token)


def _line(
    scope: NodeScope, level: str, message: str, logger: str | None, data: Mapping[str, Any] | None
) -> dict[str, Any]:
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    return {
        "ts": datetime.now(UTC),
        "level": level,
        "message": message,
        "node": scope.node,
        "attempt": scope.attempt,
        "logger": logger,
        "data": _jsonable(data) if data else None,
    }


def _jsonable(data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        out[str(key)] = value if isinstance(value, str | int | float | bool | type(None)) else repr(value)
    return out


def log_line(level: str, message: str, **data: Any) -> None:
    """Store a line for the node running in this context (``ctx.log``); also logs it to Python."""
    level = level.lower()
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}: use debug, info, warning, error or critical")
    scope = _SCOPE.get()
    if scope is not None:
        scope.sink(_line(scope, level, message, NODE_LOGGER, data))
    token = _STORING.set(True)  # stored above: the capture must not store it again
    try:
        logging.getLogger(NODE_LOGGER).log(numeric, message, extra={"trellis_data": data})
    finally:
        _STORING.reset(token)


class NodeLogger:
    """``ctx.logger``: ``debug``/``info``/``warning``/``error``/``exception`` store node log lines.

    Messages are plain strings with keyword fields (``ctx.logger.info("fetched", rows=3)``), as
    in structlog; they are stored whatever the process's log level.
    """

    def debug(self, message: str, **data: Any) -> None:
        log_line("debug", message, **data)

    def info(self, message: str, **data: Any) -> None:
        log_line("info", message, **data)

    def warning(self, message: str, **data: Any) -> None:
        log_line("warning", message, **data)

    def error(self, message: str, **data: Any) -> None:
        log_line("error", message, **data)

    def exception(self, message: str, **data: Any) -> None:
        """An error line with the exception being handled (its type and message)."""
        import sys

        exc = sys.exc_info()[1]
        if exc is not None:
            data = {**data, "exception": f"{type(exc).__name__}: {exc}"}
        log_line("error", message, **data)

    def __repr__(self) -> str:
        scope = _SCOPE.get()
        return f"NodeLogger(node={scope.node if scope else None!r})"


def _capture(record: logging.LogRecord) -> None:
    """Store ``record`` as a line of the node running in this context, if any."""
    scope = _SCOPE.get()
    if scope is None or _STORING.get() or not isinstance(record.levelno, int) or not record.name:
        return  # outside a node, stored already, or a blank made by logging.makeLogRecord
    try:
        data: dict[str, Any] | None = None
        if isinstance(record.msg, dict) and "event" in record.msg:
            # A structlog call routed through logging (ProcessorFormatter.wrap_for_formatter):
            # the event is the message, its other keys (but the bound context) the fields.
            message = str(record.msg["event"])
            data = {k: v for k, v in record.msg.items() if k not in _STRUCTLOG_KEYS} or None
        else:
            message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            data = {**(data or {}), "exception": f"{type(exc).__name__}: {exc}"}
        level = record.levelname.lower()
        scope.sink(_line(scope, "warning" if level == "warn" else level, message, record.name, data))
    except Exception:  # never let logging break the node
        return


def install_capture() -> None:
    """Capture Python log records made inside a node's scope (once per process).

    The capture wraps the log-record factory rather than adding a handler: a record is made only
    once its logger's level let it through, and the process's handlers stay as they were (no
    handler on the root logger, so ``logging.basicConfig`` and the last-resort stderr output
    behave as without Trellis).
    """
    factory = logging.getLogRecordFactory()
    if getattr(factory, "trellis_capture", False):
        return

    def capturing(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        _capture(record)
        return record

    capturing.trellis_capture = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(capturing)

"""Shared CLI plumbing: configuration, exit codes, JSON output, error reporting."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from trellis.config import Settings
from trellis.errors import DefinitionError, NotFound, WorkflowError
from trellis.types import RunStatus

if TYPE_CHECKING:
    from trellis.runtime import Engine
    from trellis.store import RunRecord, Store

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_WAITING = 3
EXIT_CANCELLED = 4

STATUS_EXIT = {
    RunStatus.SUCCEEDED: EXIT_OK,
    RunStatus.FAILED: EXIT_FAILED,
    RunStatus.WAITING: EXIT_WAITING,
    RunStatus.PAUSED: EXIT_WAITING,
    RunStatus.QUEUED: EXIT_WAITING,
    RunStatus.RUNNING: EXIT_WAITING,
    RunStatus.CANCELLED: EXIT_CANCELLED,
}
"""Exit code of ``trellis run`` / ``runs resume`` by the status the run ended in (DESIGN §4)."""


@dataclass
class CliState:
    """Global options, set by the root callback."""

    config: Path | None = None
    database_url: str | None = None

    def settings(self) -> Settings:
        settings = Settings.load(self.config)
        if self.database_url:
            from dataclasses import replace

            settings = replace(settings, database_url=self.database_url)
        return settings


STATE = CliState()


def json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)


def print_json(value: Any) -> None:
    """One JSON document on stdout (scripts read this, never tables)."""
    sys.stdout.write(json.dumps(value, default=json_default, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def parse_json_arg(value: str | None, what: str) -> Any:
    """``--input '{"a": 1}'`` or ``--input @file.json``; exits 2 with the position of a syntax error."""
    if value is None:
        return None
    text = value
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            text = path.read_text()
        except OSError as exc:
            fail(f"{what}: cannot read {path}: {exc.strerror}", EXIT_INVALID)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", EXIT_INVALID)


def open_engine(**kwargs: Any) -> AbstractAsyncContextManager[Engine]:
    """``Engine.open`` with the CLI's settings. The runtime (LangGraph, the store, their drivers)
    is imported here, on first use, so commands that need no engine start fast."""
    from trellis.runtime import Engine

    return Engine.open(STATE.settings(), **kwargs)


@asynccontextmanager
async def open_store_only() -> AsyncIterator[Store]:
    """The configured database alone, for commands that only read it: LangGraph, the
    checkpointer and the project's tool modules are not loaded, so they answer sooner."""
    from trellis.store import open_store

    store = await open_store(STATE.settings().database_url)
    try:
        yield store
    finally:
        await store.close()


async def existing_run(store: Store, run_id: str) -> RunRecord:
    """The run, or :class:`~trellis.errors.NotFound` (exit code 2) when there is none."""
    run = await store.get_run(run_id)
    if run is None:
        raise NotFound(f"no run with id {run_id!r}")
    return run


def whoami() -> str:
    """The actor the CLI records on approvals, cancellations and resets: ``cli:<OS user>``."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def fail(message: str, code: int) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine, mapping Trellis errors to a message and the fitting exit code."""
    from trellis import _loop

    try:
        return _loop.run(factory())
    except DefinitionError as exc:
        for diagnostic in exc.details.get("diagnostics", []):
            err_console.print(_diagnostic_line(diagnostic), highlight=False, soft_wrap=True)
        fail(exc.message, EXIT_INVALID)
    except WorkflowError as exc:
        code = EXIT_INVALID if exc.status in (404, 409, 422) else EXIT_FAILED
        fail(exc.message, code)


def _diagnostic_line(d: dict[str, Any]) -> str:
    return (
        f"{d.get('line') or 0}:{d.get('col') or 0} {d.get('path') or '/'} {d.get('code')} {d.get('message')}"
    )

"""Rich live view of a run: every node's status, attempt and duration, updated as events arrive."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from trellis.cli._common import console

if TYPE_CHECKING:
    from trellis.runtime import Engine
    from trellis.store import EventRecord, RunRecord

_STYLE = {
    "pending": "dim",
    "running": "bold yellow",
    "retrying": "bold magenta",
    "succeeded": "bold green",
    "failed": "bold red",
    "skipped": "dim",
    "cancelled": "red",
}


@dataclass
class _NodeRow:
    status: str = "pending"
    attempt: int = 0
    duration_ms: float | None = None
    note: str = ""


@dataclass
class LiveView:
    """Accumulates events into a table of nodes."""

    run_id: str
    workflow: str
    nodes: dict[str, _NodeRow] = field(default_factory=dict)
    status: str = "queued"
    last: str = ""

    def apply(self, event: EventRecord) -> None:
        data = event.data or {}
        if event.type.startswith("run."):
            self.status = event.type.removeprefix("run.")
            self.last = event.type
            return
        if event.node is None:
            return
        row = self.nodes.setdefault(event.node, _NodeRow())
        row.attempt = event.attempt or row.attempt
        if event.type == "node.started":
            row.status, row.note = "running", ""
        elif event.type == "node.retrying":
            row.status = "retrying"
            error = (data.get("error") or {}).get("detail", "")
            row.note = f"retry in {data.get('delay', 0):.2f}s: {error}"[:80]
        elif event.type == "node.succeeded":
            row.status, row.duration_ms = "succeeded", data.get("duration_ms")
        elif event.type == "node.failed":
            row.status, row.duration_ms = "failed", data.get("duration_ms")
            error = data.get("error") or {}
            caught = data.get("caught_by")
            row.note = f"{error.get('error', '')}: {error.get('detail', '')}"[:70]
            if caught:
                row.note += f" → {caught}"
        elif event.type == "node.progress":
            row.note = str(data.get("message") or data.get("value") or "")[:80]

    def render(self) -> Group:
        table = Table(title=f"{self.workflow} · run {self.run_id}", title_justify="left", expand=False)
        table.add_column("node")
        table.add_column("status")
        table.add_column("attempt", justify="right")
        table.add_column("time", justify="right")
        table.add_column("")
        for name, row in self.nodes.items():
            duration = "" if row.duration_ms is None else f"{row.duration_ms:,.0f} ms"
            table.add_row(
                name,
                Text(row.status, style=_STYLE.get(row.status, "")),
                str(row.attempt or ""),
                duration,
                row.note,
            )
        return Group(table, Text(f"run: {self.status}", style="bold"))


async def execute_with_view(
    engine: Engine, run: RunRecord, work: Awaitable[RunRecord], *, show: bool
) -> RunRecord:
    """Await ``work`` (an execution of ``run``) while drawing its events live unless ``show`` is off."""
    if not show:
        return await work
    view = LiveView(run.id, f"{run.workflow}@{run.version}")
    for event in await engine.store.list_events(run.id):
        view.apply(event)
    async with engine.bus.subscribe(run.id) as queue:
        task: asyncio.Task[RunRecord] = asyncio.ensure_future(work)
        with Live(view.render(), console=console, refresh_per_second=12, transient=False) as live:
            while not task.done() or not queue.empty():
                getter: asyncio.Task[Any] = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    event = getter.result()
                    if event is not None:
                        view.apply(event)
                else:
                    getter.cancel()
                live.update(view.render())
        console.print()
        return await task

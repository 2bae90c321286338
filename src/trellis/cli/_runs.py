"""``trellis run`` and ``trellis runs ...``: start, follow and steer runs in the configured database."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from trellis.cli._common import (
    EXIT_INVALID,
    STATUS_EXIT,
    console,
    existing_run,
    fail,
    open_engine,
    open_store_only,
    parse_json_arg,
    print_json,
    run_async,
    whoami,
)
from trellis.cli._live import execute_with_view
from trellis.types import RunStatus

if TYPE_CHECKING:
    from trellis.runtime import Engine
    from trellis.store import RunRecord

runs_app = typer.Typer(help="Inspect and steer runs.", no_args_is_help=True)

AUTO_APPROVER = "cli:auto-approve"


def _read_definition(workflow: str) -> str | None:
    """The text of a definition file, ``None`` when ``workflow`` names a registered workflow."""
    path = Path(workflow)
    if path.suffix not in (".yaml", ".yml", ".json"):
        return None
    try:
        return path.read_text()
    except OSError as exc:
        fail(f"cannot read definition file {workflow!r}: {exc.strerror}", EXIT_INVALID)


async def _workflow_ref(engine: Engine, workflow: str, text: str | None) -> str:
    """A definition file is registered (a no-op when unchanged); anything else is a name."""
    if text is None:
        return workflow
    record = await engine.register(text, filename=workflow)
    return f"{record.name}@{record.version}"


async def _drive(engine: Engine, run: RunRecord, *, show: bool, auto_approve: bool) -> RunRecord:
    """Execute until the run ends or parks; with ``auto_approve``, approve gates as they come."""
    while True:
        run = await execute_with_view(engine, run, engine.execute(run.id, follow_timers=True), show=show)
        gates = [i for i in (run.parked or {}).get("interrupts", []) if i.get("kind") == "approval"]
        if not (auto_approve and run.status == RunStatus.WAITING and gates):
            return run
        for gate in gates:
            run = await engine.decide(
                run.id, approved=True, actor=AUTO_APPROVER, comment="--auto-approve", node=gate.get("node")
            )


def _finish(run: RunRecord, as_json: bool) -> None:
    if as_json:
        print_json(run.to_dict())
    else:
        _summary(run)
    raise typer.Exit(STATUS_EXIT[run.status])


def _summary(run: RunRecord) -> None:
    style = {"succeeded": "green", "failed": "red", "cancelled": "red"}.get(run.status.value, "yellow")
    console.print(f"run [bold]{run.id}[/] [{style}]{run.status.value}[/]")
    if run.status == RunStatus.SUCCEEDED:
        console.print_json(data=run.output)
    elif run.error:
        console.print(f"[red]{run.error.get('error')}[/]: {run.error.get('detail')}", highlight=False)
    elif run.parked:
        kind = run.parked.get("kind")
        if kind in ("approval", "wait"):
            for gate in run.parked.get("interrupts", []):
                console.print(
                    f"waiting: {gate.get('kind')} at node [bold]{gate.get('node')}[/] {gate.get('title', '')}"
                )
            console.print(f"approve with: trellis runs approve {run.id} --comment '...'")
        elif kind == "step":
            upcoming = ", ".join(run.parked.get("next", []))
            console.print(f"stepping: next {upcoming}; advance with: trellis runs resume {run.id}")
        else:
            console.print(f"paused; continue with: trellis runs resume {run.id}")


def run_command(
    workflow: Annotated[
        str, typer.Argument(help="Definition file (.yaml/.json), or a registered name[@version].")
    ],
    input: Annotated[str | None, typer.Option("--input", "-i", help="Run input: JSON or @file.json.")] = None,
    detach: Annotated[
        bool, typer.Option(help="Queue the run and exit; a worker or `trellis serve` runs it.")
    ] = False,
    auto_approve: Annotated[bool, typer.Option(help="Approve every approval gate as it is reached.")] = False,
    step: Annotated[
        bool, typer.Option(help="Park before every node; `trellis runs resume` advances one step.")
    ] = False,
    priority: Annotated[int, typer.Option(help="Higher runs first when queued.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print only the final run document.")] = False,
) -> None:
    """Run a workflow with live progress. Exit: 0 succeeded, 1 failed, 2 invalid, 3 parked, 4 cancelled."""
    run_input = parse_json_arg(input, "--input")
    text = _read_definition(workflow)

    async def main() -> RunRecord:
        async with open_engine() as engine:
            ref = await _workflow_ref(engine, workflow, text)
            run = await engine.submit(
                ref, run_input, priority=priority, options={"step": True} if step else None
            )
            if detach:
                return run
            return await _drive(engine, run, show=not as_json, auto_approve=auto_approve)

    run = run_async(main)
    if detach:
        if as_json:
            print_json(run.to_dict())
        else:
            console.print(f"queued run [bold]{run.id}[/]")
        return
    _finish(run, as_json)


@runs_app.command("list")
def list_runs(
    status: Annotated[list[str] | None, typer.Option(help="Only runs in this status (repeatable).")] = None,
    workflow: Annotated[str | None, typer.Option(help="Only runs of this workflow.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    cursor: Annotated[str | None, typer.Option(help="Continue after a previous page.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List runs, newest first."""
    for s in status or []:
        if s not in RunStatus.__members__.values():
            fail(f"--status {s!r}: expected one of {', '.join(RunStatus)}", EXIT_INVALID)

    async def main() -> tuple[list[RunRecord], str | None]:
        async with open_store_only() as store:
            return await store.list_runs(status=status, workflow=workflow, limit=limit, cursor=cursor)

    runs, next_cursor = run_async(main)
    if as_json:
        print_json({"runs": [r.to_dict() for r in runs], "next_cursor": next_cursor})
        return
    table = Table("id", "workflow", "status", "created")
    for r in runs:
        table.add_row(r.id, f"{r.workflow}@{r.version}", r.status.value, f"{r.created_at:%Y-%m-%d %H:%M:%S}")
    console.print(table)
    if next_cursor:
        console.print(f"more: --cursor {next_cursor}")


@runs_app.command("show")
def show_run(run_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show a run and its nodes."""

    async def main() -> dict[str, Any]:
        async with open_store_only() as store:
            run = await existing_run(store, run_id)
            nodes = await store.list_node_states(run_id)
            return {**run.to_dict(), "nodes": [n.to_dict() for n in nodes]}

    doc = run_async(main)
    if as_json:
        print_json(doc)
        return
    console.print(f"run [bold]{doc['id']}[/] {doc['workflow']}@{doc['version']} [bold]{doc['status']}[/]")
    table = Table("node", "status", "attempt", "duration", "error")
    for n in doc["nodes"]:
        duration = "" if n["duration_ms"] is None else f"{n['duration_ms']:,.0f} ms"
        error = (n["error"] or {}).get("detail", "")
        table.add_row(n["node"], n["status"], str(n["attempt"]), duration, error[:60])
    console.print(table)
    if doc["status"] == "succeeded":
        console.print_json(data=doc["output"])
    elif doc["error"]:
        console.print(f"[red]{doc['error'].get('error')}[/]: {doc['error'].get('detail')}", highlight=False)


@runs_app.command("events")
def run_events(
    run_id: str,
    after: Annotated[int, typer.Option(help="Only events with seq greater than this.")] = 0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the run finished.")
    ] = False,
    server: Annotated[
        str | None, typer.Option(envvar="TRELLIS_SERVER", help="Follow over this API's SSE stream.")
    ] = None,
    api_key: Annotated[str | None, typer.Option(envvar="TRELLIS_API_KEY", help="Key for --server.")] = None,
) -> None:
    """Print a run's event log (with --follow: as it grows; one JSON line per event with --json)."""
    if follow or server:
        from trellis.cli._follow import follow_events

        follow_events(run_id, after=after, as_json=as_json, server=server, api_key=api_key, follow=follow)
        return

    async def main() -> list[Any]:
        async with open_store_only() as store:
            await existing_run(store, run_id)
            return await store.list_events(run_id, after=after)

    events = run_async(main)
    if as_json:
        print_json([e.to_dict() for e in events])
        return
    for e in events:
        node = f" {e.node}" if e.node else ""
        attempt = f" #{e.attempt}" if e.attempt else ""
        console.print(f"{e.seq:>5} {e.ts:%H:%M:%S.%f} {e.type}{node}{attempt}", highlight=False)


@runs_app.command("history")
def run_history(
    run_id: str,
    limit: Annotated[int | None, typer.Option(min=1)] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List the run's state versions (checkpoints), newest first."""

    async def main() -> list[dict[str, Any]]:
        async with open_engine() as engine:
            return await engine.history(run_id, limit=limit)

    versions = run_async(main)
    if as_json:
        print_json(versions)
        return
    table = Table("checkpoint", "step", "source", "next", "fields")
    for v in versions:
        table.add_row(
            v["checkpoint_id"], str(v["step"]), str(v["source"]), ", ".join(v["next"]), ", ".join(v["values"])
        )
    console.print(table)


def _steer(run_id: str, as_json: bool, action: str, *, follow: bool = False, **kwargs: Any) -> None:
    """Apply ``engine.<action>`` to a run; with ``follow``, then execute it here with live progress."""

    async def main() -> RunRecord:
        async with open_engine() as engine:
            run: RunRecord = await getattr(engine, action)(run_id, **kwargs)
            if follow:
                run = await _drive(engine, run, show=not as_json, auto_approve=False)
            return run

    run = run_async(main)
    if follow:
        _finish(run, as_json)
    if as_json:
        print_json(run.to_dict())
    else:
        console.print(f"run [bold]{run.id}[/] {run.status.value}")


@runs_app.command("resume")
def resume_run(
    run_id: str,
    no_continue: Annotated[bool, typer.Option("--no-continue", help="Only mark it runnable.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Continue a paused, stepping or crashed run from its last checkpoint (with live progress)."""
    _steer(run_id, as_json, "resume", follow=not no_continue)


@runs_app.command("retry")
def retry_run(
    run_id: str,
    no_continue: Annotated[
        bool, typer.Option("--no-continue", help="Only queue it; a worker runs it.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run a failed run again from the node that failed; completed nodes are not repeated."""
    _steer(run_id, as_json, "retry", follow=not no_continue, actor=whoami())


@runs_app.command("rollback")
def rollback_run(
    run_id: str,
    checkpoint: Annotated[str, typer.Argument(help="State version to continue from (see `runs history`).")],
    no_continue: Annotated[
        bool, typer.Option("--no-continue", help="Only queue it; a worker runs it.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Fork the run from an earlier state version and continue from there (history is kept)."""
    _steer(run_id, as_json, "rollback", follow=not no_continue, checkpoint_id=checkpoint, actor=whoami())


@runs_app.command("diff")
def diff_run(
    run_id: str,
    checkpoint: Annotated[str, typer.Argument(help="State version.")],
    against: Annotated[
        str | None, typer.Option(help="Compare with this version (default: its parent).")
    ] = None,
) -> None:
    """Show what changed in a state version (always JSON)."""

    async def main() -> dict[str, Any]:
        async with open_engine() as engine:
            return await engine.diff(run_id, checkpoint, against=against)

    print_json(run_async(main))


@runs_app.command("cancel")
def cancel_run(run_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Cancel a run; running nodes end `cancelled`."""
    _steer(run_id, as_json, "cancel", actor=whoami())


@runs_app.command("pause")
def pause_run(run_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Pause a running run at its next step boundary."""
    _steer(run_id, as_json, "pause", actor=whoami())


def _decision(approved: bool):  # type: ignore[no-untyped-def]
    def command(
        run_id: str,
        comment: Annotated[str | None, typer.Option(help="Why.")] = None,
        data: Annotated[
            str | None, typer.Option(help="Decision data (JSON or @file), checked against the form.")
        ] = None,
        node: Annotated[str | None, typer.Option(help="Which approval node, when several wait.")] = None,
        as_: Annotated[str | None, typer.Option("--as", help="Who decides (default: the OS user).")] = None,
        no_continue: Annotated[
            bool, typer.Option("--no-continue", help="Record only; a worker continues.")
        ] = False,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        _steer(
            run_id,
            as_json,
            "decide",
            approved=approved,
            actor=as_ or whoami(),
            comment=comment,
            data=parse_json_arg(data, "--data"),
            node=node,
            follow=not no_continue,
        )

    command.__doc__ = (
        "Approve the gate a run waits at, then continue it."
        if approved
        else "Reject the gate a run waits at, then continue it (the gate's on_reject decides what follows)."
    )
    return command


runs_app.command("approve")(_decision(True))
runs_app.command("reject")(_decision(False))

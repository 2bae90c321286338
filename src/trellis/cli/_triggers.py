"""``trellis schedules list|pause|resume``, ``trellis triggers list|create|delete|pause|resume``
and ``trellis node exec WORKFLOW NODE --state JSON``."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from trellis.cli._common import (
    EXIT_FAILED,
    console,
    open_engine,
    open_store_only,
    parse_json_arg,
    print_json,
    run_async,
)
from trellis.config import Settings

if TYPE_CHECKING:
    from trellis.runtime import Engine
    from trellis.triggers import TriggerService

schedules_app = typer.Typer(help="Cron schedules that start runs.", no_args_is_help=True)
triggers_app = typer.Typer(
    help="Triggers: schedules, webhooks (POST /v1/hooks/NAME), NATS and Redis consumers.",
    no_args_is_help=True,
)
node_app = typer.Typer(help="One node of a workflow, alone.", no_args_is_help=True)

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON (the REST API's documents).")]


def _table(rows: list[dict[str, Any]], schedules: bool) -> None:
    if schedules:
        table = Table("name", "workflow", "cron", "timezone", "enabled", "next", "last run")
        for t in rows:
            spec = t["spec"]
            table.add_row(
                t["name"],
                t["workflow"],
                spec["cron"],
                spec["timezone"],
                "yes" if t["enabled"] else "paused",
                t["next_fire_at"] or "-",
                t["last_run_id"] or "-",
            )
    else:
        table = Table("name", "kind", "workflow", "origin", "enabled")
        for t in rows:
            table.add_row(
                t["name"], t["kind"], t["workflow"], t["origin"], "yes" if t["enabled"] else "paused"
            )
    console.print(table)


async def _list(kind: str | None) -> list[dict[str, Any]]:
    async with open_store_only() as store:
        return [t.to_dict() for t in await store.list_triggers(kind=kind)]


def _change(name: str, enabled: bool, kind: str | None, as_json: bool) -> None:
    async def main() -> dict[str, Any]:
        async with open_engine() as engine:
            from trellis.triggers import set_enabled

            return (await set_enabled(engine, name, enabled, kind=kind)).to_dict()

    record = run_async(main)
    if as_json:
        print_json(record)
    else:
        console.print(f"{record['name']}: {'resumed' if enabled else 'paused'}", highlight=False)


@schedules_app.command("list")
def schedules_list(as_json: AsJson = False) -> None:
    """Schedules with their next tick and last run."""
    rows = run_async(lambda: _list("schedule"))
    if as_json:
        print_json({"schedules": rows})
    else:
        _table(rows, schedules=True)


@schedules_app.command("pause")
def schedules_pause(name: str, as_json: AsJson = False) -> None:
    """Stop a schedule starting runs (ticks while paused are not made up)."""
    _change(name, False, "schedule", as_json)


@schedules_app.command("resume")
def schedules_resume(name: str, as_json: AsJson = False) -> None:
    """Start runs again from the next tick after now."""
    _change(name, True, "schedule", as_json)


@triggers_app.command("list")
def triggers_list(
    kind: Annotated[str | None, typer.Option(help="schedule, webhook, nats or redis.")] = None,
    as_json: AsJson = False,
) -> None:
    """Every trigger."""
    rows = run_async(lambda: _list(kind))
    if as_json:
        print_json({"triggers": rows})
    else:
        _table(rows, schedules=False)


@triggers_app.command("create")
def triggers_create(
    name: str,
    kind: Annotated[str, typer.Option(help="schedule, webhook, nats or redis.")],
    workflow: Annotated[str, typer.Option(help="name or name@version.")],
    spec: Annotated[
        str, typer.Option(metavar="JSON|@file", help="The kind's fields (see POST /v1/triggers).")
    ],
    disabled: Annotated[bool, typer.Option(help="Create it paused.")] = False,
    as_json: AsJson = False,
) -> None:
    """Register a trigger (as ``POST /v1/triggers`` does)."""
    fields = parse_json_arg(spec, "--spec")

    async def main() -> dict[str, Any]:
        async with open_engine() as engine:
            from trellis.triggers import create_trigger

            record = await create_trigger(engine, name, kind, workflow, fields, enabled=not disabled)
            return record.to_dict()

    record = run_async(main)
    if as_json:
        print_json(record)
    else:
        console.print(f"created {kind} trigger {name}", highlight=False)


@triggers_app.command("delete")
def triggers_delete(name: str) -> None:
    """Delete a trigger registered over REST or the CLI."""

    async def main() -> None:
        async with open_engine() as engine:
            from trellis.triggers import delete_trigger

            await delete_trigger(engine, name)

    run_async(main)
    console.print(f"deleted trigger {name}", highlight=False)


@triggers_app.command("pause")
def triggers_pause(name: str, as_json: AsJson = False) -> None:
    _change(name, False, None, as_json)


@triggers_app.command("resume")
def triggers_resume(name: str, as_json: AsJson = False) -> None:
    _change(name, True, None, as_json)


@node_app.command("exec")
def node_exec(
    workflow: Annotated[str, typer.Argument(help="name or name@version.")],
    node: Annotated[str, typer.Argument(help="Node id.")],
    state: Annotated[str, typer.Option(metavar="JSON|@file", help="The state the node sees.")] = "{}",
    run_input: Annotated[
        str | None,
        typer.Option("--input", metavar="JSON|@file", help="Bound as `input` (default: the state)."),
    ] = None,
    retries: Annotated[
        bool, typer.Option(help="Apply the node's retry policy (default: one attempt).")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Execute one node on a given state; prints its update, next nodes, error and timing.

    Exit 0 when the node succeeded, 1 when it failed. Side effects are real.
    """
    given = parse_json_arg(state, "--state")
    bound = parse_json_arg(run_input, "--input")

    async def main() -> dict[str, Any]:
        async with open_engine() as engine:
            from trellis.triggers import execute_node

            return await execute_node(engine, workflow, node, given, run_input=bound, retries=retries)

    result = run_async(main)
    if as_json:
        print_json(result)
    else:
        console.print(
            f"{result['workflow']}@{result['version']} {node} ({result['type']}): {result['status']} "
            f"in {result['duration_ms']:.1f} ms",
            highlight=False,
        )
        if result["update"] is not None:
            console.print_json(data=result["update"])
        console.print(f"next: {', '.join(str(n) for n in result['next']) or '(end)'}", highlight=False)
        if result["error"]:
            console.print(f"[red]error[/]: {result['error'].get('detail')}", highlight=False)
    if result["status"] != "succeeded":
        raise typer.Exit(EXIT_FAILED)


# -- used by `serve` and `worker` -------------------------------------------------------------------


def start_triggers(engine: Engine, settings: Settings) -> tuple[TriggerService, asyncio.Task[None]]:
    """Start the scheduler, callback dispatcher, publishers and bus consumers of this process."""
    from trellis.triggers import TriggerService, TriggerSettings

    service = TriggerService(engine, TriggerSettings.from_settings(settings))
    return service, asyncio.create_task(service.run(), name="trellis-triggers")


async def stop_triggers(started: tuple[TriggerService, asyncio.Task[None]]) -> None:
    service, task = started
    service.request_stop()
    try:
        async with asyncio.timeout(10):
            await asyncio.gather(task, return_exceptions=True)
    except TimeoutError:
        task.cancel()

"""``trellis gc``: prune finished runs past a retention horizon (see :mod:`trellis.observability`).

``trellis serve`` runs the same pruning as a scheduled job (``[retention]`` in ``trellis.toml``);
this command is for a one-off pass, a cron job next to ``trellis worker`` processes, or a look
at what would go (``--dry-run``).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from trellis.cli._common import EXIT_INVALID, STATE, console, fail, print_json, run_async


def gc(
    older_than: Annotated[
        str,
        typer.Option("--older-than", help="Prune runs that finished longer ago than this (30d, 12h, 90m)."),
    ] = "30d",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Delete finished runs' events, node states, logs and LangGraph checkpoints past a horizon.

    The run rows (input, output, error, timings), each run's final event and the audit log are kept.
    Queued, running, waiting and paused runs are never touched.
    """
    from trellis.observability import collect_garbage, parse_duration
    from trellis.runtime import Engine

    try:
        horizon = parse_duration(older_than)
    except ValueError as exc:
        fail(f"--older-than: {exc}", EXIT_INVALID)

    async def main() -> dict[str, Any]:
        async with Engine.open(STATE.settings()) as engine:
            report = await collect_garbage(engine.store, engine.saver, older_than=horizon, dry_run=dry_run)
            return report.to_dict()

    report = run_async(main)
    if as_json:
        print_json(report)
        return
    verb = "would prune" if dry_run else "pruned"
    deleted = report["deleted"]
    console.print(
        f"{verb} {report['runs']} run(s) finished before {report['before']}: "
        f"{deleted['events']} event(s), {deleted['node_states']} node state(s), "
        f"{deleted['logs']} log line(s), {deleted['commands']} command(s), "
        f"{report['checkpoint_threads']} checkpoint thread(s)",
        highlight=False,
    )

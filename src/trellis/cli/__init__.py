"""The ``trellis`` command line (DESIGN §4). Every command that prints a result takes ``--json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from trellis._version import __version__
from trellis.cli._agents import agents_app, breakers_app
from trellis.cli._common import EXIT_INVALID, STATE, console, fail, open_store_only, print_json, run_async
from trellis.cli._gc import gc
from trellis.cli._keys import keys_app
from trellis.cli._perf import perf_app
from trellis.cli._runs import run_command, runs_app
from trellis.cli._serve import serve, worker
from trellis.cli._triggers import node_app, schedules_app, triggers_app

app = typer.Typer(
    name="trellis",
    help="Run LangGraph workflows for real: declared in YAML/JSON or written in Python.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
workflows_app = typer.Typer(help="Registered workflows.", no_args_is_help=True)
db_app = typer.Typer(help="The database.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
app.add_typer(workflows_app, name="workflows")
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(agents_app, name="agents")
app.add_typer(breakers_app, name="breakers")
app.add_typer(perf_app, name="perf")
app.add_typer(schedules_app, name="schedules")
app.add_typer(triggers_app, name="triggers")
app.add_typer(node_app, name="node")
app.command("serve")(serve)
app.command("worker")(worker)
app.command("run")(run_command)
app.command("gc")(gc)


@app.callback()
def root(
    config: Annotated[Path | None, typer.Option(help="trellis.toml to read (env TRELLIS_CONFIG).")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL of the database (env TRELLIS_DATABASE_URL).")
    ] = None,
) -> None:
    STATE.config = config
    STATE.database_url = database_url


@app.command()
def version() -> None:
    """Print the Trellis version."""
    console.print(__version__)


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="Definition files (.yaml, .yml, .json).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print diagnostics as JSON.")] = False,
) -> None:
    """Check definitions and print every problem as `file:line:col path code message`. Exit 2 on any error."""
    from trellis.dsl import load_document
    from trellis.dsl import validate as check

    results: list[dict[str, Any]] = []
    errors = 0
    for path in files:
        try:
            text = path.read_text()
        except OSError as exc:
            fail(f"cannot read {path}: {exc.strerror}", EXIT_INVALID)
        document = load_document(text, str(path))
        diagnostics = list(check(document.data, document).diagnostics)
        errors += sum(d.severity == "error" for d in diagnostics)
        results.append(
            {
                "file": str(path),
                "ok": not any(d.severity == "error" for d in diagnostics),
                "diagnostics": [d.to_dict() for d in diagnostics],
            }
        )
        if not as_json:
            for d in diagnostics:
                style = "red" if d.severity == "error" else "yellow"
                console.print(f"[{style}]{d.format(str(path))}[/]", highlight=False, soft_wrap=True)
    if as_json:
        print_json(results)
    elif errors == 0:
        console.print(f"[green]ok[/]: {len(files)} definition(s) valid")
    raise typer.Exit(EXIT_INVALID if errors else 0)


@app.command()
def graph(file: Annotated[Path, typer.Argument(help="Definition file.")]) -> None:
    """Print the workflow as a Mermaid flowchart."""
    from trellis.compiler import mermaid
    from trellis.dsl import load_workflow
    from trellis.errors import DefinitionError

    try:
        workflow = load_workflow(file.read_text(), str(file))
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}", EXIT_INVALID)
    except DefinitionError as exc:
        fail(f"{file}: {exc.message} (run `trellis validate {file}` for every problem)", EXIT_INVALID)
    typer.echo(mermaid(workflow), nl=False)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the definition format (for editors)."""
    from trellis.dsl import workflow_json_schema

    typer.echo(json.dumps(workflow_json_schema(), indent=2))


@workflows_app.command("register")
def register(
    files: Annotated[list[Path], typer.Argument(help="Definition files.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Register definitions (identical content is a no-op; changed content gets the next version)."""
    from trellis.runtime import Engine

    async def main() -> list[dict[str, Any]]:
        async with Engine.open(STATE.settings()) as engine:
            out = []
            for path in files:
                record = await engine.register(path.read_text(), filename=str(path))
                out.append({"name": record.name, "version": record.version, "hash": record.hash})
            return out

    for path in files:
        if not path.is_file():
            fail(f"definition file {str(path)!r} does not exist", EXIT_INVALID)
    registered = run_async(main)
    if as_json:
        print_json(registered)
    else:
        for r in registered:
            console.print(f"{r['name']}@{r['version']} {r['hash']}")


@workflows_app.command("list")
def list_workflows(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List registered workflows (latest version of each)."""

    async def main() -> list[dict[str, Any]]:
        async with open_store_only() as store:
            return [
                {"name": w.name, "version": w.version, "hash": w.hash, "kind": w.kind}
                for w in await store.list_workflows()
            ]

    found = run_async(main)
    if as_json:
        print_json(found)
    else:
        for w in found:
            console.print(f"{w['name']}@{w['version']} ({w['kind']}) {w['hash']}")


@workflows_app.command("show")
def show_workflow(ref: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show a registered workflow version (`name` or `name@version`)."""
    from trellis.runtime import Engine

    async def main() -> dict[str, Any]:
        async with Engine.open(STATE.settings()) as engine:
            return (await engine.resolve(ref)).to_dict()

    doc = run_async(main)
    if as_json:
        print_json(doc)
    else:
        console.print(f"{doc['name']}@{doc['version']} {doc['hash']}")
        typer.echo(doc["source"] or json.dumps(doc["definition"], indent=2))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations (also done automatically when Trellis opens the database)."""
    from trellis.store import open_store

    async def main() -> str | None:
        store = await open_store(STATE.settings().database_url)
        try:
            return await store.current_revision()
        finally:
            await store.close()

    console.print(f"database at revision {run_async(main)}")


def main() -> None:
    """Console-script entry point."""
    app()

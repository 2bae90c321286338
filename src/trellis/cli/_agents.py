"""``trellis agents ...`` and ``trellis breakers ...``: the agent registry and circuit breakers.

They work on the configured database directly, like the other commands; a change is seen by
every serving process without a restart. ``--json`` prints the same documents as
``/v1/agents`` and ``/v1/breakers``. Exit 0 on success, 2 for invalid input, an unknown agent or
breaker, or a name already taken.

A spec given on the command line or in ``--file`` (YAML or JSON: ``name`` plus the fields of
``/v1/agents``) never holds a secret: ``--auth-env VAR`` or ``--auth-secret env:NAME|file:/path``
name where the calling process reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich.table import Table

from trellis.cli._common import (
    EXIT_INVALID,
    console,
    fail,
    open_engine,
    open_store_only,
    parse_json_arg,
    print_json,
    run_async,
    whoami,
)
from trellis.errors import NotFound, ValidationError

if TYPE_CHECKING:
    pass

agents_app = typer.Typer(help="The agent registry: HTTP services `agent` nodes call.", no_args_is_help=True)
breakers_app = typer.Typer(
    help="Circuit breakers (keys agent:<name>, http:<host:port>).", no_args_is_help=True
)

AgentName = Annotated[str, typer.Argument(help="The agent's name.")]
BreakerKey = Annotated[str, typer.Argument(help="agent:<name> or http:<host:port>.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON (the fields of the REST API).")]
Url = Annotated[str | None, typer.Option("--url", help="Base URL, e.g. http://127.0.0.1:9100/nlp.")]
InvokePath = Annotated[str | None, typer.Option(help="Path agent nodes POST to (default /invoke).")]
HealthPath = Annotated[str | None, typer.Option(help="Path probed with GET (default /health).")]
NoHealthPath = Annotated[
    bool, typer.Option("--no-health-path", help="Do not probe: judge its health by its calls alone.")
]
Timeout = Annotated[float | None, typer.Option("--timeout", help="Time limit of one call, in seconds.")]
AuthEnv = Annotated[
    str | None, typer.Option("--auth-env", metavar="VAR", help="Environment variable holding the secret.")
]
AuthSecret = Annotated[
    str | None,
    typer.Option("--auth-secret", metavar="REF", help="env:NAME or file:/path (never the secret itself)."),
]
AuthHeader = Annotated[str | None, typer.Option(help="Header the secret goes in (default Authorization).")]
AuthScheme = Annotated[
    str | None, typer.Option(help="Prefix of the header value (default Bearer; '' for none).")
]
Retry = Annotated[str | None, typer.Option("--retry", metavar="JSON|@file", help="Retry policy.")]
Breaker = Annotated[str | None, typer.Option("--breaker", metavar="JSON|@file", help="Breaker policy.")]
Health = Annotated[str | None, typer.Option("--health", metavar="JSON|@file", help="Health policy.")]
Schema = Annotated[
    str | None, typer.Option("--schema", metavar="JSON|@file", help="JSON Schema every answer must match.")
]
Description = Annotated[str | None, typer.Option(help="What the agent does.")]
File = Annotated[
    Path | None, typer.Option("--file", "-f", help="YAML or JSON document: name and spec fields.")
]


def _read_document(path: Path) -> dict[str, Any]:
    """A ``--file`` document (YAML, or JSON, which YAML reads too); exits 2 when unusable."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", EXIT_INVALID)
    except yaml.YAMLError as exc:
        fail(f"{path} is not valid YAML or JSON: {exc}", EXIT_INVALID)
    if not isinstance(data, dict):
        fail(f"{path} must hold a mapping (name and spec fields), not {type(data).__name__}", EXIT_INVALID)
    return data


def _options(
    *,
    url: str | None,
    invoke_path: str | None,
    health_path: str | None,
    no_health_path: bool,
    timeout: float | None,
    auth_env: str | None,
    auth_secret: str | None,
    auth_header: str | None,
    auth_scheme: str | None,
    retry: str | None,
    breaker: str | None,
    health: str | None,
    schema: str | None,
    description: str | None,
) -> dict[str, Any]:
    """The spec fields the options give (only those given)."""
    fields: dict[str, Any] = {}
    if url is not None:
        fields["base_url"] = url
    if invoke_path is not None:
        fields["invoke_path"] = invoke_path
    if health_path is not None and no_health_path:
        fail("give --health-path or --no-health-path, not both", EXIT_INVALID)
    if health_path is not None or no_health_path:
        fields["health_path"] = health_path
    if timeout is not None:
        fields["timeout_seconds"] = timeout
    if auth_env is not None and auth_secret is not None:
        fail("give --auth-env or --auth-secret, not both", EXIT_INVALID)
    secret = f"env:{auth_env}" if auth_env is not None else auth_secret
    if secret is not None:
        auth: dict[str, Any] = {"secret": secret}
        if auth_header is not None:
            auth["header"] = auth_header
        if auth_scheme is not None:
            auth["scheme"] = auth_scheme or None
        fields["auth"] = auth
    elif auth_header is not None or auth_scheme is not None:
        fail("--auth-header and --auth-scheme need --auth-env or --auth-secret", EXIT_INVALID)
    for key, value, option in (
        ("retry", retry, "--retry"),
        ("breaker", breaker, "--breaker"),
        ("health", health, "--health"),
        ("response_schema", schema, "--schema"),
    ):
        if value is not None:
            fields[key] = parse_json_arg(value, option)
    if description is not None:
        fields["description"] = description
    return fields


def _print_agent(doc: Mapping[str, Any], as_json: bool, verb: str) -> None:
    if as_json:
        print_json(doc)
        return
    state = "enabled" if doc["enabled"] else "disabled"
    console.print(
        f"{verb} agent [bold]{doc['name']}[/] ({state}, revision {doc['revision']}) at {doc['base_url']}",
        highlight=False,
    )


@agents_app.command("register")
def register(
    name: Annotated[str | None, typer.Argument(help="The agent's name (or `name` in --file).")] = None,
    url: Url = None,
    invoke_path: InvokePath = None,
    health_path: HealthPath = None,
    no_health_path: NoHealthPath = False,
    timeout: Timeout = None,
    auth_env: AuthEnv = None,
    auth_secret: AuthSecret = None,
    auth_header: AuthHeader = None,
    auth_scheme: AuthScheme = None,
    retry: Retry = None,
    breaker: Breaker = None,
    health: Health = None,
    schema: Schema = None,
    description: Description = None,
    file: File = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Register it disabled.")] = False,
    as_json: AsJson = False,
) -> None:
    """Register an agent (exit 2 when the name is taken or the spec is invalid).

    Options override the fields of --file.
    """
    document = _read_document(file) if file is not None else {}
    fields = _options(
        url=url,
        invoke_path=invoke_path,
        health_path=health_path,
        no_health_path=no_health_path,
        timeout=timeout,
        auth_env=auth_env,
        auth_secret=auth_secret,
        auth_header=auth_header,
        auth_scheme=auth_scheme,
        retry=retry,
        breaker=breaker,
        health=health,
        schema=schema,
        description=description,
    )

    async def main() -> dict[str, Any]:
        from trellis.agents import agent_fields

        agent, spec, enabled = agent_fields(document, name)
        if not agent:
            raise ValidationError("name the agent: `trellis agents register NAME` (or `name` in --file)")
        spec.update(fields)
        if "base_url" not in spec:
            raise ValidationError("--url is required (or base_url in --file)", details={"path": "/base_url"})
        async with open_engine() as engine:
            on = False if disabled else (True if enabled is None else enabled)
            return (await engine.register_agent(agent, spec, enabled=on)).to_dict()

    _print_agent(run_async(main), as_json, "registered")


@agents_app.command("update")
def update(
    name: AgentName,
    url: Url = None,
    invoke_path: InvokePath = None,
    health_path: HealthPath = None,
    no_health_path: NoHealthPath = False,
    timeout: Timeout = None,
    auth_env: AuthEnv = None,
    auth_secret: AuthSecret = None,
    auth_header: AuthHeader = None,
    auth_scheme: AuthScheme = None,
    retry: Retry = None,
    breaker: Breaker = None,
    health: Health = None,
    schema: Schema = None,
    description: Description = None,
    file: File = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace the whole spec (omitted fields take their defaults).")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Change an agent: the fields given are merged into its spec (a policy field by field).

    Options override the fields of --file. Prints the agent with `changed`.
    """
    document = _read_document(file) if file is not None else {}
    fields = _options(
        url=url,
        invoke_path=invoke_path,
        health_path=health_path,
        no_health_path=no_health_path,
        timeout=timeout,
        auth_env=auth_env,
        auth_secret=auth_secret,
        auth_header=auth_header,
        auth_scheme=auth_scheme,
        retry=retry,
        breaker=breaker,
        health=health,
        schema=schema,
        description=description,
    )

    async def main() -> dict[str, Any]:
        from trellis.agents import agent_fields

        _, spec, enabled = agent_fields(document, name)
        spec.update(fields)
        if not spec and enabled is None:
            raise ValidationError("nothing to change: give options or --file (see --help)")
        async with open_engine() as engine:
            record, changed = await engine.change_agent(name, spec, enabled=enabled, replace=replace)
            return {**record.to_dict(), "changed": changed}

    doc = run_async(main)
    _print_agent(doc, as_json, "updated" if doc["changed"] else "unchanged")


def _enable(enabled: bool) -> Any:
    def command(name: AgentName, as_json: AsJson = False) -> None:
        async def main() -> dict[str, Any]:
            async with open_engine() as engine:
                return (await engine.set_agent_enabled(name, enabled)).to_dict()

        _print_agent(run_async(main), as_json, "enabled" if enabled else "disabled")

    command.__doc__ = (
        "Enable an agent." if enabled else "Disable an agent: calls to it fail with AgentUnavailable."
    )
    return command


agents_app.command("enable")(_enable(True))
agents_app.command("disable")(_enable(False))


@agents_app.command("list")
def list_agents(as_json: AsJson = False) -> None:
    """List registered agents."""

    async def main() -> list[dict[str, Any]]:
        async with open_store_only() as store:
            return [r.to_dict() for r in await store.list_agents()]

    found = run_async(main)
    if as_json:
        print_json(found)
        return
    if not found:
        console.print("no agents registered (see `trellis agents register --help`)")
        return
    table = Table("name", "enabled", "healthy", "base_url", "revision")
    for a in found:
        table.add_row(a["name"], _yes(a["enabled"]), _yes(a["healthy"]), a["base_url"], str(a["revision"]))
    console.print(table)


@agents_app.command("show")
def show_agent(name: AgentName, as_json: AsJson = False) -> None:
    """Show an agent's registration (secrets are references only)."""

    async def main() -> dict[str, Any]:
        async with open_engine() as engine:
            return (await engine.get_agent(name)).to_dict()

    doc = run_async(main)
    if as_json:
        print_json(doc)
    else:
        typer.echo(yaml.safe_dump(doc, sort_keys=False), nl=False)


@agents_app.command("health")
def agent_health(name: AgentName, as_json: AsJson = False) -> None:
    """An agent's health: success rate and p50/p95 latency over its window, last probe, breaker."""

    async def main() -> dict[str, Any]:
        async with open_engine() as engine:
            return await engine.agent_health(name)

    report = run_async(main)
    if as_json:
        print_json(report)
        return
    rate = report["success_rate"]
    latency = report["latency_ms"]
    console.print(
        f"[bold]{report['agent']}[/] {'healthy' if report['healthy'] else '[red]unhealthy[/]'}"
        f"{'' if report['enabled'] else ' (disabled)'}; breaker {report['breaker'] or 'unused'}\n"
        f"{report['samples']} outcomes in {report['window_seconds']:g}s: success rate "
        f"{'-' if rate is None else f'{rate:.0%}'}, p50 {_ms(latency['p50'])}, p95 {_ms(latency['p95'])}",
        highlight=False,
    )
    last = report["last_probe"]
    if last is not None:
        outcome = "ok" if last["ok"] else f"[red]{last['error']}[/]"
        console.print(f"last probe {last['at']}: {outcome}", highlight=False)


def _yes(value: bool) -> str:
    return "yes" if value else "[red]no[/]"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g} ms"


# -- breakers -----------------------------------------------------------------------------------


@breakers_app.command("list")
def list_breakers(as_json: AsJson = False) -> None:
    """List circuit breakers (a breaker exists once a call has used it)."""

    async def main() -> list[dict[str, Any]]:
        async with open_store_only() as store:
            from trellis.resilience import breaker_document

            return [breaker_document(r) for r in await store.list_breakers()]

    found = run_async(main)
    if as_json:
        print_json(found)
        return
    if not found:
        console.print("no circuit breakers yet")
        return
    table = Table("key", "state", "recent failures", "opened", "next trial")
    for b in found:
        state = b["state"] if b["state"] == "closed" else f"[red]{b['state']}[/]"
        failures = str(b["recent_failures"])
        table.add_row(b["key"], state, failures, b["opened_at"] or "", b["next_trial_at"] or "")
    console.print(table)


@breakers_app.command("show")
def show_breaker(key: BreakerKey, as_json: AsJson = False) -> None:
    """Show one circuit breaker."""

    async def main() -> dict[str, Any]:
        async with open_store_only() as store:
            record = await store.get_breaker(key)
            if record is None:
                raise NotFound(f"no circuit breaker {key!r} (see `trellis breakers list`)")
            from trellis.resilience import breaker_document

            return breaker_document(record)

    doc = run_async(main)
    if as_json:
        print_json(doc)
    else:
        typer.echo(yaml.safe_dump(doc, sort_keys=False), nl=False)


@breakers_app.command("reset")
def reset_breaker(
    key: BreakerKey,
    as_: Annotated[str | None, typer.Option("--as", help="Who resets it (default: the OS user).")] = None,
    as_json: AsJson = False,
) -> None:
    """Close a circuit breaker by hand, forgetting its failures (records breaker.closed)."""

    async def main() -> dict[str, Any]:
        async with open_engine() as engine:
            from trellis.resilience import breaker_document

            return breaker_document(await engine.reset_breaker(key, actor=as_ or whoami()))

    doc = run_async(main)
    if as_json:
        print_json(doc)
    else:
        console.print(f"breaker [bold]{doc['key']}[/] is {doc['state']}", highlight=False)

"""``trellis serve`` (API + embedded worker in one event loop) and ``trellis worker``.

**Binding.** With no API key configured the API is open to anyone who reaches it, so ``serve``
then refuses a non-loopback ``--host`` (exit 2) unless ``--insecure`` says that is intended.

**Stopping.** On SIGTERM or SIGINT the server stops accepting connections, ends open streams
(clients reconnect elsewhere with ``Last-Event-ID``), and the worker drains: it stops claiming,
asks its runs to stop at their next step boundary (checkpointed, back to ``queued``) and hands
back any lease not released within ``--grace`` seconds. A second signal exits at once.

**Observability.** Both commands log JSON lines on stderr (structlog; run id, node and attempt
bound while a node runs). ``serve`` serves the dashboard at ``/`` and ``/metrics``, and prunes
finished runs per ``[retention]`` (``trellis gc``; every hour, runs older than 30 days, unless
``enabled = false``). ``worker --metrics-port`` exposes that worker's own counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from trellis._loop import freeze_startup_heap
from trellis.cli._common import EXIT_INVALID, STATE, err_console, fail, run_async
from trellis.cli._triggers import start_triggers, stop_triggers
from trellis.config import Settings
from trellis.errors import WorkflowError

if TYPE_CHECKING:
    from trellis.runtime import Engine

log = logging.getLogger("trellis.serve")

Concurrency = Annotated[
    int,
    typer.Option("--concurrency", "--workers-concurrency", min=1, help="Runs the worker executes at once."),
]
Tools = Annotated[
    list[str] | None, typer.Option("--tools", help="Module (or .py file) registering tools; repeatable.")
]
Grace = Annotated[
    float, typer.Option(min=0, help="Seconds running runs get to reach a step boundary on stop.")
]


BUNDLED_TOOLS = ("trellis.workflows.performance.tools",)
"""Tool modules of the workflows that ship with Trellis, loaded by ``serve --examples``."""


def _bundled_definitions() -> dict[str, str]:
    """The workflows that ship with Trellis (``performance-agent``), registered by ``--examples``."""
    from trellis.workflows.performance import WORKFLOW_FILE

    return {"trellis/workflows/performance/performance_agent.yaml": WORKFLOW_FILE.read_text()}


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ``::1``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _settings(tools: list[str] | None) -> Settings:
    settings = STATE.settings()
    if tools:
        settings = replace(settings, tools=tuple(dict.fromkeys((*settings.tools, *tools))))
    return settings


def _worker_class() -> Any:
    try:
        from trellis.queue import Worker
    except ImportError as exc:  # pragma: no cover - the queue ships with Trellis
        fail(f"the worker is not available in this installation ({exc}); use --no-worker", 1)
    return Worker


@contextlib.contextmanager
def _on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """Call ``stop`` on the first SIGTERM/SIGINT; exit at once on the second."""
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def handle(sig: signal.Signals) -> None:
        received.append(sig)
        if len(received) > 1:
            err_console.print("second signal: exiting now")
            raise SystemExit(128 + sig)
        err_console.print(f"{sig.name}: stopping (again to exit at once)")
        stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handle, sig)
    try:
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _register_examples(engine: Engine, definitions: dict[str, str]) -> None:
    for filename, text in definitions.items():
        try:
            record = await engine.register(text, filename=filename)
        except WorkflowError as exc:
            err_console.print(f"[yellow]not registered[/]: {exc.message}", highlight=False)
            continue
        err_console.print(f"registered {record.name}@{record.version} from {filename}", highlight=False)


def _start_retention(engine: Engine, settings: Settings) -> asyncio.Task[None] | None:
    """The scheduled ``trellis gc`` of ``[retention]`` (``None`` when it is turned off)."""
    from trellis.observability import RetentionPolicy
    from trellis.observability._retention import retention_job

    try:
        policy = RetentionPolicy.from_table(settings.retention)
    except ValueError as exc:
        fail(f"[retention] in the configuration: {exc}", EXIT_INVALID)
    if not policy.enabled:
        return None
    return asyncio.create_task(retention_job(engine.store, engine.saver, policy), name="trellis-retention")


async def _stop_worker(worker: Any, task: asyncio.Task[None] | None, grace: float) -> None:
    if worker is None or task is None:
        return
    worker.request_stop()
    try:
        async with asyncio.timeout(grace + 5):
            await task
    except TimeoutError:
        log.warning("the worker did not stop within %.0f s; leaving its leases to expire", grace + 5)
        task.cancel()


def serve(
    host: Annotated[
        str, typer.Option(help="Interface to bind; non-loopback needs API keys or --insecure.")
    ] = ("127.0.0.1"),
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    concurrency: Concurrency = 8,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="API only; `trellis worker`s run runs.")
    ] = False,
    insecure: Annotated[
        bool, typer.Option(help="Allow a non-loopback --host although no API key exists (an open API).")
    ] = False,
    examples: Annotated[
        bool, typer.Option(help="Register examples/*.yaml (if present) and the bundled performance-agent.")
    ] = False,
    tools: Tools = None,
    grace: Grace = 30.0,
    keep_alive: Annotated[
        float, typer.Option(min=0.1, help="Seconds between SSE keep-alive comments.")
    ] = 15.0,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the REST API (and, unless --no-worker, execute runs) until SIGTERM/SIGINT."""
    import uvicorn

    from trellis.api import ApiSettings, create_app
    from trellis.runtime import Engine
    from trellis.store import open_store

    settings = _settings([*(tools or []), *(BUNDLED_TOOLS if examples else ())])
    directory = Path("examples")
    definitions = (
        {str(p): p.read_text() for p in sorted(directory.glob("*.yaml"))}
        if examples and directory.is_dir()
        else {}
    )
    if examples:
        definitions.update(_bundled_definitions())

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:  # signals are ours (see _on_signals)
            yield

    async def main() -> None:
        from trellis.observability import configure_logging

        store = await open_store(settings.database_url)
        try:
            keys = await store.list_api_keys()
        finally:
            await store.close()
        if not keys and not is_loopback(host) and not insecure:
            fail(
                f"refusing to bind {host}: no API key exists, so the API would be open to anyone who "
                "can reach it. Create one (`trellis keys create --role admin --name me`), bind to "
                "127.0.0.1, or pass --insecure if an open API is really intended",
                EXIT_INVALID,
            )
        configure_logging(log_level)
        async with Engine.open(settings, monitor=True) as engine:
            await _register_examples(engine, definitions)
            app = create_app(engine, settings=ApiSettings(keep_alive_seconds=keep_alive))
            config = uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level=log_level,
                log_config=None,  # uvicorn's lines go through the JSON logging configured above
                lifespan="off",
                timeout_graceful_shutdown=5,
            )
            pruning = _start_retention(engine, settings)
            server = Server(config)
            worker = None if no_worker else _worker_class()(engine, concurrency=concurrency)
            freeze_startup_heap()
            task = None if worker is None else asyncio.create_task(worker.run(grace_seconds=grace))
            triggers = start_triggers(engine, settings)  # schedules, callbacks, bus (issue 7)

            def stop() -> None:
                server.should_exit = True
                app.state.trellis.close_streams()
                if worker is not None:
                    worker.request_stop()

            mode = "no worker" if worker is None else f"embedded worker, {concurrency} slots"
            access = f"{len(keys)} API key(s)" if keys else "open: no API keys"
            err_console.print(f"trellis serve: http://{host}:{port} ({mode}; {access})", highlight=False)
            with _on_signals(stop):
                try:
                    await server.serve()
                finally:
                    app.state.trellis.close_streams()
                    await stop_triggers(triggers)
                    await _stop_worker(worker, task, grace)
                    if pruning is not None:
                        pruning.cancel()
                        await asyncio.gather(pruning, return_exceptions=True)

    run_async(main)


def worker(
    concurrency: Concurrency = 8,
    tools: Tools = None,
    grace: Grace = 30.0,
    metrics_port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="Serve this worker's Prometheus counters on this port."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="Log level of the JSON logs on stderr.")] = "info",
) -> None:
    """Execute queued runs (no HTTP API) until SIGTERM/SIGINT, then drain."""
    from trellis.runtime import Engine

    settings = _settings(tools)
    worker_class = _worker_class()

    async def main() -> None:
        from trellis.observability import configure_logging

        configure_logging(log_level)
        async with Engine.open(settings, monitor=True) as engine:
            if metrics_port is not None:
                from prometheus_client import start_http_server

                # Only this worker's own counters: the shared gauges (queue, breakers) come
                # from any API process's /metrics.
                start_http_server(metrics_port, addr="127.0.0.1", registry=engine.instruments.registry)
            runner = worker_class(engine, concurrency=concurrency)
            freeze_startup_heap()
            task = asyncio.create_task(runner.run(grace_seconds=grace))
            err_console.print(f"trellis worker {engine.owner}: {concurrency} slots", highlight=False)
            triggers = start_triggers(engine, settings)  # schedules, callbacks, bus (issue 7)
            with _on_signals(runner.request_stop):
                try:
                    await task  # returns once a signal asked it to stop and it drained
                finally:
                    await stop_triggers(triggers)

    run_async(main)

"""A fleet of simulated instances served over loopback HTTP, one uvicorn server each."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import uvicorn

from trellis.workflows.performance.collectors import ServerType
from trellis.workflows.performance.rollout import HttpRolloutTarget, Instance
from trellis.workflows.performance.simulator._app import SimInstance, create_app
from trellis.workflows.performance.simulator._engine import Regression, Workload


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host (tests, the fleet CLI)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class SimulatedFleet:
    """``instances`` simulated servers of one type on ``host``, started and stopped together.

    Use as an async context manager (or call :meth:`start` / :meth:`stop`)::

        async with SimulatedFleet(ServerType.VLLM, instances=4) as fleet:
            target = fleet.target()            # an HttpRolloutTarget over the admin API
            scrape = await fetch(fleet.instances[0].metrics_url)

    Args:
        server: server type to imitate.
        instances: fleet size.
        host: interface to bind; loopback by default (it is a simulator, not a service).
        port_base: first port (instance ``i`` listens on ``port_base + i``); 0 picks free
            ephemeral ports.
        config: launch configuration shared by every instance (overrides the flavour's
            deliberately mis-tuned defaults).
        regression: a fault injected into every instance from the start.
        speed: simulated seconds per wall second (0 = frozen, advance via ``/admin/advance``).
        seed: base RNG seed; instance ``i`` uses ``seed + i``.
    """

    def __init__(
        self,
        server: ServerType | str,
        *,
        instances: int = 4,
        host: str = "127.0.0.1",
        port_base: int = 0,
        config: Mapping[str, Any] | None = None,
        regression: Regression | None = None,
        speed: float = 1.0,
        seed: int = 0,
        warmup_seconds: float = 30.0,
        workload: Workload | None = None,
    ) -> None:
        if instances < 1:
            raise ValueError(f"a fleet needs at least one instance, got {instances}")
        self.server = ServerType(server)
        self.host = host
        self.port_base = port_base
        self.sims = [
            SimInstance(
                self.server,
                instance_id=f"{self.server.value}-{i}",
                config=config,
                fleet_size=instances,
                speed=speed,
                warmup_seconds=warmup_seconds,
                seed=seed + i,
                workload=workload,
            )
            for i in range(instances)
        ]
        if regression is not None:
            for sim in self.sims:
                sim.engine.inject(regression)
        self._servers: list[_QuietServer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.instances: tuple[Instance, ...] = ()

    async def start(self) -> SimulatedFleet:
        """Bind every instance and wait until all accept connections."""
        instances: list[Instance] = []
        try:
            for index, sim in enumerate(self.sims):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                port = self.port_base + index if self.port_base else 0
                try:
                    sock.bind((self.host, port))
                except OSError as exc:
                    sock.close()
                    raise OSError(
                        f"simulated instance {sim.id}: cannot bind {self.host}:{port}: {exc}"
                    ) from exc
                bound = sock.getsockname()[1]
                config = uvicorn.Config(
                    create_app(sim), log_level="warning", access_log=False, lifespan="off", ws="none"
                )
                server = _QuietServer(config)
                self._servers.append(server)
                self._tasks.append(asyncio.create_task(server.serve(sockets=[sock])))
                instances.append(Instance(id=sim.id, base_url=f"http://{self.host}:{bound}"))
            while not all(s.started for s in self._servers):
                failed = [t for t in self._tasks if t.done()]
                if failed:
                    failed[0].result()
                    raise RuntimeError("a simulated instance stopped during start-up")
                await asyncio.sleep(0.01)
        except BaseException:
            await self.stop()
            raise
        self.instances = tuple(instances)
        return self

    async def stop(self) -> None:
        for server in self._servers:
            server.should_exit = True
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._servers.clear()
        self._tasks.clear()

    async def __aenter__(self) -> SimulatedFleet:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def target(self, **kwargs: Any) -> HttpRolloutTarget:
        """An :class:`HttpRolloutTarget` over this fleet's admin endpoints."""
        return HttpRolloutTarget(self.instances, **kwargs)

    def describe(self) -> list[dict[str, str]]:
        return [i.to_dict() for i in self.instances]

    def __repr__(self) -> str:
        urls: Sequence[str] = [i.base_url for i in self.instances]
        return f"SimulatedFleet(server={self.server.value!r}, instances={list(urls)})"

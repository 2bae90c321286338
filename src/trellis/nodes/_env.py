"""Compile-time environment of node builders: the project's tools, model aliases, HTTP client."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from trellis.config import ModelAlias
from trellis.errors import HttpError, NotFound
from trellis.registry import Registry, registry

if TYPE_CHECKING:
    from trellis.agents import AgentDirectory, HealthMonitor
    from trellis.dsl.models import Workflow
    from trellis.resilience import BreakerBoard, BreakerPolicy

SubworkflowLoader = Callable[[str, int], Awaitable[tuple["Workflow", str]]]
"""``(name, version) -> (definition, content hash)`` of a pinned workflow version."""

MAX_RESPONSE_BYTES = 16 * 1024 * 1024
"""Largest HTTP response body a node accepts."""


@dataclass
class BuildEnv:
    """Everything node builders may use, shared by every graph a process compiles."""

    registry: Registry = field(default_factory=lambda: registry)
    models: dict[str, ModelAlias] = field(default_factory=dict)
    agents: AgentDirectory | None = None
    """The agent registry (``None`` outside the runtime: ``agent`` nodes then cannot run)."""
    breakers: BreakerBoard | None = None
    """Shared circuit breakers (``None``: calls are not guarded)."""
    health: HealthMonitor | None = None
    """Receives the outcome of every agent call."""
    http_breaker: BreakerPolicy | None = None
    """Breaker policy of ``http`` nodes, one circuit per host (``None``: not guarded)."""
    load_subworkflow: SubworkflowLoader | None = None
    _clients: dict[int, httpx.AsyncClient] = field(default_factory=dict)

    def http(self) -> httpx.AsyncClient:
        """A pooled HTTP client bound to the running event loop."""
        loop_id = id(asyncio.get_running_loop())
        client = self._clients.get(loop_id)
        if client is None or client.is_closed:
            client = httpx.AsyncClient(
                follow_redirects=False,
                timeout=httpx.Timeout(60.0, connect=10.0),
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
                trust_env=False,
            )
            self._clients[loop_id] = client
        return client

    async def aclose(self) -> None:
        """Close the HTTP clients of the running loop."""
        loop_id = id(asyncio.get_running_loop())
        client = self._clients.pop(loop_id, None)
        if client is not None:
            await client.aclose()

    def model(self, alias: str) -> ModelAlias:
        try:
            return self.models[alias]
        except KeyError:
            known = ", ".join(sorted(self.models)) or "none configured"
            raise NotFound(
                f"no model alias {alias!r} (configured: {known}); add [models.{alias}] to trellis.toml"
            ) from None


def json_or_text(response: httpx.Response) -> Any:
    """The response body as JSON when it is JSON, else as text."""
    if len(response.content) > MAX_RESPONSE_BYTES:
        raise HttpError(
            f"response from {response.request.url} is {len(response.content)} bytes, "
            f"over the {MAX_RESPONSE_BYTES} byte limit",
            retryable=False,
        )
    ctype = response.headers.get("content-type", "")
    if "json" in ctype:
        try:
            return response.json()
        except ValueError:
            return response.text
    return response.text

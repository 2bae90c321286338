"""The fake agent server: many named agents on one loopback port, each with its own faults.

Routes (``{agent}`` is a name given to :class:`AgentServer`):

* ``GET /{agent}/health`` → 200 ``{"status": "ok"}``, or 503 when the agent is set unhealthy;
* ``POST /{agent}/invoke``, ``POST /{agent}`` and any other method or subpath → the agent's
  answer, after its :class:`~trellis.testing.Behaviour` had its say;
* ``/_control/...`` → the admin API (see :func:`trellis.testing._serving.control_routes`).
"""

from __future__ import annotations

import inspect
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, TypeAlias

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from trellis.testing._behaviour import Behaviour, Decision, Endpoint, Failure, RecordedRequest
from trellis.testing._serving import ServerThread, answer, control_routes, failure_response

Responder: TypeAlias = Callable[[RecordedRequest], Any]
"""Builds the JSON body of an agent's successful answer (may be async, may return a Failure)."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


class FakeAgent(Endpoint):
    """One agent of an :class:`AgentServer`: its behaviour, its responder, what it received.

    Args:
        name: the agent's name, the first segment of its URLs.
        behaviour: the initial behaviour (default: answer at once, always OK).
        responder: builds success bodies; default echoes
            ``{"agent": name, "path": ..., "input": <request JSON>, "result": {"call": n}}``.
    """

    def __init__(
        self, name: str, behaviour: Behaviour | None = None, responder: Responder | None = None
    ) -> None:
        if not _NAME.fullmatch(name):
            raise ValueError(
                f"agent name {name!r} must match {_NAME.pattern} (names starting '_' are reserved)"
            )
        super().__init__(name, behaviour)
        self.initial_responder = responder
        self.responder = responder
        """The success-body builder now in force (``None``: the echo); assign to change it."""

    def reset(self, behaviour: Behaviour | None = None) -> None:
        """Like :meth:`Endpoint.reset`, and restore the responder the agent was created with."""
        super().reset(behaviour)
        self.responder = self.initial_responder

    async def success_body(self, decision: Decision, request: RecordedRequest) -> Any:
        """The body of a successful answer: the fixed ``reply``, the responder's, or the echo."""
        if self.behaviour.reply is not None:
            return self.behaviour.reply
        if self.responder is None:
            return {
                "agent": self.name,
                "path": request.path,
                "input": request.json,
                "result": {"call": decision.call},
            }
        body = self.responder(request)
        return await body if inspect.isawaitable(body) else body


class AgentServer(ServerThread):
    """Fake HTTP agents with faults that tests change while they run.

    Args:
        agents: agent names, or a mapping of name to initial :class:`Behaviour` (or ``None``).
        responders: optional success-body builders, by agent name.
        port: port to bind on 127.0.0.1; ``0`` picks a free one.

    Example::

        with AgentServer(agents={"nlp": Behaviour(latency=0.05), "data": None}) as server:
            url = server.url("nlp", "/invoke")       # http://127.0.0.1:<port>/nlp/invoke
            server["nlp"].set(script=["error", "ok"])
            assert httpx.post(url, json={"q": 1}).status_code == 500
            assert httpx.post(url, json={"q": 1}).json()["input"] == {"q": 1}
            assert server["nlp"].count == 2

    The same control is open over HTTP to other processes:
    ``POST /_control/nlp`` with ``{"status": 503, "retry_after": 1}``.
    """

    def __init__(
        self,
        agents: Iterable[str] | Mapping[str, Behaviour | None] = ("agent",),
        *,
        responders: Mapping[str, Responder] | None = None,
        port: int = 0,
        startup_timeout: float = 10.0,
        shutdown_timeout: float = 5.0,
    ) -> None:
        self._agents: dict[str, FakeAgent] = {}
        self._agents_lock = threading.Lock()
        behaviours = agents if isinstance(agents, Mapping) else dict.fromkeys(agents)
        responders = responders or {}
        unknown = sorted(set(responders) - set(behaviours))
        if unknown:
            raise ValueError(f"responders given for agents that do not exist: {unknown}")
        for name, behaviour in behaviours.items():
            self.add(name, behaviour, responders.get(name))
        super().__init__(
            self._build_app(), port=port, startup_timeout=startup_timeout, shutdown_timeout=shutdown_timeout
        )

    def __repr__(self) -> str:
        port = "stopped" if self._port is None else f"port={self._port}"
        return f"AgentServer({port}, agents={sorted(self._agents)})"

    def add(
        self, name: str, behaviour: Behaviour | None = None, responder: Responder | None = None
    ) -> FakeAgent:
        """Add an agent (also while running) and return its handle."""
        agent = FakeAgent(name, behaviour, responder)
        with self._agents_lock:
            if name in self._agents:
                raise ValueError(f"agent {name!r} already exists")
            self._agents[name] = agent
        return agent

    def reset(self) -> None:
        """Reset every agent to its initial behaviour and forget all requests.

        Handy with one server shared by a module's tests::

            @pytest.fixture
            def agents(shared_agents: AgentServer) -> AgentServer:
                shared_agents.reset()
                return shared_agents
        """
        for agent in list(self._agents.values()):
            agent.reset()

    def __getitem__(self, name: str) -> FakeAgent:
        try:
            return self._agents[name]
        except KeyError:
            raise KeyError(f"no agent {name!r}; agents: {sorted(self._agents)}") from None

    @property
    def agents(self) -> Mapping[str, FakeAgent]:
        """The agents by name (read-only view)."""
        return MappingProxyType(self._agents)

    def url(self, agent: str, path: str = "") -> str:
        """Absolute URL of ``agent`` (its base URL), or of ``path`` below it."""
        self[agent]
        return f"{self.origin}/{agent}{path}"

    # -- the control API's view (trellis.testing._serving.Endpoints) --------------------------

    def endpoint_names(self) -> list[str]:
        return sorted(self._agents)

    def find_endpoint(self, name: str) -> Endpoint | None:
        return self._agents.get(name)

    # -- HTTP -------------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        routes = [
            *control_routes(self),
            Route("/{agent}/health", self._health, methods=["GET"]),
            Route("/{agent}", self._invoke, methods=_METHODS),
            Route("/{agent}/{path:path}", self._invoke, methods=_METHODS),
        ]
        return Starlette(routes=routes)

    def _unknown(self, name: str) -> Response:
        return JSONResponse({"error": f"unknown agent {name!r}", "agents": sorted(self._agents)}, 404)

    async def _health(self, request: Request) -> Response:
        agent = self._agents.get(request.path_params["agent"])
        if agent is None:
            return self._unknown(request.path_params["agent"])
        if agent.check_health(request.method, "/health", request.headers):
            return JSONResponse({"status": "ok", "agent": agent.name})
        return JSONResponse({"status": "unavailable", "agent": agent.name}, 503)

    async def _invoke(self, request: Request) -> Response:
        agent = self._agents.get(request.path_params["agent"])
        if agent is None:
            return self._unknown(request.path_params["agent"])
        path = "/" + request.path_params.get("path", "")

        def error_body(failure: Failure) -> dict[str, Any]:
            return {"error": failure.message, "status": failure.status, "agent": agent.name}

        async def ok(decision: Decision, record: RecordedRequest) -> Response:
            try:
                body = await agent.success_body(decision, record)
            except Exception as exc:  # a broken responder is the test's bug: say so in the answer
                failure = Failure(500, message=f"responder raised {type(exc).__name__}: {exc}")
                return failure_response(failure, error_body(failure))
            if isinstance(body, Failure):
                return failure_response(body, error_body(body))
            return JSONResponse(body)

        return await answer(
            agent,
            request,
            path,
            self.stopping,
            ok=ok,
            error_body=error_body,
            wrong_shape=lambda decision: {"unexpected": "shape", "agent": agent.name},
        )

"""Serving machinery shared by the fake servers: uvicorn in a thread, faults, control routes.

* :class:`ServerThread` runs an ASGI app with uvicorn on ``127.0.0.1`` in a daemon thread:
  ``start()`` returns once the socket listens (port 0 gets a free port), ``stop()`` is bounded.
* :func:`answer` turns an :class:`~trellis.testing._behaviour.Endpoint`'s decision into a
  response: latency, hang, injected status, malformed body, or the server's own success answer.
* :func:`control_routes` is the HTTP admin API (``/_control/...``) over a set of endpoints, so a
  separate process can steer a fake server.
* :func:`serve_until_signalled` is the body of the ``python -m`` entry points.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from types import FrameType, TracebackType
from typing import Any, Literal, Protocol, Self, TypeAlias

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from trellis.testing._behaviour import Behaviour, Decision, Endpoint, Failure, RecordedRequest

HOST = "127.0.0.1"
_TICK = 0.02  # seconds between checks of a waiting request (stop, disconnect, release)


class _WakeableServer(uvicorn.Server):
    """uvicorn's server, woken at once by :meth:`request_exit` instead of at its next 0.1 s tick.

    Stopping is the cost every test pays once per fake server, so it is worth one override;
    ``main_loop`` keeps uvicorn's own ``on_tick`` bookkeeping (date header, exit checks).
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864_000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)

    def request_exit(self) -> None:
        """Ask the server to stop; safe from any thread."""
        self.should_exit = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between: nothing to wake
                loop.call_soon_threadsafe(wake.set)


class ServerThread:
    """Run an ASGI app with uvicorn on ``127.0.0.1`` in a background thread.

    Args:
        app: the ASGI application.
        port: port to bind; ``0`` picks a free one (read it from :attr:`port` after start).
        startup_timeout: seconds to wait for the socket to listen.
        shutdown_timeout: seconds to wait for the thread to end on :meth:`stop`.

    Example::

        with ServerThread(app) as server:
            httpx.get(server.origin + "/ping")
    """

    def __init__(
        self, app: ASGIApp, *, port: int = 0, startup_timeout: float = 10.0, shutdown_timeout: float = 5.0
    ) -> None:
        self.app = app
        self.requested_port = port
        self.startup_timeout = startup_timeout
        self.shutdown_timeout = shutdown_timeout
        self.stopping = threading.Event()
        """Set when :meth:`stop` begins; waiting handlers give up when they see it."""
        self._server: _WakeableServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    def __repr__(self) -> str:
        state = f"port={self._port}" if self._port is not None else "stopped"
        return f"{type(self).__name__}({state})"

    @property
    def port(self) -> int:
        """The bound port; raises ``RuntimeError`` before :meth:`start`."""
        if self._port is None:
            raise RuntimeError("server is not running; call start() or use it as a context manager")
        return self._port

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{HOST}:{self.port}"

    def start(self) -> Self:
        """Start serving; return once the socket accepts connections."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        config = uvicorn.Config(
            self.app,
            host=HOST,
            port=self.requested_port,
            loop="asyncio",
            http="h11",
            ws="none",
            lifespan="off",
            log_config=None,  # leave the process's logging configuration alone
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,  # backstop; waiting handlers also watch `stopping`
        )
        # uvicorn >= 0.29 installs signal handlers only in the main thread (Server.capture_signals),
        # so a server in this thread leaves the test process's SIGINT/SIGTERM handling untouched.
        server = _WakeableServer(config)
        self.stopping.clear()
        self._server = server
        failure: list[BaseException] = []

        def run() -> None:
            # uvicorn answers a failed bind with sys.exit(); keep it (and anything else) for start()
            # to report instead of letting it reach threading.excepthook.
            try:
                server.run()
            except BaseException as exc:
                failure.append(exc)

        self._thread = threading.Thread(target=run, name=f"trellis-testing-{id(self):x}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not server.started:
            if not self._thread.is_alive():
                self._thread = self._server = None
                where = f"{HOST}:{self.requested_port}"
                cause = failure[0] if failure else None
                raise RuntimeError(
                    f"server failed to start on {where} (the 'uvicorn.error' log says why)"
                ) from cause
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"server did not start within {self.startup_timeout}s")
            time.sleep(0.005)
        self._port = int(server.servers[0].sockets[0].getsockname()[1])
        return self

    def stop(self) -> None:
        """Stop serving: release waiting requests, close connections, join the thread (bounded)."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self.stopping.set()
        server.request_exit()
        thread.join(self.shutdown_timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(1.0)
        self._server = self._thread = None
        self._port = None
        if thread.is_alive():
            raise RuntimeError(f"server thread did not stop within {self.shutdown_timeout + 1.0}s")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


WaitEnd: TypeAlias = Literal["elapsed", "condition", "stopping", "disconnected"]


async def wait_until(
    condition: Callable[[], bool], request: Request, stopping: threading.Event, seconds: float | None
) -> WaitEnd:
    """Wait ``seconds`` (``None``: forever) unless something ends the wait; say what ended it.

    Polls every 20 ms: cheap, and correct across threads (``stopping`` and ``condition`` are
    set from the test's thread, not the server's event loop).
    """
    deadline = None if seconds is None else time.monotonic() + seconds
    while True:
        if stopping.is_set():
            return "stopping"
        if condition():
            return "condition"
        if await request.is_disconnected():
            return "disconnected"
        left = _TICK if deadline is None else deadline - time.monotonic()
        if left <= 0:
            return "elapsed"
        await asyncio.sleep(min(left, _TICK))


def failure_response(failure: Failure, body: Any) -> Response:
    """An error answer with ``failure.status`` and ``Retry-After`` when the failure has one."""
    headers = {}
    if failure.retry_after is not None:
        value = failure.retry_after
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        headers["Retry-After"] = str(value)
    return JSONResponse(body, status_code=failure.status, headers=headers)


async def answer(
    endpoint: Endpoint,
    request: Request,
    path: str,
    stopping: threading.Event,
    *,
    ok: Callable[[Decision, RecordedRequest], Awaitable[Response]],
    error_body: Callable[[Failure], Any],
    wrong_shape: Callable[[Decision], Any],
) -> Response:
    """Admit one call on ``endpoint`` and answer it as its behaviour says.

    Args:
        ok: builds the success answer from the decision and the recorded request.
        error_body: the JSON body of an injected error.
        wrong_shape: a JSON body that parses but is not what clients expect.
    """
    decision, record = endpoint.admit(request.method, path, request.headers, await request.body())
    if decision.delay:
        await wait_until(lambda: False, request, stopping, decision.delay)
    if decision.outcome == "hang":
        ended = await wait_until(lambda: endpoint.released(decision), request, stopping, None)
        if ended != "condition":
            gave_up = Failure(503, message=f"hang ended: {ended}")
            return failure_response(gave_up, error_body(gave_up))
        return await ok(decision, record)
    if decision.failure is not None:
        return failure_response(decision.failure, error_body(decision.failure))
    if decision.outcome == "invalid_json":
        return Response(b'{"truncated": ["not json', media_type="application/json")
    if decision.outcome == "wrong_shape":
        return JSONResponse(wrong_shape(decision))
    return await ok(decision, record)


class Endpoints(Protocol):
    """Anything that can look up endpoints by name (the control API's view of a server)."""

    def endpoint_names(self) -> list[str]: ...

    def find_endpoint(self, name: str) -> Endpoint | None: ...


class _ControlError(Exception):
    def __init__(self, status: int, payload: dict[str, Any]) -> None:
        super().__init__(payload)
        self.status = status
        self.payload = payload


def control_routes(server: Endpoints) -> list[Route]:
    """``/_control`` routes: list endpoints, read one, change its behaviour, reset it.

    * ``GET /_control`` → ``{name: state}`` for every endpoint;
    * ``GET /_control/{name}`` → its behaviour, remaining script, count and requests;
    * ``POST /_control/{name}`` with behaviour fields as JSON → changes them, answers the state;
    * ``POST /_control/{name}/reset`` → the given behaviour fields on top of the defaults (no body:
      the endpoint's initial behaviour), requests forgotten, hangs released.

    Invalid fields answer 400 and change nothing; an unknown name answers 404.
    """

    def find(request: Request) -> Endpoint:
        name = request.path_params["name"]
        endpoint = server.find_endpoint(name)
        if endpoint is None:
            raise _ControlError(
                404, {"error": f"unknown endpoint {name!r}", "known": server.endpoint_names()}
            )
        return endpoint

    async def fields_of(request: Request) -> dict[str, Any]:
        raw = await request.body()
        try:
            data = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            raise _ControlError(400, {"error": f"body is not JSON: {exc}"}) from exc
        if not isinstance(data, dict):
            raise _ControlError(400, {"error": "body must be a JSON object of behaviour fields"})
        return data

    async def list_all(request: Request) -> dict[str, Any]:
        endpoints = (server.find_endpoint(n) for n in server.endpoint_names())
        return {e.name: e.snapshot() for e in endpoints if e is not None}

    async def show(request: Request) -> dict[str, Any]:
        return find(request).snapshot()

    async def change(request: Request) -> dict[str, Any]:
        endpoint, data = find(request), await fields_of(request)
        new = Behaviour.from_json(data, base=endpoint.behaviour)  # validates before anything changes
        endpoint.set(**{name: getattr(new, name) for name in data})
        return endpoint.snapshot()

    async def reset(request: Request) -> dict[str, Any]:
        endpoint, data = find(request), await fields_of(request)
        endpoint.reset(Behaviour.from_json(data) if data else None)
        return endpoint.snapshot()

    def route(path: str, handler: Callable[[Request], Awaitable[dict[str, Any]]], method: str) -> Route:
        async def endpoint(request: Request) -> Response:
            try:
                return JSONResponse(await handler(request))
            except _ControlError as exc:
                return JSONResponse(exc.payload, exc.status)
            except (TypeError, ValueError) as exc:
                return JSONResponse({"error": str(exc)}, 400)

        return Route(path, endpoint, methods=[method])

    return [
        route("/_control", list_all, "GET"),
        route("/_control/{name}", show, "GET"),
        route("/_control/{name}", change, "POST"),
        route("/_control/{name}/reset", reset, "POST"),
    ]


def serve_until_signalled(server: ServerThread, *, print_port: bool, describe: Callable[[], str]) -> int:
    """Run ``server`` until SIGINT or SIGTERM; once listening, print the port (when asked) on
    stdout and a one-line description on stderr."""
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with server:
            if print_port:
                print(server.port, flush=True)
            print(describe(), file=sys.stderr, flush=True)
            while not done.wait(0.5):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0

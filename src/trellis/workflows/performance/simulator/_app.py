"""One simulated instance as an HTTP app: ``/metrics`` plus the admin API.

The admin API implements the contract documented in
:mod:`trellis.workflows.performance.rollout._target` (``/admin/config``, ``/admin/restore``,
``/admin/weight``) and adds simulator-only controls:

``POST /admin/regression`` with ``{"latency_factor", "error_rate", "kv_capacity_factor",
"only_when_changed"}``
    Inject a fault (``DELETE`` clears it). By default it only shows while the instance runs a
    configuration other than its original one: a bad change for the canary gate to catch.
``POST /admin/advance`` with ``{"seconds": n}``
    Move simulated time forward at once (tests and demos; with ``speed=0`` the clock only
    moves this way).
``GET /admin/state``
    The model's internals (simulated time, running, waiting, KV usage, step time).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from trellis.workflows.performance.collectors import ServerType
from trellis.workflows.performance.simulator._engine import Regression, SimEngine, Workload
from trellis.workflows.performance.simulator._flavours import FLAVOURS, KnobValue

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class SimInstance:
    """A simulated instance: engine, configuration (current and original), clock.

    Args:
        server: which server's flags and metric format to imitate.
        instance_id: name used in logs and the admin answers.
        config: launch configuration overrides on top of the flavour's defaults.
        fleet_size: instances in the fleet (the default traffic weight is ``1 / fleet_size``).
        speed: simulated seconds per wall-clock second; 0 freezes the clock (``advance`` only).
        warmup_seconds: simulated time run at start so the histograms are not empty.
        seed: RNG seed (the model is deterministic for a seed and a call sequence).
    """

    def __init__(
        self,
        server: ServerType | str,
        *,
        instance_id: str = "sim-0",
        config: Mapping[str, Any] | None = None,
        fleet_size: int = 1,
        speed: float = 1.0,
        warmup_seconds: float = 30.0,
        seed: int = 0,
        workload: Workload | None = None,
    ) -> None:
        self.flavour = FLAVOURS[ServerType(server)]
        self.id = instance_id
        self.original: dict[str, KnobValue] = {
            **self.flavour.defaults(),
            **self.flavour.validate(config or {}),
        }
        self.config = dict(self.original)
        self.speed = speed
        self.engine = SimEngine(
            self.flavour.to_params(self.config),
            workload=workload,
            weight=1.0 / fleet_size,
            fleet_size=fleet_size,
            seed=seed,
            latency_bounds=dict(self.flavour.bounds),
        )
        self.engine.advance(warmup_seconds)
        self._wall = time.monotonic()

    def sync(self) -> None:
        """Advance simulated time by the wall-clock time elapsed since the last sync x speed."""
        now = time.monotonic()
        if self.speed > 0:
            self.engine.advance((now - self._wall) * self.speed)
        self._wall = now

    def apply(self, changes: Mapping[str, Any]) -> dict[str, KnobValue]:
        """Merge ``changes`` into the configuration; raises ``ValueError`` on bad knobs."""
        self.sync()
        self.config.update(self.flavour.validate(changes))
        self.engine.set_params(self.flavour.to_params(self.config), changed=self.config != self.original)
        return dict(self.config)

    def restore(self) -> dict[str, KnobValue]:
        self.sync()
        self.config = dict(self.original)
        self.engine.set_params(self.flavour.to_params(self.config), changed=False)
        return dict(self.config)

    def metrics(self) -> str:
        self.sync()
        return self.flavour.write(self.engine, self.config)

    def describe(self) -> dict[str, Any]:
        s = self.engine.state
        return {
            "id": self.id,
            "server": self.flavour.server.value,
            "simulated_seconds": s.now,
            "running": s.running,
            "waiting": s.waiting,
            "kv_usage": s.kv_usage,
            "step_seconds": s.step_seconds,
            "weight": self.engine.weight,
            "changed": self.engine.changed,
            "regression": vars_of(self.engine.regression),
        }


def vars_of(regression: Regression) -> dict[str, Any]:
    return {
        "latency_factor": regression.latency_factor,
        "error_rate": regression.error_rate,
        "kv_capacity_factor": regression.kv_capacity_factor,
        "only_when_changed": regression.only_when_changed,
    }


def _problem(status: int, title: str, detail: str) -> JSONResponse:
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        status_code=status,
        media_type="application/problem+json",
    )


async def _json_object(request: Request) -> dict[str, Any] | JSONResponse:
    try:
        body = await request.json()
    except ValueError:
        return _problem(400, "Bad Request", "body must be a JSON object")
    if not isinstance(body, dict):
        return _problem(400, "Bad Request", f"body must be a JSON object, got {type(body).__name__}")
    return body


def create_app(instance: SimInstance) -> Starlette:
    """The Starlette app serving ``instance``."""

    async def metrics(_: Request) -> Response:
        return PlainTextResponse(instance.metrics(), media_type=CONTENT_TYPE)

    async def get_config(_: Request) -> Response:
        instance.sync()
        return JSONResponse(
            {"config": instance.config, "original": instance.original, "weight": instance.engine.weight}
        )

    async def post_config(request: Request) -> Response:
        body = await _json_object(request)
        if isinstance(body, JSONResponse):
            return body
        changes = body.get("config")
        if not isinstance(changes, dict):
            return _problem(422, "Unprocessable Content", "body needs a 'config' object of knob -> value")
        try:
            return JSONResponse({"config": instance.apply(changes)})
        except ValueError as exc:
            return _problem(422, "Unprocessable Content", f"instance {instance.id}: {exc}")

    async def restore(_: Request) -> Response:
        return JSONResponse({"config": instance.restore()})

    async def weight(request: Request) -> Response:
        body = await _json_object(request)
        if isinstance(body, JSONResponse):
            return body
        value = body.get("weight")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            return _problem(
                422, "Unprocessable Content", f"'weight' must be a number in [0, 1], got {value!r}"
            )
        instance.sync()
        instance.engine.set_weight(float(value))
        return JSONResponse({"weight": instance.engine.weight})

    async def regression(request: Request) -> Response:
        if request.method == "DELETE":
            instance.engine.inject(Regression())
            return JSONResponse({"regression": vars_of(instance.engine.regression)})
        body = await _json_object(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            fault = Regression(
                latency_factor=float(body.get("latency_factor", 1.0)),
                error_rate=float(body.get("error_rate", 0.0)),
                kv_capacity_factor=float(body.get("kv_capacity_factor", 1.0)),
                only_when_changed=bool(body.get("only_when_changed", True)),
            )
        except (TypeError, ValueError) as exc:
            return _problem(422, "Unprocessable Content", f"invalid regression: {exc}")
        if fault.latency_factor <= 0 or not 0 <= fault.error_rate <= 1 or fault.kv_capacity_factor <= 0:
            return _problem(
                422,
                "Unprocessable Content",
                "need latency_factor > 0, 0 <= error_rate <= 1, kv_capacity_factor > 0",
            )
        instance.sync()
        instance.engine.inject(fault)
        return JSONResponse({"regression": vars_of(fault)})

    async def advance(request: Request) -> Response:
        body = await _json_object(request)
        if isinstance(body, JSONResponse):
            return body
        seconds = body.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= 86400:
            return _problem(
                422, "Unprocessable Content", f"'seconds' must be a number in [0, 86400], got {seconds!r}"
            )
        instance.sync()
        instance.engine.advance(float(seconds))
        return JSONResponse(instance.describe())

    async def state(_: Request) -> Response:
        instance.sync()
        return JSONResponse(instance.describe())

    async def health(_: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/metrics", metrics),
            Route("/health", health),
            Route("/admin/config", get_config, methods=["GET"]),
            Route("/admin/config", post_config, methods=["POST"]),
            Route("/admin/restore", restore, methods=["POST"]),
            Route("/admin/weight", weight, methods=["POST"]),
            Route("/admin/regression", regression, methods=["POST", "DELETE"]),
            Route("/admin/advance", advance, methods=["POST"]),
            Route("/admin/state", state, methods=["GET"]),
        ]
    )

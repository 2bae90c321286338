"""The ``performance-agent`` workflow end to end, against a simulated fleet on loopback.

Every test runs the bundled definition through a real engine and a real (simulated) fleet of
four vLLM-like instances served over HTTP. The simulator runs fast (``speed``: simulated seconds
per wall second) and the bakes are short, so a whole rollout takes a few seconds. Each admin and
metrics request an instance receives is recorded with the ``X-Trellis-*`` headers the tools
send, so the tests count what was applied where, by which node and stage.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine_support import open_engine
from trellis.api import create_app
from trellis.registry import Registry
from trellis.runtime import Engine
from trellis.types import RunStatus
from trellis.workflows.performance import WORKFLOW_FILE
from trellis.workflows.performance.simulator import Regression, SimulatedFleet
from trellis.workflows.performance.simulator import _fleet as fleet_module
from trellis.workflows.performance.tools import register

SPEED = 40.0
"""Simulated seconds per wall second: ~80 finished requests per instance per 0.5 s window."""

FAST = {
    "collect_seconds": 1.0,
    "interval_seconds": 0.25,
    "bake_seconds": 1.0,
    "window_seconds": 0.5,
    "min_requests": 50,
}
"""Input that keeps a rollout to a few seconds (two judged windows per stage)."""

SLOW_REGRESSION = Regression(latency_factor=3.0, only_when_changed=True)
"""Triples latency, on instances running a changed configuration only (a bad change)."""


@dataclass
class Recorded:
    """A simulated fleet whose instances log every request (and can react to one)."""

    fleet: SimulatedFleet
    requests: list[dict[str, str]] = field(default_factory=list)
    on_request: Callable[[dict[str, str]], None] | None = None

    @property
    def urls(self) -> list[str]:
        return [i.base_url for i in self.fleet.instances]

    def where(self, **match: str) -> list[dict[str, str]]:
        return [r for r in self.requests if all(r.get(k) == v for k, v in match.items())]

    def configs(self) -> list[dict[str, Any]]:
        return [dict(sim.config) for sim in self.fleet.sims]

    def originals(self) -> list[dict[str, Any]]:
        return [dict(sim.original) for sim in self.fleet.sims]


@pytest.fixture
async def fleet(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Recorded]:
    recorded = Recorded(SimulatedFleet("vllm", instances=4, speed=SPEED))
    original = fleet_module.create_app

    def recording_app(sim: Any) -> Any:
        app = original(sim)

        async def wrapped(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                headers = {k.decode(): v.decode() for k, v in scope["headers"]}
                entry = {
                    "instance": sim.id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "node": headers.get("x-trellis-node", ""),
                    "stage": headers.get("x-trellis-stage", ""),
                }
                recorded.requests.append(entry)
                if recorded.on_request is not None:
                    recorded.on_request(entry)
            await app(scope, receive, send)

        return wrapped

    monkeypatch.setattr(fleet_module, "create_app", recording_app)
    async with recorded.fleet:
        yield recorded


@pytest.fixture
def perf_tools() -> Registry:
    return register(Registry())


async def _start(engine: Engine, fleet: Recorded, **options: Any) -> str:
    await engine.register(WORKFLOW_FILE.read_text(), filename=str(WORKFLOW_FILE))
    run = await engine.submit("performance-agent", {"instances": fleet.urls, **FAST, **options})
    return run.id


def _applied(fleet: Recorded) -> list[str]:
    """Instances that received a configuration change, in order."""
    return [r["instance"] for r in fleet.where(method="POST", path="/admin/config")]


class TestRollout:
    async def test_a_good_change_is_rolled_out_through_10_50_100(
        self, database_url: str, perf_tools: Registry, fleet: Recorded, tmp_path: Path
    ) -> None:
        async with open_engine(tmp_path, perf_tools, database_url=database_url) as engine:
            run_id = await _start(engine, fleet, auto_rollout=True)
            run = await engine.execute(run_id)
            assert run.status == RunStatus.SUCCEEDED, run.error
            out = run.output
            assert out["outcome"] == "completed"
            assert "queue-admission-capped" in out["findings"]
            assert [s["percent"] for s in out["stages_done"]] == [10, 50, 100]
            assert [len(s["canary"]) for s in out["stages_done"]] == [1, 2, 4]
            assert [v["verdict"] for v in out["verdicts"]] == ["pass", "pass", "pass"]
            assert out["final"]["complete"] is True
            for config in fleet.configs():
                assert {k: config[k] for k in out["changes"]} == out["changes"]
            # Each instance changed once, canaries first; no approval was asked (auto_rollout).
            assert _applied(fleet) == ["vllm-0", "vllm-1", "vllm-2", "vllm-3"]
            events = await engine.store.list_events(run_id)
            assert not [e for e in events if e.type == "run.waiting"]
            progress = [e.data for e in events if e.type == "node.progress" and e.node == "bake"]
            assert {p.get("stage") for p in progress} == {1, 2, 3}
            assert any(p.get("verdict") == "pass" for p in progress)
            state = (await engine.state(run_id))["values"]
            assert state["stage_index"] == 3
            assert state["stage"]["stage"] == 3

    async def test_a_regression_at_10_percent_is_rolled_back_everywhere(
        self, perf_tools: Registry, fleet: Recorded, tmp_path: Path
    ) -> None:
        for sim in fleet.fleet.sims:
            sim.engine.inject(SLOW_REGRESSION)
        async with open_engine(tmp_path, perf_tools) as engine:
            run = await engine.execute(await _start(engine, fleet, auto_rollout=True))
            assert run.status == RunStatus.SUCCEEDED, run.error
            out = run.output
            assert out["outcome"] == "rolled_back"
            assert out["stages_done"] == []
            assert out["rollback"]["stage"] == 1
            assert out["rollback"]["reason"].startswith("stage 1 (10%) failed:")
            assert "itl_p95" in out["rollback"]["reason"]
            assert _applied(fleet) == ["vllm-0"]
            assert fleet.configs() == fleet.originals()
            assert len(fleet.where(method="POST", path="/admin/restore")) == 4

    async def test_a_regression_appearing_at_50_percent_is_rolled_back_after_10_passed(
        self, perf_tools: Registry, fleet: Recorded, tmp_path: Path
    ) -> None:
        def inject_at_stage_2(request: dict[str, str]) -> None:
            if request["stage"] == "2":
                for sim in fleet.fleet.sims:
                    sim.engine.inject(SLOW_REGRESSION)

        fleet.on_request = inject_at_stage_2
        async with open_engine(tmp_path, perf_tools) as engine:
            run = await engine.execute(await _start(engine, fleet, auto_rollout=True))
            assert run.status == RunStatus.SUCCEEDED, run.error
            out = run.output
            assert out["outcome"] == "rolled_back"
            assert [s["percent"] for s in out["stages_done"]] == [10]
            assert [v["action"] for v in out["verdicts"]] == ["promote", "rollback"]
            assert out["rollback"]["stage"] == 2
            assert out["rollback"]["reason"].startswith("stage 2 (50%) failed:")
            assert _applied(fleet) == ["vllm-0", "vllm-1"]
            assert fleet.configs() == fleet.originals()
            assert set(out["rollback"]["config"]) == {u.removeprefix("http://") for u in fleet.urls}


class TestHumans:
    async def test_rejecting_the_plan_over_rest_applies_nothing(
        self, perf_tools: Registry, fleet: Recorded, tmp_path: Path
    ) -> None:
        async with open_engine(tmp_path, perf_tools) as engine:
            await engine.register(WORKFLOW_FILE.read_text())
            transport = httpx.ASGITransport(app=create_app(engine))
            async with httpx.AsyncClient(transport=transport, base_url="http://trellis.test") as api:
                created = await api.post(
                    "/v1/runs",
                    json={"workflow": "performance-agent", "input": {"instances": fleet.urls, **FAST}},
                )
                assert created.status_code == 201, created.text
                run_id = created.json()["id"]
                run = await engine.execute(run_id)
                assert run.status == RunStatus.WAITING
                assert run.parked is not None
                (gate,) = run.parked["interrupts"]
                assert gate["node"] == "approve"
                assert "Roll out 2 change(s) to 4" in gate["title"]
                rejected = await api.post(f"/v1/runs/{run_id}/reject", json={"comment": "not this week"})
                assert rejected.status_code == 200, rejected.text
            run = await engine.execute(run_id)
            assert run.status == RunStatus.SUCCEEDED, run.error
            assert run.output["outcome"] == "rejected"
            assert run.output["stages_done"] == []
            assert _applied(fleet) == []
            assert fleet.configs() == fleet.originals()

    async def test_an_inconclusive_stage_waits_for_a_human_and_approval_continues(
        self, perf_tools: Registry, fleet: Recorded, tmp_path: Path
    ) -> None:
        """Too few requests per window is inconclusive: never a pass, never a rollback."""
        async with open_engine(tmp_path, perf_tools) as engine:
            run_id = await _start(engine, fleet, auto_rollout=True, min_requests=1e9)
            holds = 0
            run = await engine.execute(run_id)
            while run.status == RunStatus.WAITING:
                assert run.parked is not None
                (gate,) = run.parked["interrupts"]
                assert gate["node"] == "hold"
                holds += 1
                state = (await engine.state(run_id))["values"]
                assert state["verdict"]["action"] == "hold"
                assert state["verdict"]["reason"].startswith("too little data")
                assert len(state["stages_done"]) == holds - 1
                await engine.decide(run_id, approved=True, actor="alice", comment="looks fine")
                run = await engine.execute(run_id)
            assert run.status == RunStatus.SUCCEEDED, run.error
            assert holds == 3
            assert run.output["outcome"] == "completed"
            assert [s["action"] for s in run.output["stages_done"]] == ["hold"] * 3

    async def test_rejecting_a_held_stage_rolls_back(
        self, perf_tools: Registry, fleet: Recorded, tmp_path: Path
    ) -> None:
        async with open_engine(tmp_path, perf_tools) as engine:
            run_id = await _start(engine, fleet, auto_rollout=True, min_requests=1e9)
            run = await engine.execute(run_id)
            assert run.status == RunStatus.WAITING
            await engine.decide(run_id, approved=False, actor="bob", comment="too risky")
            run = await engine.execute(run_id)
            assert run.status == RunStatus.SUCCEEDED, run.error
            assert run.output["outcome"] == "rolled_back"
            assert "rejected by bob" in run.output["rollback"]["reason"]
            assert fleet.configs() == fleet.originals()


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TRELLIS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'trellis.db'}",
        "TRELLIS_TOOLS": "trellis.workflows.performance.tools",
        # The killed process' lease must expire before another process may take the run over.
        "TRELLIS_LEASE_SECONDS": "2",
    }


@pytest.mark.slow
async def test_a_run_killed_while_baking_stage_2_resumes_there_without_reapplying(
    fleet: Recorded, tmp_path: Path
) -> None:
    """kill -9 of `trellis run` during stage 2's bake; another process resumes at that stage."""
    (tmp_path / "input.json").write_text(json.dumps({"instances": fleet.urls, **FAST, "auto_rollout": True}))
    baking = asyncio.Event()
    fleet.on_request = lambda r: baking.set() if (r["node"], r["stage"]) == ("bake", "2") else None
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "trellis",
        "run",
        str(WORKFLOW_FILE),
        "--input",
        f"@{tmp_path / 'input.json'}",
        "--json",
        env=_env(tmp_path),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await asyncio.wait_for(baking.wait(), 30)
    except TimeoutError:
        proc.kill()
        _, err = await proc.communicate()
        pytest.fail(f"the run never reached stage 2's bake: {err.decode()[-2000:]}")
    await asyncio.sleep(0.2)  # inside the bake's first window
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert _applied(fleet) == ["vllm-0", "vllm-1"]
    baked_before = len(fleet.where(node="bake", stage="2"))

    # Another process takes the run over once the dead one's lease expired (2 s here).
    async with open_engine(tmp_path, register(Registry())) as engine:
        (listed,) = (await engine.store.list_runs())[0]
        assert listed.status == RunStatus.RUNNING
        await engine.resume(listed.id)
        resumed = await engine.execute(listed.id)
        assert resumed.status == RunStatus.SUCCEEDED, resumed.error
        assert resumed.output["outcome"] == "completed"
        assert [s["percent"] for s in resumed.output["stages_done"]] == [10, 50, 100]
        started = [e.node for e in await engine.store.list_events(listed.id) if e.type == "node.started"]

    # The apply node of stages 1 and 2 ran once each (one config read per canary, from `apply`);
    # stage 2's bake ran again from its start after the kill.
    reads = fleet.where(node="apply", method="GET", path="/admin/config")
    assert [(r["stage"], r["instance"]) for r in reads if r["stage"] in ("1", "2")] == [
        ("1", "vllm-0"),
        ("2", "vllm-0"),
        ("2", "vllm-1"),
    ]
    assert _applied(fleet) == ["vllm-0", "vllm-1", "vllm-2", "vllm-3"]
    assert len(fleet.where(node="bake", stage="2")) > baked_before
    assert started.count("apply") == 3

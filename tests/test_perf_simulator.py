"""trellis.workflows.performance.simulator over real loopback HTTP, driven by the HTTP target."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import pytest

from trellis.workflows.performance.analysis import analyze
from trellis.workflows.performance.collectors import Scrape, ServerType, Window, fetch, parse_metrics, window
from trellis.workflows.performance.errors import RolloutTargetError
from trellis.workflows.performance.optimization import plan
from trellis.workflows.performance.rollout import (
    CanaryPolicy,
    HttpRolloutTarget,
    Instance,
    RolloutTarget,
    Verdict,
    default_checks,
    judge,
)
from trellis.workflows.performance.simulator import SimulatedFleet

pytestmark = pytest.mark.timeout(30)


async def observe(client: httpx.AsyncClient, instances: list[Instance], *, scrapes: int = 6) -> list[Window]:
    """Scrape each instance ``scrapes`` times, advancing simulated time 10 s in between.

    With a frozen clock (``speed=0``) the scrape timestamps are the simulated time, so rates
    are per simulated second.
    """
    taken: dict[str, list[Scrape]] = {i.id: [] for i in instances}
    for step in range(scrapes):
        for instance in instances:
            state = (await client.get(instance.admin_url + "/state")).json()
            text = (await client.get(instance.metrics_url)).text
            taken[instance.id].append(
                parse_metrics(text, timestamp=state["simulated_seconds"], source=instance.metrics_url)
            )
            if step < scrapes - 1:
                await client.post(instance.admin_url + "/advance", json={"seconds": 10})
    return [window(*taken[i.id]) for i in instances]


@pytest.mark.parametrize("server", list(ServerType))
async def test_every_flavour_serves_parseable_metrics_in_its_own_dialect(server: ServerType) -> None:
    async with SimulatedFleet(server, instances=1, speed=0) as fleet, httpx.AsyncClient() as client:
        response = await client.get(fleet.instances[0].metrics_url)
        assert response.headers["content-type"].startswith("text/plain")
        scrape = await fetch(fleet.instances[0].metrics_url, client)
        assert scrape.server is server
        assert scrape.requests_waiting is not None
        assert scrape.kv_cache_usage is not None
        assert scrape.e2e is not None
        assert scrape.e2e.count > 0
        if server is ServerType.TGI:
            assert "tgi_request_success " in response.text
            assert "_total " not in response.text
            assert "_total{" not in response.text
        else:
            assert "_total{" in response.text
            assert "_created" in response.text


async def test_the_agent_finds_the_bottleneck_and_its_fix_helps() -> None:
    """Default sim config is admission-capped; applying the plan cuts queueing and TTFT."""
    async with SimulatedFleet("vllm", instances=2, speed=0) as fleet, httpx.AsyncClient() as client:
        target = fleet.target(client=client)
        assert isinstance(target, RolloutTarget)
        before = await observe(client, list(fleet.instances))
        config = await target.config("vllm-0")
        analysis = analyze(before[0], config=config)
        assert analysis.findings[0].rule_id == "queue-admission-capped"
        proposal = plan(analysis.findings, "vllm", config=config, exported=before[0].config)
        assert proposal.changes()["max_num_seqs"] == 72

        split = await target.apply({"max_num_seqs": proposal.changes()["max_num_seqs"]}, share=0.5)
        assert (split.canary, split.baseline, split.applied) == (("vllm-0",), ("vllm-1",), ("vllm-0",))
        await client.post(fleet.instances[0].admin_url + "/advance", json={"seconds": 60})
        await client.post(fleet.instances[1].admin_url + "/advance", json={"seconds": 60})
        canary, baseline = await observe(client, list(fleet.instances))
        assert canary.gauges["requests_waiting"].mean < baseline.gauges["requests_waiting"].mean / 2
        assert canary.quantile("ttft", 0.95) < baseline.quantile("ttft", 0.95)  # type: ignore[operator]
        judgment = judge(canary, baseline, CanaryPolicy(checks=default_checks(), min_requests=200))
        assert judgment.verdict is Verdict.PASS, judgment.results

        # Applying again is a no-op; restore puts the original back everywhere.
        again = await target.apply({"max_num_seqs": 72}, share=0.5)
        assert again.applied == ()
        assert again.unchanged == ("vllm-0",)
        assert await target.restore() == ("vllm-0", "vllm-1")
        assert (await target.config("vllm-0"))["max_num_seqs"] == 48


async def test_an_injected_regression_shows_on_changed_instances_and_fails_the_canary() -> None:
    async with SimulatedFleet("vllm", instances=2, speed=0) as fleet, httpx.AsyncClient() as client:
        target = fleet.target(client=client)
        for instance in fleet.instances:
            answer = await client.post(instance.admin_url + "/regression", json={"latency_factor": 3.0})
            assert answer.status_code == 200
        await target.apply({"max_num_batched_tokens": 4096}, share=0.5)
        for instance in fleet.instances:
            await client.post(instance.admin_url + "/advance", json={"seconds": 60})
        # The slow canary finishes fewer requests: observe long enough for 200 of them.
        canary, baseline = await observe(client, list(fleet.instances), scrapes=9)
        assert canary.quantile("itl", 0.95) > 1.5 * baseline.quantile("itl", 0.95)  # type: ignore[operator]
        judgment = judge(canary, baseline)
        assert judgment.verdict is Verdict.FAIL
        assert {"itl_p95"} <= {r.check for r in judgment.failed()}


async def test_kv_pressure_config_causes_preemptions() -> None:
    squeezed = {"max_num_seqs": 200, "gpu_memory_utilization": 0.6, "enable_prefix_caching": False}
    async with (
        SimulatedFleet("vllm", instances=1, speed=0, config=squeezed) as fleet,
        httpx.AsyncClient() as client,
    ):
        (w,) = await observe(client, list(fleet.instances))
        ids = [f.rule_id for f in analyze(w).findings]
        assert ids[:2] == ["kv-cache-pressure", "preemption-thrash"]
        assert w.config["enable_prefix_caching"] == "False"
        assert w.config["gpu_memory_utilization"] == "0.6"


async def test_weights_shift_load_between_instances() -> None:
    async with SimulatedFleet("sglang", instances=2, speed=0) as fleet, httpx.AsyncClient() as client:
        target = fleet.target(client=client)
        await target.set_weights({"sglang-0": 0.9, "sglang-1": 0.1})
        for instance in fleet.instances:
            await client.post(instance.admin_url + "/advance", json={"seconds": 30})
        heavy, light = await observe(client, list(fleet.instances))
        assert heavy.increase("requests_finished") > 1.5 * light.increase("requests_finished")  # type: ignore[operator]
        assert heavy.gauges["requests_waiting"].mean > 10 * light.gauges["requests_waiting"].mean + 1


async def test_admin_errors_are_clear() -> None:
    async with SimulatedFleet("tgi", instances=1, speed=0) as fleet, httpx.AsyncClient() as client:
        target = fleet.target(client=client)
        with pytest.raises(RolloutTargetError, match=r"unknown knob 'max_num_seqs' for tgi") as caught:
            await target.apply({"max_num_seqs": 64}, share=1.0)
        assert caught.value.http_status == 422
        assert not caught.value.retryable
        bad = await client.post(fleet.instances[0].admin_url + "/weight", json={"weight": 3})
        assert bad.status_code == 422
        assert "weight" in bad.json()["detail"]
        with pytest.raises(RolloutTargetError, match="unknown instances"):
            await target.set_weights({"nope": 1.0})

    unreachable = HttpRolloutTarget([Instance("gone", "http://127.0.0.1:9")], timeout_seconds=2)
    with pytest.raises(RolloutTargetError, match="restore on instance 'gone' failed"):
        await unreachable.restore()
    await unreachable.aclose()


async def test_command_line_fleet_serves_until_terminated() -> None:
    process = subprocess.Popen(  # noqa: ASYNC220 - a child we own, polled with a bounded wait
        [sys.executable, "-m", "trellis.workflows.performance.simulator",
         "--instances", "2", "--server", "vllm", "--port-base", "0", "--config", "max_num_seqs=64"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), timeout=20)
        ready = json.loads(line)
        assert ready["simulator"] is True
        assert len(ready["instances"]) == 2
        async with httpx.AsyncClient() as client:
            scrape = await fetch(ready["instances"][1]["metrics_url"], client)
            config = (await client.get(ready["instances"][1]["base_url"] + "/admin/config")).json()
        assert scrape.server is ServerType.VLLM
        assert config["config"]["max_num_seqs"] == 64
        assert config["original"]["max_num_seqs"] == 64
    finally:
        process.terminate()
        process.communicate(timeout=10)  # also closes the pipes

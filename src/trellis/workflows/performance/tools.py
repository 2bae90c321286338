"""The ``performance-agent`` workflow's tools: thin adapters from JSON state to the library.

Importing this module registers every tool on the process-wide registry (``tools =
["trellis.workflows.performance.tools"]`` in ``trellis.toml``, or ``TRELLIS_TOOLS``; ``trellis
serve --examples`` loads it); :func:`register` puts them on a registry of your own.

=====================  ===================================================================
``perf.collect``       scrape every instance over a window, read its configuration
``perf.analyze``       pool the windows, run the bottleneck rules, score health
``perf.recommend``     turn the findings into an ordered plan of flag changes
``perf.apply_stage``   apply the plan to the stage's share of instances (idempotent)
``perf.bake_and_judge`` scrape canary and baseline while baking; judge windows; gate
``perf.rollback``      restore the original configuration on every instance (idempotent)
``perf.finish``        read back every instance's configuration after the last stage
=====================  ===================================================================

Every tool takes and returns JSON-able values (the library's ``to_dict()`` forms). Instances
are base URLs whose ``/metrics`` is vLLM / TGI / SGLang text and whose ``/admin`` follows the
contract of :class:`~trellis.workflows.performance.rollout.HttpRolloutTarget`. Admin requests
carry ``X-Trellis-Run``, ``X-Trellis-Node`` and ``X-Trellis-Stage`` headers, so an instance's
access log tells which run and stage changed it.

Side effects are idempotent (a re-applied configuration is detected and not sent again, a
restore twice restores once), because a node that was running when its worker died runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from trellis.errors import ValidationError
from trellis.nodes import NodeContext
from trellis.registry import Registry, registry
from trellis.workflows.performance._wire import finding_from_dict, window_from_dict, window_to_dict
from trellis.workflows.performance.analysis import Slo, analyze
from trellis.workflows.performance.collectors import Scrape, ServerType, Window, combine, fetch, window
from trellis.workflows.performance.errors import AnalysisError, ScrapeError
from trellis.workflows.performance.optimization import plan
from trellis.workflows.performance.rollout import (
    Action,
    CanaryPolicy,
    CheckResult,
    HealthCheck,
    HttpRolloutTarget,
    Instance,
    Judgment,
    RollbackGate,
    Verdict,
    default_checks,
    judge,
)

__all__ = [
    "apply_stage",
    "bake_and_judge",
    "collect",
    "finish",
    "instances_of",
    "recommend",
    "register",
    "rollback",
    "run_analysis",
]


# -- helpers ---------------------------------------------------------------------------------


def instances_of(urls: Sequence[str]) -> tuple[Instance, ...]:
    """One :class:`Instance` per base URL, id ``host:port``, in the given (rollout) order.

    Raises:
        ValidationError: no URL, a URL that is not ``http(s)://host[:port]``, or a duplicate.
    """
    if not urls:
        raise ValidationError("instances: at least one base URL is needed")
    found: list[Instance] = []
    for url in urls:
        parts = urlsplit(str(url))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValidationError(f"instances: {url!r} is not an http(s):// base URL")
        found.append(Instance(id=parts.netloc, base_url=f"{parts.scheme}://{parts.netloc}{parts.path}"))
    ids = [i.id for i in found]
    if len(set(ids)) != len(ids):
        raise ValidationError(f"instances: duplicate instance in {list(urls)}")
    return tuple(found)


def _slo(raw: Mapping[str, Any] | None) -> Slo:
    if not raw:
        return Slo()
    known = {"ttft_p95", "itl_p95", "e2e_p99"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValidationError(f"slo: unknown fields {unknown}; known: {sorted(known)}")
    return Slo(**{k: float(v) for k, v in raw.items()})


@contextlib.asynccontextmanager
async def _client(ctx: NodeContext | None, stage: int | None = None) -> AsyncIterator[httpx.AsyncClient]:
    headers = {}
    if ctx is not None:
        headers = {"X-Trellis-Run": ctx.run_id, "X-Trellis-Node": ctx.node}
    if stage is not None:
        headers["X-Trellis-Stage"] = str(stage)
    async with httpx.AsyncClient(headers=headers) as client:
        yield client


def _progress(ctx: NodeContext | None, message: str, **data: Any) -> None:
    if ctx is not None:
        ctx.progress(message, **data)


async def _scrape_round(
    client: httpx.AsyncClient, instances: Sequence[Instance], server: ServerType | None
) -> list[Scrape]:
    return list(await asyncio.gather(*(fetch(i.metrics_url, client, server=server) for i in instances)))


async def _observe(
    client: httpx.AsyncClient,
    instances: Sequence[Instance],
    server: ServerType | None,
    seconds: float,
    interval: float,
) -> list[Window]:
    """Scrape ``instances`` together every ``interval`` over ``seconds``: one window each."""
    rounds = max(round(seconds / interval), 1) + 1
    scrapes: list[list[Scrape]] = []
    started = time.monotonic()
    for index in range(rounds):
        scrapes.append(await _scrape_round(client, instances, server))
        if index < rounds - 1:
            await asyncio.sleep(max(started + (index + 1) * interval - time.monotonic(), 0.0))
    return [window(*(r[i] for r in scrapes)) for i in range(len(instances))]


async def _configs(target: HttpRolloutTarget) -> dict[str, dict[str, Any]]:
    ids = [i.id for i in target.instances]
    found = await asyncio.gather(*(target.config(i) for i in ids))
    return dict(zip(ids, found, strict=True))


# -- collect -> analyze -> recommend ---------------------------------------------------------


async def collect(
    instances: list[str],
    server: str | None = None,
    seconds: float = 10.0,
    interval_seconds: float = 2.0,
    stages: list[float] | None = None,
    ctx: NodeContext | None = None,
) -> dict[str, Any]:
    """Scrape every instance over ``seconds`` (a scrape each ``interval_seconds``) and read its
    configuration: ``{server, instances, config, windows, window}``.

    ``stages`` are checked here, before anything is changed: ascending percentages in
    ``(0, 100]`` ending at 100.
    """
    fleet = instances_of(instances)
    if stages is not None:
        if not stages or any(not 0 < s <= 100 for s in stages) or list(stages) != sorted(set(stages)):
            raise ValidationError(f"stages: need ascending percentages in (0, 100], got {stages}")
        if stages[-1] != 100:
            raise ValidationError(f"stages: the last stage must be 100 (everywhere), got {stages}")
    if interval_seconds <= 0 or seconds < interval_seconds:
        raise ValidationError(f"collect: need 0 < interval ({interval_seconds}) <= seconds ({seconds})")
    kind = ServerType(server) if server else None
    _progress(ctx, f"scraping {len(fleet)} instance(s) for {seconds:g} s", instances=len(fleet))
    async with _client(ctx) as client:
        windows = await _observe(client, fleet, kind, seconds, interval_seconds)
        target = HttpRolloutTarget(fleet, client=client)
        config = await _configs(target)
    detected = windows[0].server
    mixed = sorted({w.server.value for w in windows})
    if len(mixed) > 1:
        raise AnalysisError(f"the instances run different servers: {mixed}")
    pooled = combine(windows)
    _progress(ctx, f"collected {pooled.scrapes} scrapes of {detected.value}", server=detected.value)
    return {
        "server": detected.value,
        "instances": [i.to_dict() for i in fleet],
        "config": config,
        "windows": [window_to_dict(w) for w in windows],
        "window": pooled.describe(),
    }


def run_analysis(
    windows: list[dict[str, Any]],
    slo: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Pool the collected windows and analyse them: ``Analysis.to_dict()``."""
    pooled = combine([window_from_dict(w) for w in windows])
    return analyze(pooled, slo=_slo(slo), config=config).to_dict()


def recommend(
    analysis: Mapping[str, Any],
    server: str,
    config: Mapping[str, Any] | None = None,
    exported: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ordered plan of flag changes for the analysis' findings: ``Plan.to_dict()`` plus
    ``original`` (what a rollback restores, as far as known)."""
    findings = [finding_from_dict(f) for f in analysis.get("findings", [])]
    result = plan(findings, server, config=config, exported=exported)
    return {**result.to_dict(), "original": result.original()}


# -- the stages ------------------------------------------------------------------------------


async def apply_stage(
    instances: list[str],
    changes: Mapping[str, Any],
    stages: list[float],
    index: int,
    ctx: NodeContext | None = None,
) -> dict[str, Any]:
    """Apply ``changes`` to the first ``stages[index]`` percent of instances.

    Returns ``{stage, percent, share, split}`` (``stage`` is 1-based). Instances that already
    run ``changes`` are not sent anything (``split.unchanged``), so a repeated call is harmless.
    """
    fleet = instances_of(instances)
    if not 0 <= index < len(stages):
        raise ValidationError(f"stage index {index} is outside stages {stages}")
    percent = float(stages[index])
    stage = index + 1
    async with _client(ctx, stage) as client:
        target = HttpRolloutTarget(fleet, client=client)
        split = await target.apply(dict(changes), percent / 100.0)
    _progress(
        ctx,
        f"stage {stage}: {percent:g}% -> {len(split.canary)} of {len(fleet)} instance(s) changed",
        stage=stage,
        percent=percent,
        canary=list(split.canary),
        applied=list(split.applied),
    )
    return {"stage": stage, "percent": percent, "share": percent / 100.0, "split": split.to_dict()}


def _policy(health_threshold: float, min_requests: float, slo: Slo) -> CanaryPolicy:
    checks = tuple(
        HealthCheck(min_score=health_threshold, max_drop=c.max_drop, slo=slo)
        if isinstance(c, HealthCheck)
        else c
        for c in default_checks(slo)
    )
    return CanaryPolicy(checks=checks, min_requests=min_requests, slo=slo)


def _absolute(canary: Sequence[Window], policy: CanaryPolicy, health_threshold: float) -> Judgment:
    """Judge a stage without a baseline (100 %): the pooled health score against the threshold."""
    pooled = combine(canary)
    found = analyze(pooled, slo=policy.slo)
    score = found.health.value
    requests = pooled.increase("requests_finished")
    described = {**pooled.describe(), "canary_instances": pooled.instances, "baseline_instances": 0}

    def result(verdict: Verdict, reason: str) -> Judgment:
        check = CheckResult(
            check="health",
            metric="health_score",
            verdict=verdict,
            canary=score,
            baseline=None,
            threshold=health_threshold,
            reason=reason,
            window=described,
            n_canary=requests,
        )
        return Judgment(verdict, reason, (check,), described, False)

    if requests is None or requests < policy.min_requests or score is None:
        return result(
            Verdict.INCONCLUSIVE,
            f"too little data: {requests} requests (need {policy.min_requests:g}), health {score}",
        )
    if score < health_threshold:
        return result(Verdict.FAIL, f"fleet health {score:.3f} < threshold {health_threshold:g}")
    return result(Verdict.PASS, f"fleet health {score:.3f} >= threshold {health_threshold:g}")


async def bake_and_judge(
    instances: list[str],
    stage: Mapping[str, Any],
    bake_seconds: float = 60.0,
    window_seconds: float = 20.0,
    interval_seconds: float = 5.0,
    health_threshold: float = 0.5,
    failures_to_rollback: int = 2,
    min_requests: float = 200.0,
    server: str | None = None,
    slo: Mapping[str, Any] | None = None,
    ctx: NodeContext | None = None,
) -> dict[str, Any]:
    """Bake the stage: judge canary against baseline window after window through a
    :class:`RollbackGate`; stop early on a rollback.

    Returns ``{stage, percent, action, reason, verdict, windows}`` where ``action`` is
    ``promote`` (the last window passed), ``rollback`` (the gate said so) or ``hold`` (the bake
    ended inconclusive, failing below the limit, or on scrape errors: ask a human). With no
    baseline left (100 %) each window is judged on the fleet's health score alone.
    """
    fleet = {i.id: i for i in instances_of(instances)}
    split = stage["split"]
    canary = [fleet[i] for i in split["canary"]]
    baseline = [fleet[i] for i in split["baseline"]]
    number, percent = int(stage["stage"]), float(stage["percent"])
    kind = ServerType(server) if server else None
    policy = _policy(health_threshold, min_requests, _slo(slo))
    gate = RollbackGate(failures_to_rollback=failures_to_rollback)
    count = max(round(bake_seconds / window_seconds), 1)
    decisions: list[dict[str, Any]] = []
    action, reason = Action.HOLD, "no window observed"
    _progress(
        ctx, f"stage {number} ({percent:g}%): baking {bake_seconds:g} s in {count} window(s)", stage=number
    )
    async with _client(ctx, number) as client:
        for index in range(1, count + 1):
            try:
                windows = await _observe(client, [*canary, *baseline], kind, window_seconds, interval_seconds)
                side, rest = windows[: len(canary)], windows[len(canary) :]
                verdict = judge(side, rest, policy) if rest else _absolute(side, policy, health_threshold)
                decision = gate.observe(verdict)
            except (ScrapeError, AnalysisError) as exc:
                decision = gate.observe_error(exc)
            gate = decision.gate
            action, reason = decision.action, decision.reason
            decisions.append({"window": index, **decision.to_dict()})
            shown = "error" if decision.verdict is None else decision.verdict.value
            _progress(
                ctx,
                f"stage {number} ({percent:g}%) window {index}/{count}: {shown} -> {action.value}",
                stage=number,
                window=index,
                verdict=shown,
                action=action.value,
                reason=reason,
            )
            if action is Action.ROLLBACK:
                break
    outcome = {Action.PROCEED: "promote", Action.ROLLBACK: "rollback"}.get(action, "hold")
    last = decisions[-1] if decisions else {}
    return {
        "stage": number,
        "percent": percent,
        "action": outcome,
        "reason": reason,
        "verdict": last.get("verdict"),
        "windows": decisions,
    }


async def rollback(
    instances: list[str], reason: str, stage: int | None = None, ctx: NodeContext | None = None
) -> dict[str, Any]:
    """Restore the original configuration on every instance and say why:
    ``{reason, stage, restored, config}`` (``config``: what each instance runs afterwards)."""
    fleet = instances_of(instances)
    _progress(ctx, f"rolling back {len(fleet)} instance(s): {reason}", stage=stage)
    async with _client(ctx, stage) as client:
        target = HttpRolloutTarget(fleet, client=client)
        restored = await target.restore()
        config = await _configs(target)
    return {"reason": reason, "stage": stage, "restored": list(restored), "config": config}


async def finish(
    instances: list[str], changes: Mapping[str, Any], ctx: NodeContext | None = None
) -> dict[str, Any]:
    """Read back every instance's configuration: ``{config, complete}`` (``complete`` when every
    instance runs every change)."""
    fleet = instances_of(instances)
    async with _client(ctx) as client:
        config = await _configs(HttpRolloutTarget(fleet, client=client))
    complete = all(all(c.get(k) == v for k, v in changes.items()) for c in config.values())
    return {"config": config, "complete": complete}


# -- registration ----------------------------------------------------------------------------

TOOLS: dict[str, Callable[..., Any]] = {
    "perf.collect": collect,
    "perf.analyze": run_analysis,
    "perf.recommend": recommend,
    "perf.apply_stage": apply_stage,
    "perf.bake_and_judge": bake_and_judge,
    "perf.rollback": rollback,
    "perf.finish": finish,
}
"""Tool name -> function."""


def register(target: Registry) -> Registry:
    """Register every ``perf.*`` tool on ``target`` and return it."""
    for name, fn in TOOLS.items():
        target.add_tool(name, fn)
    return target


register(registry)

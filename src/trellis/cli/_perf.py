"""``trellis perf ...``: the performance agent's library on one live instance, no rollout.

``trellis perf analyze URL`` scrapes the instance's ``/metrics`` over a window, runs the
bottleneck rules and prints the findings (with evidence), the health score and the ordered
recommendations. Nothing is changed on the instance. Exit 0 on success, 2 for invalid input,
1 when the instance cannot be scraped. The rollout itself is the ``performance-agent`` workflow.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.markup import escape

from trellis.cli._common import EXIT_FAILED, EXIT_INVALID, console, fail, print_json

perf_app = typer.Typer(help="The performance agent: analyse inference servers.", no_args_is_help=True)


def metrics_url(url: str) -> str:
    """``url`` as a ``/metrics`` URL: a bare base URL gets ``/metrics`` appended."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        fail(f"{url!r} is not an http(s):// URL", EXIT_INVALID)
    if parts.path.rstrip("/"):
        return url
    return url.rstrip("/") + "/metrics"


async def _analyze(url: str, server: str | None, seconds: float, scrapes: int) -> dict[str, Any]:
    import httpx

    from trellis.workflows.performance import analyze, fetch, plan, window

    taken = []
    started = time.monotonic()
    async with httpx.AsyncClient() as client:
        for index in range(scrapes):
            taken.append(await fetch(url, client, server=server))
            if index < scrapes - 1:
                pause = started + (index + 1) * seconds / (scrapes - 1) - time.monotonic()
                await asyncio.sleep(max(pause, 0.0))
        current = await _admin_config(client, url)
    observed = window(*taken)
    analysis = analyze(observed, config=current)
    recommended = plan(analysis.findings, observed.server, config=current, exported=observed.config)
    return {
        "url": url,
        "server": observed.server.value,
        "config": current,
        "analysis": analysis.to_dict(),
        "plan": recommended.to_dict(),
        "health": analysis.health.explain(),
    }


async def _admin_config(client: Any, url: str) -> dict[str, Any] | None:
    """The configuration in force, from the instance's admin endpoint when it has one (the
    contract in :mod:`trellis.workflows.performance.rollout`); ``None`` when it does not answer,
    and the plan then falls back to what the metrics export and the documented defaults."""
    import httpx

    parts = urlsplit(url)
    admin = f"{parts.scheme}://{parts.netloc}/admin/config"
    try:
        answer = await client.get(admin, timeout=5.0)
    except httpx.HTTPError:
        return None
    if answer.status_code != 200:
        return None
    try:
        config = answer.json().get("config")
    except (ValueError, AttributeError):
        return None
    return dict(config) if isinstance(config, dict) else None


def _print(doc: dict[str, Any]) -> None:
    analysis, recommended = doc["analysis"], doc["plan"]
    window = analysis["window"]
    console.print(
        f"[bold]{doc['url']}[/] ({doc['server']}): {window['seconds']:g} s, {window['scrapes']} scrapes",
        highlight=False,
    )
    for line in doc["health"]:
        console.print(f"  {line}", highlight=False, soft_wrap=True)
    findings = analysis["findings"]
    console.print(f"[bold]findings[/] ({len(findings)})")
    if not findings:
        console.print("  none: no rule fired on this window")
    for f in findings:
        console.print(
            escape(f"  [{f['severity']}] {f['rule']}: {f['text']}"), highlight=False, soft_wrap=True
        )
        for e in f["evidence"]:
            console.print(
                f"      {e['metric']} = {e['observed']:.4g} {e['comparator']} {e['threshold']:g}",
                highlight=False,
            )
    steps = recommended["steps"]
    console.print(f"[bold]recommendations[/] ({len(steps)}, in order)")
    for i, s in enumerate(steps, 1):
        console.print(
            f"  {i}. {s['flag']} {s['current']} -> {s['proposed']} "
            f"({s['current_source']} value; rule {s['rule']})",
            highlight=False,
            soft_wrap=True,
        )
        console.print(f"     effect: {s['expected_effect']}", highlight=False, soft_wrap=True)
        console.print(f"     risk: {s['risk']}", highlight=False, soft_wrap=True)
    for advice in recommended["advice"]:
        console.print(f"  advice: {advice}", highlight=False, soft_wrap=True)


@perf_app.command("analyze")
def analyze_command(
    url: Annotated[str, typer.Argument(help="The instance's base URL or its /metrics URL.")],
    server: Annotated[
        str | None, typer.Option(help="vllm, tgi or sglang; detected from the metric names when omitted.")
    ] = None,
    window: Annotated[float, typer.Option(help="Seconds between the first and the last scrape.")] = 10.0,
    scrapes: Annotated[int, typer.Option(help="Scrapes spread over the window (at least 2).")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the analysis and the plan as JSON.")] = False,
) -> None:
    """Print findings and recommendations for one live instance (nothing is changed on it)."""
    from trellis.workflows.performance import AnalysisError, ScrapeError, ServerType

    if server is not None and server not in {s.value for s in ServerType}:
        fail(f"--server must be one of vllm, tgi, sglang, got {server!r}", EXIT_INVALID)
    if not window > 0:
        fail(f"--window must be a positive number of seconds, got {window:g}", EXIT_INVALID)
    if scrapes < 2:
        fail(f"--scrapes must be at least 2, got {scrapes}", EXIT_INVALID)
    target = metrics_url(url)
    try:
        doc = asyncio.run(_analyze(target, server, window, scrapes))
    except ScrapeError as exc:
        fail(f"cannot scrape {target}: {exc.message}", EXIT_FAILED)
    except AnalysisError as exc:
        fail(f"{target}: {exc.message}", EXIT_FAILED)
    if as_json:
        print_json(doc)
    else:
        _print(doc)

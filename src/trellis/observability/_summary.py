"""Run analytics (``GET /v1/metrics/summary``), computed from the store's rows.

Everything is derived from what the store keeps for each run — the run row, one node-state row
per node, and the events that end node attempts (where an ``llm`` node records its token
``usage``) — for runs *created* in the window. Percentiles are nearest-rank over the window's
values, so they are exact for what was stored (not Prometheus's bucket estimates).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from trellis.observability._instruments import node_label
from trellis.store.records import iso

MAX_RUNS_LISTED: Final = 100
"""``tokens.runs`` lists the runs that used the most tokens, at most this many."""


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile ``q`` (0-100) of ``values``; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _workflow_doc(name: str, rows: Sequence[tuple[Any, ...]]) -> dict[str, Any]:
    by_status = Counter(str(row[1]) for row in rows)
    ended = by_status["succeeded"] + by_status["failed"] + by_status["cancelled"]
    durations = [
        (finished - started).total_seconds()
        for _, status, started, finished in rows
        if started is not None and finished is not None and status in ("succeeded", "failed", "cancelled")
    ]
    return {
        "workflow": name,
        "runs": len(rows),
        "by_status": dict(sorted(by_status.items())),
        "finished": ended,
        "success_rate": _round(by_status["succeeded"] / ended, 4) if ended else None,
        "duration_seconds": {
            "p50": _round(percentile(durations, 50)),
            "p95": _round(percentile(durations, 95)),
            "mean": _round(_mean(durations)),
        },
        "nodes": [],
    }


def _node_docs(rows: Sequence[tuple[Any, ...]]) -> list[dict[str, Any]]:
    grouped: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        grouped[node_label(row[1])].append(row)
    docs = []
    for node, items in sorted(grouped.items()):
        statuses = Counter(str(item[2]) for item in items)
        decided = statuses["succeeded"] + statuses["failed"]
        durations = [float(item[4]) for item in items if item[4] is not None]
        retries = Counter(max(int(item[3] or 1) - 1, 0) for item in items if item[3])
        docs.append(
            {
                "node": node,
                "count": len(items),
                "by_status": dict(sorted(statuses.items())),
                "failure_rate": _round(statuses["failed"] / decided, 4) if decided else None,
                "duration_ms": {
                    "mean": _round(_mean(durations)),
                    "p95": _round(percentile(durations, 95)),
                },
                "retries": {str(k): v for k, v in sorted(retries.items())},
            }
        )
    return docs


def _tokens(rows: Sequence[tuple[Any, ...]]) -> dict[str, Any]:
    per_run: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    per_node: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    per_model: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for workflow, run_id, node, data in rows:
        usage: Mapping[str, Any] = data["usage"]
        model = str(usage.get("model") or "unknown")
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        for bucket in (
            per_run[(workflow, run_id)],
            per_node[(workflow, node_label(node), model)],
            per_model[model],
        ):
            bucket[0] += prompt
            bucket[1] += completion
            bucket[2] += 1

    def counts(values: list[int]) -> dict[str, int]:
        return {
            "prompt_tokens": values[0],
            "completion_tokens": values[1],
            "total_tokens": values[0] + values[1],
            "calls": values[2],
        }

    runs = sorted(per_run.items(), key=lambda item: -(item[1][0] + item[1][1]))[:MAX_RUNS_LISTED]
    totals = [sum(v[i] for v in per_model.values()) for i in range(3)]
    return {
        **counts(totals),
        "runs": [{"run_id": run_id, "workflow": wf, **counts(v)} for (wf, run_id), v in runs],
        "nodes": [
            {"workflow": wf, "node": node, "model": model, **counts(v)}
            for (wf, node, model), v in sorted(per_node.items())
        ],
        "models": [{"model": model, **counts(v)} for model, v in sorted(per_model.items())],
    }


def summarize(
    rows: Mapping[str, Sequence[tuple[Any, ...]]], *, since: datetime, workflow: str | None
) -> dict[str, Any]:
    """The analytics document of ``GET /v1/metrics/summary`` from :meth:`Store.analytics_rows`.

    Returns:
        ``{since, workflow, workflows: [{workflow, runs, by_status, finished, success_rate,
        duration_seconds: {p50, p95, mean}, nodes: [{node, count, by_status, failure_rate,
        duration_ms: {mean, p95}, retries: {"<retries>": count}}]}], tokens: {prompt_tokens,
        completion_tokens, total_tokens, calls, runs: [...], nodes: [...], models: [...]}}``.
        ``success_rate`` is succeeded / finished; ``failure_rate`` failed / (succeeded + failed).
    """
    runs_by_workflow: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows["runs"]:
        runs_by_workflow[str(row[0])].append(row)
    nodes_by_workflow: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows["nodes"]:
        nodes_by_workflow[str(row[0])].append(row)
    workflows = []
    for name in sorted(runs_by_workflow):
        doc = _workflow_doc(name, runs_by_workflow[name])
        doc["nodes"] = _node_docs(nodes_by_workflow.get(name, []))
        workflows.append(doc)
    return {
        "since": iso(since),
        "workflow": workflow,
        "workflows": workflows,
        "tokens": _tokens(rows["usage"]),
    }

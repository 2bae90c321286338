"""JSON forms of the library's values that travel through a workflow's state.

Tools exchange JSON-able dicts (state is checkpointed as JSON), but windows and findings are
frozen dataclasses holding histograms and infinities. This module turns a :class:`Window` into
a dict and back without loss (``+Inf`` bucket bounds as the string ``"+Inf"``) and rebuilds a
:class:`Finding` from :meth:`Finding.to_dict`, so ``collect`` -> ``analyze`` -> ``recommend``
can be separate, separately checkpointed nodes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from trellis.workflows.performance.analysis import Evidence, Finding, KnobMove, Severity
from trellis.workflows.performance.collectors import (
    Distribution,
    GaugeStats,
    Histogram,
    ServerType,
    Summary,
    Window,
)


def _bound(value: float) -> float | str:
    return "+Inf" if math.isinf(value) else value


def _unbound(value: float | str) -> float:
    return math.inf if value == "+Inf" else float(value)


def distribution_to_dict(d: Distribution) -> dict[str, Any]:
    if isinstance(d, Histogram):
        return {
            "kind": "histogram",
            "buckets": [[_bound(b), c] for b, c in d.buckets],
            "count": d.count,
            "sum": d.sum,
        }
    return {"kind": "summary", "quantiles": [list(q) for q in d.quantiles], "count": d.count, "sum": d.sum}


def distribution_from_dict(raw: Mapping[str, Any]) -> Distribution:
    if raw["kind"] == "histogram":
        buckets = tuple((_unbound(b), float(c)) for b, c in raw["buckets"])
        return Histogram(buckets=buckets, count=float(raw["count"]), sum=float(raw["sum"]))
    quantiles = tuple((float(q), float(v)) for q, v in raw["quantiles"])
    return Summary(quantiles=quantiles, count=float(raw["count"]), sum=float(raw["sum"]))


def window_to_dict(w: Window) -> dict[str, Any]:
    """``w`` as JSON-able data; :func:`window_from_dict` gives it back."""
    return {
        "server": w.server.value,
        "start": w.start,
        "end": w.end,
        "scrapes": w.scrapes,
        "instances": w.instances,
        "sources": list(w.sources),
        "gauges": {
            name: {
                "mean": g.mean,
                "minimum": g.minimum,
                "maximum": g.maximum,
                "last": g.last,
                "samples": g.samples,
                "positive_share": g.positive_share,
            }
            for name, g in w.gauges.items()
        },
        "increases": dict(w.increases),
        "finished_by_reason": dict(w.finished_by_reason),
        "failed_by_reason": dict(w.failed_by_reason),
        "distributions": {name: distribution_to_dict(d) for name, d in w.distributions.items()},
        "resets": list(w.resets),
        "config": dict(w.config),
        "max_running_requests": w.max_running_requests,
    }


def window_from_dict(raw: Mapping[str, Any]) -> Window:
    """The :class:`Window` that :func:`window_to_dict` described."""
    return Window(
        server=ServerType(raw["server"]),
        start=float(raw["start"]),
        end=float(raw["end"]),
        scrapes=int(raw["scrapes"]),
        instances=int(raw.get("instances", 1)),
        sources=tuple(raw.get("sources", ())),
        gauges=MappingProxyType(
            {
                name: GaugeStats(
                    mean=float(g["mean"]),
                    minimum=float(g["minimum"]),
                    maximum=float(g["maximum"]),
                    last=float(g["last"]),
                    samples=int(g["samples"]),
                    positive_share=float(g["positive_share"]),
                )
                for name, g in raw.get("gauges", {}).items()
            }
        ),
        increases=MappingProxyType({k: float(v) for k, v in raw.get("increases", {}).items()}),
        finished_by_reason=MappingProxyType(
            {k: float(v) for k, v in raw.get("finished_by_reason", {}).items()}
        ),
        failed_by_reason=MappingProxyType({k: float(v) for k, v in raw.get("failed_by_reason", {}).items()}),
        distributions=MappingProxyType(
            {name: distribution_from_dict(d) for name, d in raw.get("distributions", {}).items()}
        ),
        resets=tuple(raw.get("resets", ())),
        config=MappingProxyType({k: str(v) for k, v in raw.get("config", {}).items()}),
        max_running_requests=raw.get("max_running_requests"),
    )


def finding_from_dict(raw: Mapping[str, Any]) -> Finding:
    """The :class:`Finding` that :meth:`Finding.to_dict` described."""
    return Finding(
        rule_id=raw["rule"],
        title=raw.get("title", raw["rule"]),
        text=raw.get("text", ""),
        severity=Severity(raw.get("severity", "warning")),
        evidence=tuple(
            Evidence(
                metric=e["metric"],
                observed=float(e["observed"]),
                comparator=e["comparator"],
                threshold=float(e["threshold"]),
                held=bool(e["held"]),
                window=MappingProxyType(dict(e.get("window", {}))),
            )
            for e in raw.get("evidence", ())
        ),
        knobs=tuple(
            KnobMove(knob=k["knob"], direction=k["direction"], value=k.get("value"))
            for k in raw.get("knobs", ())
        ),
        advice=raw.get("advice", ""),
        effect=raw.get("effect", ""),
        risk=raw.get("risk", ""),
    )

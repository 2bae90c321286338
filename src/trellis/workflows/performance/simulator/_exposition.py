"""Writing Prometheus text exposition in the dialects of the two exporter libraries involved.

``prometheus_client`` (vLLM, SGLang): counters end in ``_total`` with a ``_created`` sample,
``le`` comes first among labels. ``metrics-exporter-prometheus`` (TGI, Rust): no ``_total``,
no ``_created``, ``le`` last, a blank line between families. The simulator writes both so the
collectors meet the same quirks they meet in production.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["gauge", "counter", "histogram", "summary"]


@dataclass
class Family:
    name: str
    kind: Kind
    help: str = ""
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)
    """``(suffix, labels, value)``; the suffix is appended to the family name."""

    def add(self, value: float, labels: Mapping[str, str] | None = None, suffix: str = "") -> Family:
        self.samples.append((suffix, dict(labels or {}), value))
        return self

    def histogram(
        self, cumulative: Sequence[tuple[float, float]], total: float, labels: Mapping[str, str]
    ) -> Family:
        for bound, count in cumulative:
            self.add(count, {**labels, "le": _number(bound)}, "_bucket")
        self.add(cumulative[-1][1] if cumulative else 0.0, labels, "_count")
        self.add(total, labels, "_sum")
        return self


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _labels(labels: Mapping[str, str], le_first: bool) -> str:
    if not labels:
        return ""
    keys = sorted(labels)
    if "le" in labels:
        keys.remove("le")
        keys = ["le", *keys] if le_first else [*keys, "le"]
    escaped = (labels[k].replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for k in keys)
    return "{" + ",".join(f'{k}="{v}"' for k, v in zip(keys, escaped, strict=True)) + "}"


def render(families: Sequence[Family], *, dialect: Literal["python", "rust"], created: float = 0.0) -> str:
    """Exposition text for ``families`` in the given exporter dialect."""
    python = dialect == "python"
    lines: list[str] = []
    for family in families:
        exposed = family.name + ("_total" if python and family.kind == "counter" else "")
        if family.help:
            lines.append(f"# HELP {exposed} {family.help}")
        lines.append(f"# TYPE {exposed} {family.kind}")
        for suffix, labels, value in family.samples:
            name = family.name + (("_total" if python else "") if family.kind == "counter" else suffix)
            lines.append(
                f"{name}{_labels(labels, le_first=python)} {_number(value) if python else f'{value:g}'}"
            )
        if python and family.kind == "counter":
            # prometheus_client moves ``_created`` samples into a gauge family of their own.
            lines.append(f"# HELP {family.name}_created {family.help}")
            lines.append(f"# TYPE {family.name}_created gauge")
            for _, labels, _ in family.samples:
                lines.append(f"{family.name}_created{_labels(labels, le_first=True)} {_number(created)}")
        if not python:
            lines.append("")
    return "\n".join(lines) + "\n"

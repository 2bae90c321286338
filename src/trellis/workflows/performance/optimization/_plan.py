"""Findings -> concrete recommendations -> one ordered plan."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from trellis.workflows.performance.analysis import Finding, KnobMove
from trellis.workflows.performance.collectors import ServerType
from trellis.workflows.performance.optimization._knobs import Knob, Value, knob

CurrentSource = Literal["config", "metrics", "default", "assumed"]


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One flag change, with why, what it should do and what it may break."""

    server: ServerType
    knob: str
    flag: str
    current: Value | None
    """The value in force when known, else the documented default, else the assumption used."""
    current_source: CurrentSource
    """``config`` (given by the caller), ``metrics`` (exported by the server), ``default``
    (documented default) or ``assumed`` (neither known; a typical value)."""
    proposed: Value
    direction: str
    rule_id: str
    reason: str
    """The finding text that motivates the change."""
    expected_effect: str
    risk: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": self.server.value,
            "knob": self.knob,
            "flag": self.flag,
            "current": self.current,
            "current_source": self.current_source,
            "proposed": self.proposed,
            "direction": self.direction,
            "rule": self.rule_id,
            "reason": self.reason,
            "expected_effect": self.expected_effect,
            "risk": self.risk,
        }

    def __str__(self) -> str:
        return f"{self.flag} {self.current} -> {self.proposed} ({self.rule_id})"


@dataclass(frozen=True, slots=True)
class Skip:
    """A knob move that produced no recommendation, and why."""

    rule_id: str
    knob: str
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    """Recommendations in the order to try them; at most one per knob."""

    server: ServerType
    steps: tuple[Recommendation, ...]
    skipped: tuple[Skip, ...]
    advice: tuple[str, ...]
    """Actions outside server flags (scale out, routing), from the findings."""

    def changes(self) -> dict[str, Value]:
        """The configuration to apply: ``{knob: proposed}`` for every step."""
        return {step.knob: step.proposed for step in self.steps}

    def original(self) -> dict[str, Value | None]:
        """The values the plan replaces (what a rollback restores), as far as known."""
        return {step.knob: step.current for step in self.steps}

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": self.server.value,
            "steps": [s.to_dict() for s in self.steps],
            "skipped": [{"rule": s.rule_id, "knob": s.knob, "reason": s.reason} for s in self.skipped],
            "advice": list(self.advice),
            "changes": self.changes(),
        }


def _current(
    entry: Knob, config: Mapping[str, Any], exported: Mapping[str, str]
) -> tuple[Value, CurrentSource] | None:
    if entry.id in config and config[entry.id] is not None:
        return entry.coerce(config[entry.id]), "config"
    if entry.exported_as is not None and entry.exported_as in exported:
        try:
            return entry.coerce(exported[entry.exported_as]), "metrics"
        except ValueError:
            pass
    if entry.default is not None:
        return entry.default, "default"
    if entry.typical is not None:
        return entry.typical, "assumed"
    return None


def _bounded(entry: Knob, value: float) -> Value:
    if entry.minimum is not None:
        value = max(value, entry.minimum)
    if entry.maximum is not None:
        value = min(value, entry.maximum)
    return round(value) if entry.kind == "int" else round(value, 4)


def propose(entry: Knob, move: KnobMove, current: Value) -> Value:
    """The value after one step of ``move`` from ``current``.

    Raises:
        ValueError: the move does not fit the knob (e.g. ``raise`` on a string flag).
    """
    if move.direction == "set":
        if move.value is None:
            raise ValueError(f"{entry.id}: 'set' needs a value")
        return entry.coerce(move.value)
    if move.direction in ("enable", "disable"):
        if entry.kind != "bool":
            raise ValueError(f"{entry.id}: cannot {move.direction} a {entry.kind} flag")
        return move.direction == "enable"
    if entry.kind not in ("int", "float") or isinstance(current, (bool, str)):
        raise ValueError(f"{entry.id}: cannot {move.direction} a {entry.kind} flag")
    sign = 1.0 if move.direction == "raise" else -1.0
    if entry.factor is not None:
        value = current * entry.factor if sign > 0 else current / entry.factor
    elif entry.step is not None:
        value = current + sign * entry.step
    else:
        raise ValueError(f"{entry.id}: the catalogue gives no step to {move.direction} it by")
    return _bounded(entry, value)


def plan(
    findings: Sequence[Finding],
    server: ServerType | str,
    *,
    config: Mapping[str, Any] | None = None,
    exported: Mapping[str, str] | None = None,
) -> Plan:
    """Turn findings into an ordered plan of flag changes for ``server``.

    Findings are taken most severe first (as :func:`analyze` orders them) and, within one
    finding, knobs in the rule's order. A knob is changed once: a later finding that wants the
    same knob moved is recorded under ``skipped`` (a conflict to show a human, not to resolve
    silently). Moves that would not change the value (already at a bound) are skipped too.

    Args:
        findings: from :func:`~trellis.workflows.performance.analysis.analyze`.
        server: the server type.
        config: the configuration the caller knows is applied (knob id -> value).
        exported: configuration the server exports (``Window.config`` / ``Scrape.config``).
    """
    kind = ServerType(server)
    config = config or {}
    exported = exported or {}
    steps: list[Recommendation] = []
    skipped: list[Skip] = []
    advice: list[str] = []
    taken: dict[str, str] = {}
    for finding in sorted(findings, key=lambda f: f.severity.rank):
        if finding.advice and finding.advice not in advice:
            advice.append(finding.advice)
        for move in finding.knobs:
            entry = knob(kind, move.knob)
            if entry is None:
                skipped.append(Skip(finding.rule_id, move.knob, f"no knob {move.knob!r} for {kind.value}"))
                continue
            if move.knob in taken:
                skipped.append(
                    Skip(finding.rule_id, move.knob, f"already changed for rule {taken[move.knob]!r}")
                )
                continue
            known = _current(entry, config, exported)
            if known is None:
                skipped.append(Skip(finding.rule_id, move.knob, "current value unknown and no typical value"))
                continue
            current, source = known
            try:
                proposed = propose(entry, move, current)
            except ValueError as exc:
                skipped.append(Skip(finding.rule_id, move.knob, str(exc)))
                continue
            if proposed == current:
                skipped.append(Skip(finding.rule_id, move.knob, f"already at {current!r} (bound reached)"))
                continue
            taken[move.knob] = finding.rule_id
            steps.append(
                Recommendation(
                    server=kind,
                    knob=entry.id,
                    flag=entry.flag,
                    current=current,
                    current_source=source,
                    proposed=proposed,
                    direction=move.direction,
                    rule_id=finding.rule_id,
                    reason=finding.text,
                    expected_effect=finding.effect,
                    risk=finding.risk + (f" ({entry.note})" if entry.note else ""),
                )
            )
    return Plan(server=kind, steps=tuple(steps), skipped=tuple(skipped), advice=tuple(advice))

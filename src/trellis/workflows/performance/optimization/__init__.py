"""Optimization: knob catalogue per server and findings -> an ordered plan of flag changes."""

from trellis.workflows.performance.optimization._knobs import KNOBS, Knob, Value, knob
from trellis.workflows.performance.optimization._plan import (
    CurrentSource,
    Plan,
    Recommendation,
    Skip,
    plan,
    propose,
)

__all__ = [
    "KNOBS",
    "CurrentSource",
    "Knob",
    "Plan",
    "Recommendation",
    "Skip",
    "Value",
    "knob",
    "plan",
    "propose",
]

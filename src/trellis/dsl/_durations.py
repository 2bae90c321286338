"""Durations in definitions: ``500ms``, ``1.5s``, ``2m``, ``48h``, ``1d`` or a number of seconds."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
DURATION_PATTERN = r"^\d+(\.\d+)?(ms|s|m|h|d)?$"


def parse_duration(value: Any) -> float:
    """Seconds for a duration string or number; raises ``ValueError`` naming the bad value."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '500ms', '30s' or '2h', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value!r}")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2) or "s"]
    raise ValueError(f"expected a duration such as '500ms', '30s' or '2h', got {value!r}")


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "oneOf": [
                {"type": "string", "pattern": DURATION_PATTERN},
                {"type": "number", "minimum": 0},
            ],
            "description": "seconds, or a string with a unit: ms, s, m, h, d",
        }
    ),
]
"""A duration in seconds, written as a number or a string with a unit."""

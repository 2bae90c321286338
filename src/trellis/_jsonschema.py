"""One way to check a value against a JSON Schema and say where it fails."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema


def first_violation(schema: Mapping[str, Any], value: Any) -> tuple[str, str] | None:
    """``(JSON pointer, message)`` of the most relevant violation, or ``None`` when ``value`` is valid."""
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(value))
    if error is None:
        return None
    return "/" + "/".join(str(p) for p in error.absolute_path), error.message

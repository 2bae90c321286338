"""Differences between two state versions, as a list of JSON-pointer operations.

``[{"op": "add" | "remove" | "replace", "path": "/field/0", "old": ..., "new": ...}]`` — the
vocabulary of JSON Patch (RFC 6902) with the old value kept, so a reader sees what changed
without fetching both versions. Lists that only grew (``append`` fields) diff as additions.
"""

from __future__ import annotations

from typing import Any

from trellis.dsl.walk import escape_pointer


def diff(old: Any, new: Any, path: str = "") -> list[dict[str, Any]]:
    """Operations turning ``old`` into ``new``."""
    if isinstance(old, dict) and isinstance(new, dict):
        ops: list[dict[str, Any]] = []
        for key in old.keys() - new.keys():
            ops.append({"op": "remove", "path": f"{path}/{escape_pointer(str(key))}", "old": old[key]})
        for key, value in new.items():
            child = f"{path}/{escape_pointer(str(key))}"
            if key not in old:
                ops.append({"op": "add", "path": child, "new": value})
            else:
                ops.extend(diff(old[key], value, child))
        return sorted(ops, key=lambda op: op["path"])
    if isinstance(old, list) and isinstance(new, list) and len(new) >= len(old) and new[: len(old)] == old:
        return [
            {"op": "add", "path": f"{path}/{i}", "new": v} for i, v in enumerate(new[len(old) :], len(old))
        ]
    if old == new and type(old) is type(new):
        return []
    return [{"op": "replace", "path": path or "/", "old": old, "new": new}]

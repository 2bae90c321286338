"""The JSON Schema of the definition format, and the canonical form used to pin definitions.

The schema (JSON Schema 2020-12) is generated from the pydantic models, so it cannot drift from
what :func:`trellis.dsl.validate` accepts structurally; editors use it for completion and
inline errors. Semantic rules (targets, reachability, CEL ...) are beyond JSON Schema and are
only checked by the validator.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

from trellis.dsl.models import Workflow

SCHEMA_ID: Final = "https://trellis.dev/schemas/workflow-1.0.json"
"""``$id`` of the schema of format version ``1.0``."""
JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"


def workflow_json_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of a workflow definition document.

    Returns a fresh copy each call; safe to modify.

    Example:
        >>> workflow_json_schema()["$id"]
        'https://trellis.dev/schemas/workflow-1.0.json'
    """
    return copy.deepcopy(_schema())


@functools.cache
def _schema() -> dict[str, Any]:
    generated = Workflow.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": SCHEMA_ID,
        **generated,
        "title": "Trellis workflow definition",
        "description": (
            "A workflow: state fields, policies and a map of nodes, compiled into a LangGraph "
            "StateGraph. CEL fields: when, output, args, input, values, items, until. Template "
            "fields (Jinja2): prompt, system, url, headers, query, body, title, message."
        ),
    }


def canonical_json(data: Any) -> str:
    """``data`` as canonical JSON text: sorted keys, no whitespace, non-ASCII kept as is.

    Two documents with the same content (whatever their key order, formatting, or YAML vs
    JSON) give the same text.

    Raises:
        TypeError: ``data`` holds something that is not JSON (a ``datetime``, a set ...).
        ValueError: ``data`` holds ``NaN`` or an infinity.
    """
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_hash(data: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the canonical JSON of a definition, *without* its ``version`` key.

    Runs pin ``(name, version, hash)``; registering identical content again under a new
    version number is detected by an equal hash. Hash the document data as loaded (what the
    author wrote), not a model dump, which adds defaults.

    Example:
        >>> content_hash({"name": "a", "version": 1}) == content_hash({"version": 2, "name": "a"})
        True
    """
    body = {key: value for key, value in data.items() if key != "version"}
    digest = hashlib.sha256(canonical_json(body).encode("utf-8", "surrogatepass")).hexdigest()
    return f"sha256:{digest}"

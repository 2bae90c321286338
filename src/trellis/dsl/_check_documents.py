"""Checks on the documents a definition embeds: JSON Schemas and pinned workflow references."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from trellis.dsl._subject import Subject
from trellis.dsl.diagnostics import Code, Diagnostic, error
from trellis.dsl.models import ApprovalNode, LlmNode, SubworkflowNode
from trellis.dsl.walk import escape_pointer

PINNED = re.compile(r"^[a-z0-9][a-z0-9._-]*@[1-9][0-9]*$")
"""``name@version``: how a ``subworkflow`` node names the workflow it runs."""


def _schema_problem(schema: Mapping[str, Any], pointer: str, what: str) -> Diagnostic | None:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = pointer + "".join("/" + escape_pointer(str(p)) for p in exc.path)
        return error(Code.INVALID_JSON_SCHEMA, where, f"{what} is not a valid JSON Schema: {exc.message}")
    return None


def check_documents(subject: Subject) -> Iterator[Diagnostic]:
    """``INVALID_JSON_SCHEMA`` (``input``, approval ``form``, llm ``output_schema``) and
    ``UNPINNED_WORKFLOW`` (a ``subworkflow`` without ``@version``)."""
    workflow = subject.workflow
    if workflow.input is not None and (found := _schema_problem(workflow.input, "/input", "`input`")):
        yield found
    for ref in subject.refs:
        node = ref.node
        if isinstance(node, ApprovalNode) and node.form is not None:
            problem = _schema_problem(node.form, ref.pointer + "/form", f"the form of approval `{ref.id}`")
            if problem is not None:
                yield problem
        elif isinstance(node, LlmNode) and node.output_schema is not None:
            problem = _schema_problem(
                node.output_schema, ref.pointer + "/output_schema", f"the output_schema of llm `{ref.id}`"
            )
            if problem is not None:
                yield problem
        elif isinstance(node, SubworkflowNode) and not PINNED.match(node.workflow):
            yield error(
                Code.UNPINNED_WORKFLOW,
                ref.pointer + "/workflow",
                f"subworkflow `{ref.id}` runs `{node.workflow}`: name the version it is pinned to, as "
                "name@version (e.g. `billing@3`), so a registered run always executes the same graph",
            )

"""The workflow definition format: models, loading, validation, JSON Schema.

Typical use::

    from trellis.dsl import load_document, validate

    document = load_document(text, "refund.yaml")
    report = validate(document.data, document)
    for diagnostic in report.diagnostics:
        print(diagnostic.format("refund.yaml"))
    workflow = report.workflow  # a Workflow when report.ok

or, when any error should raise, :func:`load_workflow` / :func:`load_workflow_file`.
"""

from trellis.dsl.diagnostics import Code, Diagnostic, Report, Severity
from trellis.dsl.loader import Document, load_document
from trellis.dsl.models import (
    NODE_ID_PATTERN,
    NODE_TYPES,
    AgentNode,
    AnyNode,
    ApprovalNode,
    ApprovalTimeout,
    CatchSpec,
    CelMap,
    Defaults,
    EndNode,
    FailNode,
    HttpNode,
    LlmNode,
    MapNode,
    Node,
    ParallelNode,
    Policies,
    RetrySpec,
    Route,
    RouterNode,
    SetNode,
    StateField,
    SubworkflowNode,
    TimeoutSpec,
    ToolNode,
    WaitNode,
    Workflow,
)
from trellis.dsl.schema import SCHEMA_ID, canonical_json, content_hash, workflow_json_schema
from trellis.dsl.validator import load_workflow, load_workflow_file, validate
from trellis.dsl.walk import TOP_SCOPE, NodeRef, escape_pointer, walk

__all__ = [
    "NODE_ID_PATTERN",
    "NODE_TYPES",
    "SCHEMA_ID",
    "TOP_SCOPE",
    "AgentNode",
    "AnyNode",
    "ApprovalNode",
    "ApprovalTimeout",
    "CatchSpec",
    "CelMap",
    "Code",
    "Defaults",
    "Diagnostic",
    "Document",
    "EndNode",
    "FailNode",
    "HttpNode",
    "LlmNode",
    "MapNode",
    "Node",
    "NodeRef",
    "ParallelNode",
    "Policies",
    "Report",
    "RetrySpec",
    "Route",
    "RouterNode",
    "SetNode",
    "Severity",
    "StateField",
    "SubworkflowNode",
    "TimeoutSpec",
    "ToolNode",
    "WaitNode",
    "Workflow",
    "canonical_json",
    "content_hash",
    "escape_pointer",
    "load_document",
    "load_workflow",
    "load_workflow_file",
    "validate",
    "walk",
    "workflow_json_schema",
]

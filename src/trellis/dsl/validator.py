"""Validate a definition: structure (pydantic) and meaning (semantic checks), all at once.

:func:`validate` never stops at the first problem. Structural errors become ``SCHEMA``
diagnostics pointing into the document; then the semantic checks run on everything that can be
checked — when pydantic rejected part of the document, on a salvaged copy that keeps every part
that is valid on its own — so one bad node does not hide the problems of the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trellis.dsl._check_documents import check_documents
from trellis.dsl._check_expressions import check_expressions
from trellis.dsl._check_fields import check_ids, check_policies, check_state_fields
from trellis.dsl._check_graph import check_graph
from trellis.dsl._salvage import salvage_workflow
from trellis.dsl._schema_errors import schema_diagnostics
from trellis.dsl._subject import Subject
from trellis.dsl.diagnostics import Code, Diagnostic, Report, error, sort_key
from trellis.dsl.loader import Document, load_document
from trellis.dsl.models import Workflow
from trellis.errors import DefinitionError


def validate(data: Any, document: Document | None = None) -> Report:
    """Check a definition and report every problem.

    Args:
        data: the definition as plain data (a parsed YAML/JSON document).
        document: the :class:`Document` ``data`` came from, if any: its parse diagnostics are
            included and every diagnostic gets the line and column of its path.

    Returns:
        A :class:`Report`; ``report.workflow`` is the validated :class:`Workflow` when there is
        no error (warnings allowed).

    Example:
        >>> report = validate({"name": "demo", "start": "a", "nodes": {"a": {"type": "end"}}})
        >>> report.ok, report.diagnostics
        (True, ())
    """
    found: list[Diagnostic] = list(document.diagnostics) if document is not None else []
    filename = document.filename if document is not None else "<input>"
    if document is not None and not document.parsed:
        return Report(tuple(sorted(found, key=sort_key)), None, filename)
    workflow: Workflow | None = None
    if not isinstance(data, Mapping):
        kind = "nothing" if data is None else f"a {type(data).__name__}"
        found.append(
            error(
                Code.SCHEMA,
                "",
                f"a workflow definition must be a mapping with `name`, `start` and `nodes`; got {kind}",
            )
        )
    else:
        try:
            workflow = Workflow.model_validate(data)
        except ValidationError as exc:
            found.extend(schema_diagnostics(exc, data))
        subject = Subject.of(workflow if workflow is not None else salvage_workflow(data))
        found.extend(_semantic(subject, document))
    diagnostics = tuple(sorted(_positioned(found, document), key=sort_key))
    ok = not any(d.is_error for d in diagnostics)
    return Report(diagnostics, workflow if ok else None, filename)


def _semantic(subject: Subject, document: Document | None) -> Iterable[Diagnostic]:
    yield from check_ids(subject)
    yield from check_graph(subject)
    yield from check_policies(subject)
    yield from check_state_fields(subject)
    yield from check_documents(subject)
    yield from check_expressions(subject, document)


def _positioned(found: Iterable[Diagnostic], document: Document | None) -> Iterable[Diagnostic]:
    seen: set[tuple[str, str, str]] = set()
    for diagnostic in found:
        key = (diagnostic.code, diagnostic.path, diagnostic.message)
        if key in seen:
            continue
        seen.add(key)
        if diagnostic.line is None and document is not None:
            where = document.position(diagnostic.path)
            if where is not None:
                diagnostic = Diagnostic(
                    diagnostic.code, diagnostic.severity, diagnostic.path, diagnostic.message, *where
                )
        yield diagnostic


def load_workflow(text: str, filename: str = "<input>") -> Workflow:
    """Parse and validate definition text; return the workflow or raise with every problem.

    Args:
        text: YAML or JSON.
        filename: shown in messages; ``*.json`` selects strict JSON parsing.

    Raises:
        DefinitionError: the definition has at least one error;
            ``details["diagnostics"]`` lists every diagnostic as a dict (warnings included).
    """
    document = load_document(text, filename)
    report = validate(document.data, document)
    if report.workflow is None:
        errors = report.errors
        count = f"{len(errors)} error{'s' if len(errors) != 1 else ''}"
        raise DefinitionError(
            f"{filename}: invalid workflow definition ({count}); first: {errors[0].format(filename)}",
            details={"file": filename, "diagnostics": [d.to_dict() for d in report.diagnostics]},
        )
    return report.workflow


def load_workflow_file(path: str | Path) -> Workflow:
    """:func:`load_workflow` on a file (UTF-8); ``.json`` files are parsed as strict JSON.

    Raises:
        DefinitionError: the file is not UTF-8 text or the definition has an error.
        OSError: the file cannot be read.
    """
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        problem = Diagnostic(
            Code.PARSE_ERROR.value, "error", "", f"not UTF-8 text: {exc.reason} at byte {exc.start}"
        )
        raise DefinitionError(
            f"{path}: not UTF-8 text (byte {exc.start})",
            details={"file": str(path), "diagnostics": [problem.to_dict()]},
        ) from None
    return load_workflow(text, str(path))

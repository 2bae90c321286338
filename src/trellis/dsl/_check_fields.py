"""Checks on ids, policies, approvals and state fields."""

from __future__ import annotations

import re
from collections.abc import Iterator

from trellis.dsl._subject import Subject
from trellis.dsl.diagnostics import Code, Diagnostic, did_you_mean, error, listing, warning
from trellis.dsl.models import (
    NODE_ID_PATTERN,
    ApprovalNode,
    ApprovalTimeout,
    MapNode,
    ParallelNode,
    RetrySpec,
    SetNode,
    TimeoutSpec,
)
from trellis.dsl.walk import TOP_SCOPE, NodeRef, escape_pointer

_ID = re.compile(NODE_ID_PATTERN)
_ID_RULE = f"ids must match {NODE_ID_PATTERN} (a lowercase letter, then lowercase letters, digits or _)"


def check_ids(subject: Subject) -> Iterator[Diagnostic]:
    """``DUPLICATE_ID`` and ``MALFORMED_ID`` (node keys, inline ``id`` fields, branch names)."""
    first: dict[str, tuple[str, bool]] = {}
    for ref in subject.refs:
        explicit = ref.scope == TOP_SCOPE or ref.node.id is not None
        path = ref.pointer if ref.scope == TOP_SCOPE or not explicit else ref.pointer + "/id"
        if ref.id in first:
            other, other_explicit = first[ref.id]
            kind = "" if explicit else "generated "
            generated = "" if other_explicit else " (as its generated id)"
            yield error(
                Code.DUPLICATE_ID,
                path,
                f"{kind}node id `{ref.id}` is already used by the node at {other}{generated}; ids are "
                "one flat namespace, inline nodes included; rename one or give the inline node an `id`",
            )
        else:
            first[ref.id] = (ref.pointer, explicit)
        if explicit and not _ID.match(ref.id):
            yield error(Code.MALFORMED_ID, path, f"node id `{ref.id}` is malformed: {_ID_RULE}")
        if ref.scope == TOP_SCOPE and ref.node.id is not None and ref.node.id != ref.id:
            yield error(
                Code.MALFORMED_ID,
                ref.pointer + "/id",
                f"node `{ref.id}` sets `id: {ref.node.id}`, but a top-level node's id is its key in "
                "`nodes`; remove `id` or rename the key",
            )
        if isinstance(ref.node, ParallelNode):
            for branch in ref.node.branches or {}:
                if not _ID.match(branch):
                    yield error(
                        Code.MALFORMED_ID,
                        f"{ref.pointer}/branches/{escape_pointer(branch)}",
                        f"branch name `{branch}` of parallel `{ref.id}` is malformed: {_ID_RULE}",
                    )


def check_policies(subject: Subject) -> Iterator[Diagnostic]:
    """``MAX_ATTEMPTS_BELOW_ONE``, ``UNKNOWN_POLICY`` and ``APPROVAL_WITHOUT_TIMEOUT``."""
    workflow = subject.workflow
    retries = workflow.policies.retries or {}
    timeouts = workflow.policies.timeouts or {}
    for name, spec in retries.items():
        yield from _check_retry(spec, f"/policies/retries/{escape_pointer(name)}", f"retry policy `{name}`")
    defaults = workflow.defaults
    yield from _check_policy_use(
        defaults.retry, defaults.timeout, "/defaults", "`defaults`", retries, timeouts
    )
    for ref in subject.refs:
        node = ref.node
        timeout = None if isinstance(node, ApprovalNode) else node.timeout
        where = f"node `{ref.id}`"
        yield from _check_policy_use(node.retry, timeout, ref.pointer, where, retries, timeouts)
        if isinstance(node, ApprovalNode) and not isinstance(node.timeout, ApprovalTimeout):
            yield warning(
                Code.APPROVAL_WITHOUT_TIMEOUT,
                ref.pointer,
                f"approval `{ref.id}` has no `timeout`: the run waits for a decision forever; "
                "add `timeout: {after: 48h, next: <node id>}`",
            )


def _check_policy_use(
    retry: RetrySpec | str | None,
    timeout: TimeoutSpec | str | None,
    pointer: str,
    where: str,
    retries: dict[str, RetrySpec],
    timeouts: dict[str, TimeoutSpec],
) -> Iterator[Diagnostic]:
    if isinstance(retry, RetrySpec):
        yield from _check_retry(retry, pointer + "/retry", f"the retry of {where}")
    elif isinstance(retry, str) and retry not in retries:
        yield error(
            Code.UNKNOWN_POLICY,
            pointer + "/retry",
            f"`retry: {retry}` in {where} — no retry policy `{retry}`{did_you_mean(retry, retries)}; "
            f"`policies.retries` defines: {listing(retries)}",
        )
    if isinstance(timeout, str) and timeout not in timeouts:
        yield error(
            Code.UNKNOWN_POLICY,
            pointer + "/timeout",
            f"`timeout: {timeout}` in {where} — no timeout policy `{timeout}`"
            f"{did_you_mean(timeout, timeouts)}; `policies.timeouts` defines: {listing(timeouts)}",
        )


def _check_retry(spec: RetrySpec, pointer: str, where: str) -> Iterator[Diagnostic]:
    attempts = spec.max_attempts
    if isinstance(attempts, int) and attempts < 1:
        yield error(
            Code.MAX_ATTEMPTS_BELOW_ONE,
            pointer + "/max_attempts",
            f"`max_attempts: {attempts}` in {where} — it counts attempts, the first one included, "
            "so it must be at least 1 (1 = no retry)",
        )


def check_state_fields(subject: Subject) -> Iterator[Diagnostic]:
    """``UNKNOWN_STATE_FIELD``: writes to undeclared fields, when ``state`` is declared."""
    declared = set(subject.workflow.state or {})
    if not declared:
        return
    for i, handler in enumerate(subject.workflow.defaults.catch or []):
        for key in handler.output or {}:
            if key not in declared:
                yield error(
                    Code.UNKNOWN_STATE_FIELD,
                    f"/defaults/catch/{i}/output/{escape_pointer(key)}",
                    f"`defaults.catch[{i}].output` writes `{key}`, which is not a declared state field"
                    f"{did_you_mean(key, declared)}; `state` declares: {listing(declared)}",
                )
    for ref in subject.refs:
        node = ref.node
        yield from _writes(ref, node.output, "/output", "output", declared)
        for i, handler in enumerate(node.catch or []):
            yield from _writes(ref, handler.output, f"/catch/{i}/output", f"catch[{i}].output", declared)
        if isinstance(node, SetNode):
            yield from _writes(ref, node.values, "/values", "values", declared)
        if isinstance(node, MapNode) and isinstance(node.collect, str) and node.collect not in declared:
            yield _unknown_field(ref, "/collect", f"`collect: {node.collect}`", node.collect, declared)


def _writes(
    ref: NodeRef, mapping: dict[str, object] | None, suffix: str, label: str, declared: set[str]
) -> Iterator[Diagnostic]:
    for key in mapping or {}:
        if key not in declared:
            path = f"{suffix}/{escape_pointer(key)}"
            yield _unknown_field(ref, path, f"`{label}` writes `{key}`, which", key, declared)


def _unknown_field(ref: NodeRef, suffix: str, what: str, key: str, declared: set[str]) -> Diagnostic:
    return error(
        Code.UNKNOWN_STATE_FIELD,
        ref.pointer + suffix,
        f"{what} is not a declared state field (node `{ref.id}`){did_you_mean(key, declared)}; "
        f"`state` declares: {listing(declared)}",
    )

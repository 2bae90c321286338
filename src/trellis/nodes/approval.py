"""Nodes that park the run: ``approval`` (a person decides) and ``wait`` (a timer).

Both call LangGraph's ``interrupt()``; the runtime records what the run waits for, and
resumes the thread with ``Command(resume=...)`` when a decision arrives or the timer fires.
LangGraph re-executes an interrupted node from its start on resume, so nothing here has a
side effect before ``interrupt()``: rendering the title is pure.

Resume values: ``{"outcome": "decided", "approved", "by", "comment", "data", "decided_at"}``,
``{"outcome": "timeout"}`` or ``{"outcome": "elapsed"}``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from langgraph.types import interrupt

from trellis._jsonschema import first_violation
from trellis.dsl.models import ApprovalNode, WaitNode
from trellis.errors import ApprovalRejected, ExpressionError, ValidationError
from trellis.expressions import compile_expression, compile_template
from trellis.nodes._context import NodeContext
from trellis.nodes._wrapper import Body, Outcome


def validate_decision_data(form: dict[str, Any] | None, data: Any, where: str) -> None:
    """Check approval ``data`` against the node's ``form`` schema; ``ValidationError`` names the path."""
    if form is None:
        return
    violation = first_violation(form, {} if data is None else data)
    if violation is not None:
        path, message = violation
        raise ValidationError(f"{where}: decision data at {path}: {message}", details={"path": path})


def build_approval(node_id: str, node: ApprovalNode) -> Body:
    title = compile_template(node.title)

    async def body(ctx: NodeContext) -> Outcome:
        payload: dict[str, Any] = {
            "kind": "approval",
            "node": ctx.node,
            "title": title.render(ctx.bindings),
            "assignees": list(node.assignees),
            "form": node.form,
            "timeout_seconds": node.timeout.after if node.timeout else None,
            "on_timeout": node.timeout.next if node.timeout else None,
        }
        answer = interrupt(payload)
        if not isinstance(answer, dict):
            raise ValidationError(f"approval node {ctx.node!r} was resumed with {answer!r}, not a decision")
        if answer.get("outcome") == "timeout" and node.timeout is not None:
            result = {"approved": False, "timed_out": True, "by": None, "comment": None, "data": None}
            result["decided_at"] = answer.get("decided_at")
            return Outcome(result=result, goto=node.timeout.next)
        if answer.get("approved"):
            validate_decision_data(node.form, answer.get("data"), f"approval node {ctx.node!r}")
        result = {
            "approved": bool(answer.get("approved")),
            "by": answer.get("by"),
            "comment": answer.get("comment"),
            "data": answer.get("data"),
            "decided_at": answer.get("decided_at"),
        }
        if not result["approved"] and node.on_reject == "fail":
            reason = f": {result['comment']}" if result["comment"] else ""
            raise ApprovalRejected(
                f"approval {ctx.node!r} rejected by {result['by'] or 'someone'}{reason}",
                node=ctx.node,
                details={"decision": result},
            )
        return Outcome(result=result)

    return body


def build_wait(node_id: str, node: WaitNode) -> Body:
    until = compile_expression(node.until) if node.until else None

    async def body(ctx: NodeContext) -> Outcome:
        if until is not None:
            value = until.evaluate(ctx.bindings)
            if isinstance(value, str):
                try:
                    value = datetime.fromisoformat(value)
                except ValueError:
                    raise ExpressionError(
                        f"wait node {ctx.node!r}: until={value!r} is not a timestamp"
                    ) from None
            if not isinstance(value, datetime):
                raise ExpressionError(f"wait node {ctx.node!r}: until gave {value!r}, not a timestamp")
            target = value if value.tzinfo else value.replace(tzinfo=UTC)
            seconds = None
        else:
            seconds = node.for_ or 0.0
            target = None
        payload = {
            "kind": "wait",
            "node": ctx.node,
            "seconds": seconds,
            "until": target.isoformat() if target else None,
        }
        answer = interrupt(payload)
        outcome = answer.get("outcome") if isinstance(answer, dict) else None
        return Outcome(result={"outcome": outcome or "resumed"})

    return body


def wake_time(payload: dict[str, Any], parked_at: datetime) -> datetime | None:
    """When the runtime should resume a parked ``approval``/``wait`` on its own."""
    if payload.get("kind") == "wait":
        if payload.get("until"):
            return datetime.fromisoformat(payload["until"])
        return parked_at + timedelta(seconds=float(payload.get("seconds") or 0.0))
    if payload.get("kind") == "approval" and payload.get("timeout_seconds") is not None:
        return parked_at + timedelta(seconds=float(payload["timeout_seconds"]))
    return None

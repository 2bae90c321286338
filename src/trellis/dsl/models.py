"""Pydantic models of the workflow definition format (DESIGN §3, research/dsl.md §8).

The models check *structure* (types, required fields, unknown keys). Cross-references, CEL
syntax, reachability and the other semantic rules are checked by :mod:`trellis.dsl.validator`,
which reports every problem at once with its JSON-pointer path.

Field conventions:

* ``CelMap`` values are CEL expressions evaluated over the bound variables (``state``,
  ``input``, ``result``, ``item``, ``index``, ``error``); a non-string value (number, boolean,
  list, object, null) is taken literally.
* Template fields (``prompt``, ``url``, ``headers``, ``body``, ``title``, ``message``) are
  Jinja2 templates rendered in a sandbox; they produce text, never routing decisions.
* Durations accept ``500ms``, ``30s``, ``2m``, ``48h``, ``1d`` or a number of seconds.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trellis.dsl._durations import Duration

CelMap = dict[str, Any]
"""``key -> CEL expression`` (strings) or literal JSON values (anything else)."""

NODE_ID_PATTERN = r"^[a-z][a-z0-9_]*$"
"""Node ids: lowercase letter first, then lowercase letters, digits and underscores."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class RetrySpec(_Model):
    """How a failed node attempt is retried. ``max_attempts`` counts attempts, first included."""

    max_attempts: int = 3
    """Total attempts, including the first (LangGraph and Temporal count this way)."""
    initial_interval: Duration = 1.0
    """Cap of the delay before the second attempt, seconds."""
    backoff_rate: float = Field(default=2.0, ge=1.0)
    """Multiplier applied to the delay cap after each failed attempt."""
    max_interval: Duration = 60.0
    """Upper bound of any one delay, seconds."""
    jitter: Literal["full", "none"] = "full"
    """``full``: the delay is drawn uniformly from 0..cap; ``none``: the delay is the cap."""
    on: list[str] | None = None
    """Error names to retry (``*`` = all retryable). Default: transient errors only
    (``Timeout``, ``ConnectionError``, ``RateLimited``, 5xx ``HttpError``)."""


class TimeoutSpec(_Model):
    """Per-attempt time limits."""

    run: Duration | None = None
    """Hard wall-clock cap on one attempt, seconds."""
    idle: Duration | None = None
    """Longest an attempt may go without reporting progress, seconds."""


class CatchSpec(_Model):
    """What to do when a node fails after its retries: route to ``next`` or continue with ``output``."""

    errors: list[str] = Field(default_factory=lambda: ["*"])
    """Error names this handler matches; ``*`` matches any."""
    next: str | None = None
    """Fallback node; without it the run continues at the failed node's ``next``."""
    output: CelMap | None = None
    """State updates to apply (CEL over ``state``, ``input`` and ``error``)."""


class Policies(_Model):
    """Named, reusable policies referenced from nodes by name (``retry: llm``)."""

    retries: dict[str, RetrySpec] = Field(default_factory=dict)
    timeouts: dict[str, TimeoutSpec] = Field(default_factory=dict)


class Defaults(_Model):
    """Policies applied to every node that does not set its own."""

    retry: RetrySpec | str | None = None
    timeout: TimeoutSpec | str | None = None
    catch: list[CatchSpec] | None = None


class StateField(_Model):
    """One field of the workflow state."""

    type: Literal["string", "number", "integer", "boolean", "object", "array", "null"] | None = None
    reducer: Literal["append", "merge", "replace"] = "replace"
    """``append``: lists are concatenated; ``merge``: objects are merged; ``replace``: last write wins."""
    default: Any = None
    description: str | None = None


class _NodeBase(_Model):
    id: str | None = None
    """Required only for inline nodes (parallel branches, map bodies) that something targets;
    generated otherwise. Top-level nodes take their id from their key in ``nodes``."""
    description: str | None = None
    next: str | None = None
    """Successor; omitted = end of the enclosing scope."""
    output: CelMap | None = None
    """State updates from the node's ``result`` (the only way data enters state)."""
    retry: RetrySpec | str | None = None
    timeout: TimeoutSpec | str | None = None
    catch: list[CatchSpec] | None = None


class ToolNode(_NodeBase):
    """Call a Python callable from the project's tool registry."""

    type: Literal["tool"]
    tool: str
    args: CelMap = Field(default_factory=dict)


class HttpNode(_NodeBase):
    """Make an HTTP request. ``result`` is ``{status, headers, body}`` (body parsed as JSON when it is)."""

    type: Literal["http"]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    """A template string, or a JSON value whose string leaves are templates."""
    ok_statuses: list[int] | None = None
    """Statuses treated as success (default: 2xx and 3xx)."""


class AgentNode(_NodeBase):
    """Call a registered agent by name; ``result`` is its JSON answer."""

    type: Literal["agent"]
    agent: str
    input: CelMap = Field(default_factory=dict)
    path: str | None = None
    """Path appended to the agent's base URL (default: the agent's invoke path)."""


class LlmNode(_NodeBase):
    """OpenAI-compatible chat completion. ``result`` is ``{text, json?, model, usage}``."""

    type: Literal["llm"]
    model: str
    """A model alias from the project's configuration."""
    prompt: str
    system: str | None = None
    output_schema: dict[str, Any] | None = None
    """When set, the answer must be JSON matching this schema; it is returned as ``result.json``."""
    temperature: float | None = None
    max_tokens: int | None = None


class Route(_Model):
    when: str
    next: str


class RouterNode(_NodeBase):
    """Pick the first route whose ``when`` holds, else ``default``."""

    type: Literal["router"]
    routes: list[Route] = Field(default_factory=list)
    default: str | None = None


class ParallelNode(_NodeBase):
    """Run branches concurrently, then continue at ``next`` once every branch ended."""

    type: Literal["parallel"]
    branches: dict[str, list[InlineNode]]
    mode: Literal["all"] = "all"
    min_success: int | None = None
    """Branches that must succeed; failed branches beyond the tolerance fail the node.
    Default: all of them. A branch that failed is reported in ``result.failed``."""


class MapNode(_NodeBase):
    """Run ``do`` once per element of ``items`` (bound as ``item`` / ``index``), concurrently."""

    type: Literal["map"]
    items: str
    do: list[InlineNode]
    max_concurrency: int | None = Field(default=None, ge=1)
    collect: str | None = None
    """State field receiving the list of per-item results, in item order."""


class ApprovalTimeout(_Model):
    after: Duration
    next: str


class ApprovalNode(_NodeBase):
    """Park the run until a person approves or rejects. ``result`` is
    ``{approved, by, comment, data, decided_at}``."""

    type: Literal["approval"]
    title: str = "Approve?"
    assignees: list[str] = Field(default_factory=list)
    form: dict[str, Any] | None = None
    """JSON Schema the decision's ``data`` must match."""
    timeout: ApprovalTimeout | None = None  # type: ignore[assignment]
    on_reject: Literal["fail", "continue"] = "fail"
    """``fail`` raises ``ApprovalRejected`` (which ``catch`` can route); ``continue`` moves on
    with ``result.approved == false``."""


class WaitNode(_NodeBase):
    """Park the run for a duration (``for``) or until a time (``until``, CEL timestamp)."""

    type: Literal["wait"]
    for_: Duration | None = Field(default=None, alias="for")
    until: str | None = None


class SubworkflowNode(_NodeBase):
    """Run another registered workflow, pinned to a version, as one node."""

    type: Literal["subworkflow"]
    workflow: str
    """``name@version``."""
    input: CelMap = Field(default_factory=dict)


class SetNode(_NodeBase):
    """Write values into state."""

    type: Literal["set"]
    values: CelMap


class FailNode(_NodeBase):
    """End the run (or branch) with an error that ``catch`` can match by name."""

    type: Literal["fail"]
    error: str = "Failed"
    message: str | None = None


class EndNode(_NodeBase):
    """End the run successfully."""

    type: Literal["end"]


Node = Annotated[
    ToolNode
    | HttpNode
    | AgentNode
    | LlmNode
    | RouterNode
    | ParallelNode
    | MapNode
    | ApprovalNode
    | WaitNode
    | SubworkflowNode
    | SetNode
    | FailNode
    | EndNode,
    Field(discriminator="type"),
]
InlineNode = Node
"""Nodes inside a parallel branch or a map body: the same types, in sequence."""

NODE_TYPES: tuple[str, ...] = (
    "tool",
    "http",
    "agent",
    "llm",
    "router",
    "parallel",
    "map",
    "approval",
    "wait",
    "subworkflow",
    "set",
    "fail",
    "end",
)


class ScheduleSpec(_Model):
    """A cron schedule that starts runs of the workflow (``schedules: [...]``).

    Each tick starts exactly one run, however many Trellis processes are serving; ticks missed
    while no process was running follow ``missed``.
    """

    name: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=150)
    """Name of the schedule (``trellis schedules ...``); default ``<workflow>-schedule-<index>``."""
    cron: str = Field(min_length=1, max_length=200, examples=["*/15 * * * *", "0 9 * * MON-FRI"])
    """Five-field cron expression (minute hour day-of-month month day-of-week)."""
    timezone: str = "UTC"
    """IANA time zone the cron expression is read in (``Europe/Berlin``); DST is honoured."""
    input: dict[str, Any] = Field(default_factory=dict)
    """Input of every run it starts."""
    missed: Literal["skip", "run_once"] = "skip"
    """Ticks missed during downtime: ``skip`` them, or ``run_once`` for all of them together."""

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from trellis.dsl._cron import check_cron

        return check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        from trellis.dsl._cron import check_timezone

        return check_timezone(value)


class Workflow(_Model):
    """A workflow definition."""

    dsl: str = "1.0"
    """Format version."""
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    version: int = Field(default=1, ge=1)
    description: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    state: dict[str, StateField] = Field(default_factory=dict)
    input: dict[str, Any] | None = None
    """JSON Schema of the run input."""
    output: CelMap | None = None
    """Run output mapping (CEL over ``state`` and ``input``); default: the final state."""
    defaults: Defaults = Field(default_factory=Defaults)
    policies: Policies = Field(default_factory=Policies)
    concurrency: int | None = Field(default=None, ge=1)
    """Most runs of this workflow allowed to run at once across all workers."""
    preflight: list[str] = Field(default_factory=list)
    """Agents a run needs: a run starting while one is unregistered, disabled, unhealthy or
    behind an open circuit fails at once with ``PreflightFailed``."""
    start: str
    nodes: dict[str, Node]
    schedules: list[ScheduleSpec] = Field(default_factory=list)
    """Cron schedules that start runs of this workflow (see :class:`ScheduleSpec`)."""


ParallelNode.model_rebuild()
MapNode.model_rebuild()
Workflow.model_rebuild()

AnyNode = (
    ToolNode
    | HttpNode
    | AgentNode
    | LlmNode
    | RouterNode
    | ParallelNode
    | MapNode
    | ApprovalNode
    | WaitNode
    | SubworkflowNode
    | SetNode
    | FailNode
    | EndNode
)

"""The project tools the example workflows call (``tool:`` nodes).

Load them the way a project loads its own tools: ``tools = ["examples/tools.py"]`` in
``trellis.toml`` (``examples/trellis.toml`` does), or ``TRELLIS_TOOLS=examples/tools.py``.
Importing this module registers every tool on the process-wide registry; tests call
:func:`register` with a registry of their own instead.

=====================  =========================================================================
``text.keywords``      nlp-data-viz: local keyword extraction when the ``nlp`` agent is down
``render.table``       nlp-data-viz: plain-text table when the ``viz`` agent is down
``sources.<name>``     troubleshooting: the four evidence sources (logs, metrics, traces, config)
``incident.aggregate`` troubleshooting: findings plus parallel / sequential latency and speedup
``incident.summary``   troubleshooting: a structured summary when no model answers
``kb.search``          refund-triage: search a small in-memory knowledge base
``support.escalate``   refund-triage: hand the ticket to the support-leads queue
``email.send``         refund-triage: "send" the reply (returns a receipt; nothing leaves the host)
=====================  =========================================================================

The evidence sources are simulations: each sleeps for its usual latency (logs 300 ms,
metrics 500 ms, traces 100 ms, config 50 ms) and returns canned findings about the service.
Their ``fail`` and ``slow`` arguments come from the run input, so a demo or a test can take
a source down (``{"fail": ["traces"]}``) or make it slow (``{"slow": {"logs": 3}}``).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from trellis.registry import Registry, registry


class Context(Protocol):
    """What these tools use of the ``ctx`` Trellis passes to a tool that declares one."""

    def progress(self, message: str | None = None, **data: Any) -> None: ...


# -- nlp-data-viz ----------------------------------------------------------------------------

_STOPWORDS_TEXT = """
    a about after again all also an and any are as at be because been before being between both
    but by can could did do does doing down during each few for from further had has have having he
    her here hers him his how i if in into is it its itself just me more most my no nor not now of
    off on once only or other our out over own same she should so some such than that the their
    them then there these they this those through to too under until up very was we were what when
    where which while who whom why will with would you your"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9'-]+")


def keywords(text: str, limit: int = 5) -> list[str]:
    """The ``limit`` most frequent non-stopwords of ``text``, ties in order of first appearance."""
    words = [w.lower().strip("'-") for w in _WORD.findall(text)]
    counts = Counter(w for w in words if len(w) > 2 and w not in STOPWORDS)
    first = {w: i for i, w in reversed(list(enumerate(words)))}
    ranked = sorted(counts, key=lambda w: (-counts[w], first[w]))
    return ranked[: max(limit, 0)]


def render_table(
    rows: Sequence[Mapping[str, Any]], title: str = "", columns: Sequence[str] | None = None
) -> dict[str, Any]:
    """Rows as a plain-text table: ``{kind: "table", title, columns, rows, text}``.

    Without ``columns``: every key of the rows, text columns first, each group by name (keys
    reach a tool in no particular order, so the table sorts them itself).
    """
    if columns is None:
        keys = {key for row in rows for key in row}
        text = {key for row in rows for key, value in row.items() if isinstance(value, str)}
        columns = sorted(keys, key=lambda key: (key not in text, key))
    cells = [[_cell(row.get(col)) for col in columns] for row in rows]
    widths = [max([len(col), *(len(r[i]) for r in cells)]) for i, col in enumerate(columns)]
    lines = [title] if title else []
    if not rows:
        lines.append("(no data)")
    else:
        lines.append("  ".join(col.ljust(w) for col, w in zip(columns, widths, strict=True)).rstrip())
        lines.append("  ".join("-" * w for w in widths))
        lines.extend("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)
    return {"kind": "table", "title": title, "columns": columns, "rows": list(rows), "text": "\n".join(lines)}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


# -- troubleshooting -------------------------------------------------------------------------

SOURCE_LATENCY: dict[str, float] = {"logs": 0.3, "metrics": 0.5, "traces": 0.1, "config": 0.05}
"""Usual latency of each evidence source, seconds."""

_FINDINGS: dict[str, list[tuple[str, str]]] = {
    "logs": [
        ("error", "1,204 'connection pool exhausted' errors from {service} in the last 15 minutes"),
        ("warning", "request retries by {service} clients up 8x since 14:02"),
    ],
    "metrics": [
        ("error", "{service} p99 latency 2.3 s (baseline 180 ms) since 14:02"),
        ("warning", "database connections of {service} pinned at 10/10"),
    ],
    "traces": [
        ("error", "94% of slow {service} traces wait on acquiring a database connection"),
    ],
    "config": [
        ("error", "{service} db.pool_size lowered from 100 to 10 by deploy #4812 at 14:01"),
    ],
}

_SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}

Source = Callable[..., Awaitable[dict[str, Any]]]


def make_source(name: str) -> Source:
    """The evidence source ``name``: sleeps for its latency, then reports findings with timestamps.

    ``started_at`` / ``finished_at`` are wall-clock epoch seconds, so the aggregator can measure
    the fan-out from the timestamps of sources that ran concurrently.
    """
    if name not in SOURCE_LATENCY:
        raise ValueError(f"unknown evidence source {name!r}; known: {sorted(SOURCE_LATENCY)}")

    async def collect(
        service: str,
        ctx: Context,
        fail: Sequence[str] = (),
        slow: Mapping[str, float] | None = None,
    ) -> dict[str, Any]:
        started = time.time()
        ctx.progress(f"querying {name} of {service}")
        if name in fail:
            raise ConnectionError(f"{name} backend for {service!r} refused the connection (injected fault)")
        await asyncio.sleep(float((slow or {}).get(name, SOURCE_LATENCY[name])))
        finished = time.time()
        findings = [
            {"source": name, "severity": severity, "message": text.format(service=service)}
            for severity, text in _FINDINGS[name]
        ]
        return {
            "source": name,
            "started_at": started,
            "finished_at": finished,
            "duration_ms": round((finished - started) * 1000, 1),
            "findings": findings,
        }

    collect.__name__ = f"collect_{name}"
    collect.__doc__ = f"Query the {name} of a service (simulated: {SOURCE_LATENCY[name] * 1000:g} ms)."
    return collect


def aggregate(evidence: Mapping[str, Any], sources: Mapping[str, Any], ctx: Context) -> dict[str, Any]:
    """Merge the sources' findings and measure the fan-out.

    Args:
        evidence: ``{source name: what the source returned}`` for the sources that answered.
        sources: the parallel node's ``result``: ``{succeeded: [names], failed: {name: problem}}``.

    Returns:
        ``{findings, suspect, sources: {succeeded, failed: {name: error name}}, latency}`` where
        ``latency`` holds ``parallel_s`` (first start to last finish of the answering sources,
        i.e. the fan-out's wall time), ``sequential_s`` (the sum of their durations: what the
        same calls cost one after the other) and ``speedup`` (their ratio).
    """
    answered = [evidence[name] for name in sources.get("succeeded", []) if name in evidence]
    findings = sorted(
        (f for report in answered for f in report["findings"]),
        key=lambda f: _SEVERITY_ORDER.get(f["severity"], 9),
    )
    latency: dict[str, float | None] = {"parallel_s": None, "sequential_s": None, "speedup": None}
    if answered:
        parallel = max(r["finished_at"] for r in answered) - min(r["started_at"] for r in answered)
        sequential = sum(r["finished_at"] - r["started_at"] for r in answered)
        latency = {
            "parallel_s": round(parallel, 3),
            "sequential_s": round(sequential, 3),
            "speedup": round(sequential / parallel, 2) if parallel > 0 else None,
        }
    failed = {name: problem.get("error", "Error") for name, problem in sources.get("failed", {}).items()}
    ctx.progress("fan-out measured", **latency)
    return {
        "findings": findings,
        "suspect": next((f for f in findings if f["source"] == "config"), findings[0] if findings else None),
        "sources": {"succeeded": list(sources.get("succeeded", [])), "failed": failed},
        "latency": latency,
    }


def structured_summary(service: str, report: Mapping[str, Any], reason: str | None = None) -> dict[str, Any]:
    """A summary built from the aggregated report alone, for when no model answers."""
    suspect = report.get("suspect")
    failed = sorted(report.get("sources", {}).get("failed", {}))
    lines = [f"Incident on {service}."]
    if suspect:
        lines.append(f"Most likely cause ({suspect['source']}): {suspect['message']}.")
    errors = [f for f in report.get("findings", []) if f["severity"] == "error" and f != suspect]
    lines.extend(f"Evidence ({f['source']}): {f['message']}." for f in errors)
    if failed:
        lines.append(f"Not checked (source unavailable): {', '.join(failed)}.")
    return {
        "text": " ".join(lines),
        "generated_by": "fallback",
        "reason": reason,
        "suspect": suspect,
        "unchecked": failed,
    }


# -- refund-triage ---------------------------------------------------------------------------

KNOWLEDGE_BASE: list[dict[str, Any]] = [
    {
        "id": "kb-101",
        "title": "Refund policy: refunds within 30 days of delivery",
        "tags": ["refund", "money", "return", "policy", "delivery"],
    },
    {
        "id": "kb-102",
        "title": "Refunds over 100 EUR need a support lead's approval",
        "tags": ["refund", "approval", "amount", "lead"],
    },
    {
        "id": "kb-203",
        "title": "Damaged or missing items: photos speed up the claim",
        "tags": ["damaged", "broken", "missing", "item", "parcel"],
    },
    {
        "id": "kb-310",
        "title": "Export to CSV fails on large workspaces (known issue)",
        "tags": ["export", "csv", "crash", "error", "bug"],
    },
]


def kb_search(query: str, limit: int = 3) -> list[dict[str, Any]]:
    """Articles whose tags share words with ``query``, best match first."""
    words = {w.lower() for w in _WORD.findall(query)}
    scored = [(len(words & set(article["tags"])), article) for article in KNOWLEDGE_BASE]
    hits = sorted((pair for pair in scored if pair[0] > 0), key=lambda pair: -pair[0])
    return [{"id": a["id"], "title": a["title"], "score": s} for s, a in hits[:limit]]


def escalate(ticket: Mapping[str, Any], reason: str) -> dict[str, Any]:
    """Open a case for the ticket in the support-leads queue; returns the case and a holding reply."""
    ticket_id = str(ticket.get("id", "?"))
    return {
        "queue": "support-leads",
        "case": f"ESC-{ticket_id}",
        "ticket": ticket_id,
        "reason": reason,
        "reply": (
            f"Thank you for your patience. A member of our support team is now handling ticket "
            f"{ticket_id} personally and will get back to you within one business day."
        ),
    }


def send_email(to: str, subject: str, body: str) -> dict[str, Any]:
    """Pretend to send an email; returns the receipt a mail API would (nothing leaves the host)."""
    digest = hashlib.sha256(f"{to}\n{subject}\n{body}".encode()).hexdigest()[:12]
    return {
        "message_id": f"msg-{digest}",
        "to": to,
        "subject": subject,
        "chars": len(body),
        "status": "queued",
    }


# -- registration ----------------------------------------------------------------------------


def register(target: Registry) -> Registry:
    """Register every example tool on ``target`` and return it."""
    target.add_tool("text.keywords", keywords)
    target.add_tool("render.table", render_table)
    for name in SOURCE_LATENCY:
        target.add_tool(f"sources.{name}", make_source(name))
    target.add_tool("incident.aggregate", aggregate)
    target.add_tool("incident.summary", structured_summary)
    target.add_tool("kb.search", kb_search)
    target.add_tool("support.escalate", escalate)
    target.add_tool("email.send", send_email)
    return target


register(registry)

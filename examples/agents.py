"""Fake services for the example workflows, built on :mod:`trellis.testing`.

One :class:`~trellis.testing.AgentServer` serves, each under its own path prefix:

* the three agents of ``nlp_data_viz.yaml`` — ``nlp`` (entities from text), ``data`` (rows for
  entities) and ``viz`` (a Vega-Lite chart spec for rows);
* the two HTTP services of ``refund_triage.yaml`` — ``orders`` (``GET
  /orders/customers/{id}/orders``) and ``payments`` (``POST /payments/refunds``).

One :class:`~trellis.testing.LlmServer` answers the ``llm`` nodes of every example (ticket
classification, reply drafts, incident summaries).

Run them for ``examples/trellis.toml`` (``make run`` does this for you)::

    uv run python examples/agents.py                       # agents on :9100, LLM on :9101
    uv run python examples/agents.py --port 0 --llm-port 0 # any free ports, printed on stderr

Every fake keeps the fault controls of :mod:`trellis.testing`, also over HTTP, so a demo can
take an agent down while runs go on::

    curl -X POST localhost:9100/_control/nlp -d '{"status": 503}'     # NLP down: keywords fallback
    curl -X POST localhost:9100/_control/nlp/reset                    # back up
    curl -X POST localhost:9101/_control/llm -d '{"status": 500}'     # no model answers
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
import zlib
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import Any

from trellis.testing import AgentServer, Behaviour, Failure, LlmServer, RecordedRequest
from trellis.testing.llm import Reply, last_user_message

AGENT_PORT = 9100
"""Port of the fake agents and HTTP services in ``examples/trellis.toml``."""
LLM_PORT = 9101
"""Port of the fake OpenAI-compatible model server in ``examples/trellis.toml``."""

_STOP_AT_SENTENCE_START = frozenset({"A", "An", "The", "I", "We", "My", "Our", "In", "On", "At", "It"})
_CAPITALISED = re.compile(r"\b[A-Z][A-Za-z0-9&.-]*(?:\s+[A-Z][A-Za-z0-9&.-]*)*")


def _body(request: RecordedRequest) -> Mapping[str, Any]:
    return request.json if isinstance(request.json, Mapping) else {}


# -- nlp-data-viz agents -----------------------------------------------------------------------


def nlp_agent(request: RecordedRequest) -> dict[str, Any] | Failure:
    """``{text}`` → ``{entities: [names], language}``: runs of capitalised words, in order."""
    text = _body(request).get("text")
    if not isinstance(text, str):
        return Failure(422, message="nlp agent: input needs a 'text' string")
    entities: list[str] = []
    for match in _CAPITALISED.finditer(text):
        words = match.group().rstrip(".").split()
        while words and words[0] in _STOP_AT_SENTENCE_START:
            words.pop(0)
        name = " ".join(words)
        if name and name not in entities:
            entities.append(name)
    return {"entities": entities, "language": "en"}


def data_agent(request: RecordedRequest) -> dict[str, Any] | Failure:
    """``{entities}`` → ``{rows: [{entity, mentions, trend}]}``; the numbers derive from the names,
    so the same entities always give the same rows."""
    entities = _body(request).get("entities")
    if not isinstance(entities, list):
        return Failure(422, message="data agent: input needs an 'entities' list")
    rows = []
    for entity in entities:
        seed = zlib.crc32(str(entity).encode())
        rows.append(
            {"entity": str(entity), "mentions": 10 + seed % 990, "trend": round((seed % 200 - 100) / 100, 2)}
        )
    return {"rows": rows, "source": "fake-data"}


def viz_agent(request: RecordedRequest) -> dict[str, Any] | Failure:
    """``{rows, title}`` → ``{kind: "chart", spec}``: a Vega-Lite bar chart of the rows, the first
    text field (by name) along x, the first numeric one along y."""
    body = _body(request)
    rows = body.get("rows")
    if not isinstance(rows, list):
        return Failure(422, message="viz agent: input needs a 'rows' list")
    first = rows[0] if rows and isinstance(rows[0], Mapping) else {}
    fields = sorted(first.items())  # JSON objects are unordered: pick by name, not by position
    x = next((k for k, v in fields if isinstance(v, str)), "entity")
    y = next((k for k, v in fields if isinstance(v, int | float) and not isinstance(v, bool)), "value")
    spec = {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": str(body.get("title") or ""),
        "mark": "bar",
        "data": {"values": rows},
        "encoding": {
            "x": {"field": x, "type": "nominal", "sort": "-y"},
            "y": {"field": y, "type": "quantitative"},
        },
    }
    return {"kind": "chart", "spec": spec}


# -- refund-triage services --------------------------------------------------------------------

_ORDERS_PATH = re.compile(r"^/customers/([^/]+)/orders/?$")


def orders_service(request: RecordedRequest) -> dict[str, Any] | Failure:
    """``GET /customers/{id}/orders`` → ``{customer, orders: [{id, total, currency, status}]}``."""
    match = _ORDERS_PATH.match(request.path)
    if request.method != "GET" or match is None:
        return Failure(404, message=f"orders: no route {request.method} {request.path}")
    customer = match.group(1)
    seed = zlib.crc32(customer.encode())
    orders = [
        {"id": f"o-{seed % 9000 + 1000}", "total": 129.0, "currency": "EUR", "status": "delivered"},
        {"id": f"o-{seed % 9000 + 1001}", "total": 24.5, "currency": "EUR", "status": "delivered"},
    ]
    return {"customer": customer, "orders": orders}


def payments_service(request: RecordedRequest) -> dict[str, Any] | Failure:
    """``POST /refunds`` with ``{ticket, customer, amount, currency}`` → the accepted refund."""
    body = _body(request)
    if request.method != "POST" or request.path.rstrip("/") != "/refunds":
        return Failure(404, message=f"payments: no route {request.method} {request.path}")
    if not body.get("ticket") or not body.get("amount"):
        return Failure(422, message="payments: a refund needs 'ticket' and 'amount'")
    key = request.headers.get("idempotency-key") or str(body["ticket"])
    return {
        "refund_id": f"rf-{zlib.crc32(key.encode()):08x}",
        "status": "accepted",
        "ticket": body["ticket"],
        "amount": body["amount"],
        "currency": body.get("currency", "EUR"),
    }


RESPONDERS = {
    "nlp": nlp_agent,
    "data": data_agent,
    "viz": viz_agent,
    "orders": orders_service,
    "payments": payments_service,
}
"""Agent name → responder, as served by :func:`agent_server`."""


def agent_server(port: int = 0, behaviours: Mapping[str, Behaviour | None] | None = None) -> AgentServer:
    """An (unstarted) AgentServer with every fake of :data:`RESPONDERS`.

    Args:
        port: port on 127.0.0.1; ``0`` picks a free one.
        behaviours: initial faults by agent name, e.g. ``{"nlp": Behaviour(status=503)}``.
    """
    agents = {name: (behaviours or {}).get(name) for name in RESPONDERS}
    return AgentServer(agents, responders=RESPONDERS, port=port)


# -- the model ---------------------------------------------------------------------------------

_REFUND = re.compile(r"\b(refund|money back|reimburse|charged twice|return)\w*", re.IGNORECASE)
_BUG = re.compile(r"\b(bug|crash|error|fails?|broken|exception)\w*", re.IGNORECASE)


def llm_responder(request: dict[str, Any]) -> Reply:
    """What the fake model says to the examples' prompts (matched on their first words)."""
    prompt = last_user_message(request)
    if prompt.startswith("Label this ticket"):
        ticket = prompt.partition("Ticket:")[2]
        label = "refund" if _REFUND.search(ticket) else "bug" if _BUG.search(ticket) else "other"
        return {"label": label}
    if prompt.startswith("Draft a reply to this refund request"):
        return (
            "Hello, thank you for reaching out. We have checked your order, and your refund "
            "request is approved: you will see the money back on your card once the bank processes it."
        )
    if prompt.startswith("Draft a reply"):
        return (
            "Hello, thank you for getting in touch. We have passed your message to the right team "
            "and will follow up."
        )
    if prompt.startswith("Summarise this incident"):
        return (
            "Likely cause: a config change cut the database pool size, so requests queue for "
            "connections. Evidence: pool-exhausted errors, p99 latency up 12x. Next step: roll back "
            "the pool size change."
        )
    return f"echo: {prompt}"


def llm_server(port: int = 0, behaviour: Behaviour | None = None) -> LlmServer:
    """An (unstarted) fake model server answering with :func:`llm_responder`."""
    return LlmServer(llm_responder, model="trellis-fake", behaviour=behaviour, port=port)


# -- main --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the fakes until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description="Fake agents, services and model for the Trellis examples.")
    parser.add_argument("--port", type=int, default=AGENT_PORT, help=f"agents port (default {AGENT_PORT})")
    parser.add_argument("--llm-port", type=int, default=LLM_PORT, help=f"model port (default {LLM_PORT})")
    args = parser.parse_args(argv)

    done = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with agent_server(args.port) as agents, llm_server(args.llm_port) as llm:
            for name in RESPONDERS:
                print(f"{name:>9}: {agents.url(name)}", file=sys.stderr)
            print(f"{'llm':>9}: {llm.base_url}", file=sys.stderr, flush=True)
            while not done.wait(0.5):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m trellis.testing.llm``: serve a fake OpenAI-compatible LLM until SIGINT/SIGTERM.

Examples::

    python -m trellis.testing.llm --port 0 --print-port --reply "Hello." --reply "Goodbye."
    python -m trellis.testing.llm --rule "sentiment=positive" --rule "summar=A summary."
    python -m trellis.testing.llm --port 9200 --config llm.json

``llm.json`` (every key optional; ``behaviour`` takes the fields of ``POST /_control/llm``)::

    {"model": "fake", "api_key": "sk-test", "rules": {"sentiment": {"label": "positive"}},
     "default": "I don't know.", "behaviour": {"latency": 0.05}}

Without replies or rules the server echoes the last user message.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trellis.testing._behaviour import Behaviour
from trellis.testing._serving import serve_until_signalled
from trellis.testing.llm._responders import LlmResponder, Replies, Rules, echo
from trellis.testing.llm._server import LlmServer


def _responder(config: dict[str, Any]) -> LlmResponder:
    if config.get("replies") and config.get("rules"):
        raise ValueError("give replies or rules, not both")
    if config.get("replies"):
        return Replies(config["replies"])
    if config.get("rules"):
        return Rules(config["rules"], default=config.get("default", echo))
    return echo


def _server(args: argparse.Namespace) -> LlmServer:
    config: dict[str, Any] = json.loads(args.config.read_text()) if args.config else {}
    if args.reply:
        config["replies"] = args.reply
    if args.rule:
        pairs = [rule.partition("=") for rule in args.rule]
        if any(not sep for _, sep, _ in pairs):
            raise ValueError("--rule takes SUBSTRING=REPLY")
        config["rules"] = {needle: reply for needle, _, reply in pairs}
    return LlmServer(
        _responder(config),
        model=args.model or config.get("model", "trellis-fake"),
        api_key=args.api_key or config.get("api_key"),
        behaviour=Behaviour.from_json(config.get("behaviour") or {}),
        port=args.port,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trellis.testing.llm", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--model", help="model name reported when a request names none")
    parser.add_argument("--api-key", help="require 'Authorization: Bearer KEY'")
    parser.add_argument("--reply", action="append", default=[], help="a canned reply (repeatable, in order)")
    parser.add_argument("--rule", action="append", default=[], help="SUBSTRING=REPLY (repeatable)")
    parser.add_argument(
        "--config", type=Path, help="JSON file: model, api_key, replies|rules, default, behaviour"
    )
    parser.add_argument("--print-port", action="store_true", help="print the bound port on stdout")
    args = parser.parse_args(argv)
    try:
        server = _server(args)
    except (OSError, TypeError, ValueError) as exc:
        parser.error(str(exc))
    return serve_until_signalled(
        server,
        print_port=args.print_port,
        describe=lambda: f"fake LLM ({server.model}) at {server.base_url} (admin: /_control/llm)",
    )


if __name__ == "__main__":
    sys.exit(main())

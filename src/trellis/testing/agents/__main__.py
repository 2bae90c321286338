"""``python -m trellis.testing.agents``: serve fake agents until SIGINT/SIGTERM.

Examples::

    python -m trellis.testing.agents --port 0 --agents nlp,data,viz --print-port
    python -m trellis.testing.agents --port 9100 --config agents.json

``agents.json`` maps agent names to behaviour fields (the JSON accepted by ``POST /_control/{agent}``)::

    {"agents": {"nlp": {"latency": [0.05, 0.2]}, "data": {"error_rate": 0.1, "seed": 3}}}
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from trellis.testing._behaviour import Behaviour
from trellis.testing._serving import serve_until_signalled
from trellis.testing.agents._server import AgentServer


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trellis.testing.agents", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--agents", default="", help="comma-separated agent names, e.g. nlp,data,viz")
    parser.add_argument("--config", type=Path, help='JSON file: {"agents": {name: {behaviour fields}}}')
    parser.add_argument("--print-port", action="store_true", help="print the bound port on stdout")
    args = parser.parse_args(argv)

    behaviours: dict[str, Behaviour | None] = {}
    try:
        if args.config is not None:
            config = json.loads(args.config.read_text())
            for name, fields in config.get("agents", {}).items():
                behaviours[name] = Behaviour.from_json(fields or {})
        for name in filter(None, (n.strip() for n in args.agents.split(","))):
            behaviours.setdefault(name, None)
        if not behaviours:
            parser.error("no agents: pass --agents a,b,c or --config FILE")
        server = AgentServer(behaviours, port=args.port)
    except (OSError, TypeError, ValueError) as exc:
        parser.error(f"{args.config or 'agents'}: {exc}")
    return serve_until_signalled(
        server,
        print_port=args.print_port,
        describe=lambda: f"fake agents {', '.join(sorted(behaviours))} on {server.origin} (admin: /_control)",
    )


if __name__ == "__main__":
    sys.exit(main())

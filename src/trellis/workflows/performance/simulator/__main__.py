"""``python -m trellis.workflows.performance.simulator``: serve a simulated fleet until stopped.

Prints one JSON line ``{"server": ..., "instances": [{id, base_url, metrics_url}, ...]}`` once
every instance accepts connections, then serves until SIGINT / SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence
from typing import Any

from trellis.workflows.performance.collectors import ServerType
from trellis.workflows.performance.simulator._engine import Regression
from trellis.workflows.performance.simulator._fleet import SimulatedFleet


def _pairs(items: Sequence[str], what: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--{what}: expected KEY=VALUE, got {item!r}")
        try:
            result[key] = json.loads(raw)
        except json.JSONDecodeError:
            result[key] = raw
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trellis.workflows.performance.simulator",
        description="Serve SIMULATED vLLM / TGI / SGLang instances (metrics + admin API) on loopback.",
    )
    parser.add_argument("--instances", type=int, default=4, help="fleet size (default 4)")
    parser.add_argument("--server", choices=[s.value for s in ServerType], default="vllm")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument(
        "--port-base", type=int, default=8100, help="first port; 0 = ephemeral (default 8100)"
    )
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall second")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--config",
        nargs="*",
        default=[],
        metavar="KNOB=VALUE",
        help="launch configuration, e.g. max_num_seqs=64",
    )
    parser.add_argument(
        "--regression",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="inject a fault: latency_factor=2 error_rate=0.05 kv_capacity_factor=0.5 only_when_changed=true",
    )
    return parser


async def _serve(args: argparse.Namespace) -> None:
    fault = _pairs(args.regression, "regression")
    regression = Regression(**fault) if fault else None
    fleet = SimulatedFleet(
        args.server,
        instances=args.instances,
        host=args.host,
        port_base=args.port_base,
        config=_pairs(args.config, "config"),
        regression=regression,
        speed=args.speed,
        seed=args.seed,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with fleet:
        print(
            json.dumps({"server": fleet.server.value, "simulator": True, "instances": fleet.describe()}),
            flush=True,
        )
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except (ValueError, TypeError, OSError) as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


if __name__ == "__main__":
    main()

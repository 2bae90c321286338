"""A process killed with SIGKILL mid-run loses nothing that completed (DESIGN §5).

The workflow's tool appends one line per execution to a file outside Trellis, so executions are
counted by something the killed process cannot lie about.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from engine_support import yaml

TOOLS = """
import time
from pathlib import Path
from trellis.registry import registry

@registry.tool("mark")
def mark(node: str, log: str, seconds: float) -> str:
    with open(log, "a") as fh:
        fh.write(node + "\\n")
        fh.flush()
    time.sleep(seconds)
    return node
"""


def _definition(log: Path, seconds: float) -> str:
    nodes = "\n".join(
        f"  n{i}: {{type: tool, tool: mark, args: {{node: '\"n{i}\"', log: '\"{log}\"', seconds: {seconds}}}, "
        f"output: {{done: '[result]'}}{', next: n' + str(i + 1) if i < 9 else ''}}}"
        for i in range(10)
    )
    return yaml(f"name: ten\nstate: {{done: {{reducer: append}}}}\nstart: n0\nnodes:\n{nodes}\n")


def _trellis(tmp_path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trellis", *args],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TRELLIS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'trellis.db'}",
        "TRELLIS_TOOLS": str(tmp_path / "tools.py"),
    }


@pytest.mark.slow
def test_a_killed_run_resumes_without_redoing_completed_nodes(tmp_path: Path) -> None:
    log = tmp_path / "executions.log"
    (tmp_path / "tools.py").write_text(TOOLS)
    (tmp_path / "ten.yaml").write_text(_definition(log, 0.15))

    proc = subprocess.Popen(
        [sys.executable, "-m", "trellis", "run", str(tmp_path / "ten.yaml"), "--json"],
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= 5:
            break
        time.sleep(0.01)
    else:
        proc.kill()
        pytest.fail(f"the run never reached node 5: {proc.stderr.read() if proc.stderr else ''!r}")
    time.sleep(0.05)  # somewhere inside node 5's sleep
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    if proc.stderr is not None:
        proc.stderr.close()
    before_kill = Counter(log.read_text().split())

    listing = _trellis(tmp_path, "runs", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    (run,) = json.loads(listing.stdout)["runs"]
    assert run["status"] == "running"
    shown = json.loads(_trellis(tmp_path, "runs", "show", run["id"], "--json").stdout)
    completed = {n["node"] for n in shown["nodes"] if n["status"] == "succeeded"}

    resumed = _trellis(tmp_path, "runs", "resume", run["id"], "--json")
    assert resumed.returncode == 0, resumed.stderr
    document = json.loads(resumed.stdout)
    assert document["status"] == "succeeded"
    assert document["output"]["done"] == [f"n{i}" for i in range(10)]

    executions = Counter(log.read_text().split())
    assert set(executions) == {f"n{i}" for i in range(10)}
    assert completed, "some nodes had completed before the kill"
    for node in completed:
        assert executions[node] == 1, f"{node} completed before the kill but ran {executions[node]} times"
    in_flight = set(before_kill) - completed
    for node in in_flight:
        assert executions[node] <= 2, f"{node} was in flight and ran {executions[node]} times"
    for node in set(executions) - set(before_kill):
        assert executions[node] == 1


def _fanout_definition(log: Path) -> str:
    def mark(node: str, seconds: float, nxt: str = "") -> str:
        args = f"{{node: '\"{node}\"', log: '\"{log}\"', seconds: {seconds}}}"
        return f"{{id: {node}, type: tool, tool: mark, args: {args}, output: {{done: '[result]'}}{nxt}}}"

    return yaml(
        "name: fan\nstate: {done: {reducer: append}}\nstart: fan\nnodes:\n"
        "  fan:\n    type: parallel\n    branches:\n"
        f"      fast: [{mark('fast', 0.05)}]\n"
        f"      slow: [{mark('slow', 1.5)}]\n"
        f"      two: [{mark('m1', 0.05, ', next: m2')}, {mark('m2', 1.5)}]\n"
    )


@pytest.mark.slow
def test_a_killed_fan_out_keeps_its_finished_branches_and_steps(tmp_path: Path) -> None:
    """One-step branches run without checkpoints of their own: a finished one is kept by its
    parent's pending write, and a branch of two steps still keeps its finished first step."""
    log = tmp_path / "executions.log"
    (tmp_path / "tools.py").write_text(TOOLS)
    (tmp_path / "fan.yaml").write_text(_fanout_definition(log))
    proc = subprocess.Popen(
        [sys.executable, "-m", "trellis", "run", str(tmp_path / "fan.yaml"), "--json"],
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if log.exists() and {"fast", "slow", "m1", "m2"} <= set(log.read_text().split()):
            break
        time.sleep(0.01)
    else:
        proc.kill()
        pytest.fail(f"the branches never all started: {proc.stderr.read() if proc.stderr else ''!r}")
    time.sleep(0.2)  # fast and m1 are done and recorded; slow and m2 are inside their sleep
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    if proc.stderr is not None:
        proc.stderr.close()
    listing = json.loads(_trellis(tmp_path, "runs", "list", "--json").stdout)
    (run,) = listing["runs"]
    assert run["status"] == "running"

    resumed = _trellis(tmp_path, "runs", "resume", run["id"], "--json")
    assert resumed.returncode == 0, resumed.stderr
    document = json.loads(resumed.stdout)
    assert document["status"] == "succeeded", document
    assert sorted(document["output"]["done"]) == ["fast", "m1", "m2", "slow"]
    executions = Counter(log.read_text().split())
    assert executions["fast"] == 1, executions
    assert executions["m1"] == 1, executions
    assert executions["slow"] == 2, executions  # in flight at the kill: run again
    assert executions["m2"] == 2, executions

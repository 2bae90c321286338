"""Retries: which errors are retried, how long the waits are, and that the attempt count survives
a SIGKILL during a backoff.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine_support import event_types, open_engine, run_definition, yaml
from trellis.errors import (
    CircuitOpen,
    ConnectionFailed,
    ExpressionError,
    HttpError,
    RateLimited,
    TimeoutExceeded,
    ValidationError,
    WorkflowError,
)
from trellis.nodes._retry import RetryPlan
from trellis.testing import AgentServer, Behaviour, Failure

DEFAULT = RetryPlan(max_attempts=5)


class TestClassification:
    @pytest.mark.parametrize(
        ("error", "retried"),
        [
            (TimeoutExceeded("slow"), True),
            (ConnectionFailed("refused"), True),
            (RateLimited("429"), True),
            (HttpError("502", retryable=True), True),
            (HttpError("404", retryable=False), False),
            (ValidationError("bad"), False),
            (ExpressionError("bad"), False),
            (CircuitOpen("open"), False),
        ],
    )
    def test_transient_errors_are_retried_and_the_rest_are_not(
        self, error: WorkflowError, retried: bool
    ) -> None:
        assert DEFAULT.should_retry(error, 1) is retried

    def test_never_retryable_errors_stay_unretried_whatever_on_lists(self) -> None:
        everything = RetryPlan(max_attempts=5, on=frozenset({"*"}))
        assert not everything.should_retry(CircuitOpen("open"), 1)
        assert not everything.should_retry(ValidationError("bad"), 1)
        assert everything.should_retry(WorkflowError("custom"), 1)

    def test_max_attempts_counts_the_first_attempt(self) -> None:
        plan = RetryPlan(max_attempts=3)
        assert [plan.should_retry(TimeoutExceeded("x"), n) for n in (1, 2, 3)] == [True, True, False]


class TestDelays:
    def test_full_jitter_draws_within_zero_and_the_exponential_cap(self) -> None:
        plan = RetryPlan(max_attempts=10, initial_interval=1.0, backoff_rate=2.0, max_interval=10.0)
        rng = random.Random(7)
        for attempt, cap in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (9, 10.0)]:
            draws = [plan.delay(attempt, TimeoutExceeded("x"), rng) for _ in range(2000)]
            assert min(draws) >= 0.0
            assert max(draws) <= cap
            # spread over the whole range, not a fixed add-on: both ends are reached
            assert min(draws) < cap * 0.05
            assert max(draws) > cap * 0.95

    def test_without_jitter_the_delay_is_the_cap(self) -> None:
        plan = RetryPlan(
            max_attempts=5, initial_interval=0.5, backoff_rate=3.0, max_interval=4.0, jitter=False
        )
        assert [plan.delay(n, TimeoutExceeded("x")) for n in (1, 2, 3)] == [0.5, 1.5, 4.0]

    def test_retry_after_is_a_floor_of_the_delay(self) -> None:
        plan = RetryPlan(max_attempts=5, initial_interval=0.1)
        assert plan.delay(1, RateLimited("429", retry_after=7.5), random.Random(1)) == 7.5

    async def test_a_real_backoff_waits_and_retry_after_is_honoured(self, database_url: str) -> None:
        script = (Failure(503, retry_after=0.3), 500)
        with AgentServer(agents={"svc": Behaviour(script=script)}) as agents:
            async with open_engine(database_url) as engine:
                run = await run_definition(
                    engine,
                    f"""
                    name: timed
                    start: call
                    nodes:
                      call:
                        type: http
                        url: "{agents.url("svc", "/x")}"
                        retry: {{max_attempts: 3, initial_interval: 0.2, jitter: none}}
                    """,
                )
                assert run.status.value == "succeeded"
                calls = agents["svc"].calls
                assert len(calls) == 3
                first_gap, second_gap = calls[1].time - calls[0].time, calls[2].time - calls[1].time
                assert 0.3 <= first_gap < 2.0  # Retry-After (0.3 s) over the 0.2 s cap
                assert 0.4 <= second_gap < 2.0  # the cap doubled: 0.4 s
                events = [e for e in await engine.store.list_events(run.id) if e.type == "node.retrying"]
                assert [e.data["delay"] for e in events] == [0.3, 0.4]
                assert [e.data["error"]["error"] for e in events] == ["HttpError", "HttpError"]


TOOLS = """
from trellis.errors import ConnectionFailed
from trellis.nodes import NodeContext
from trellis.registry import registry

@registry.tool("flaky")
def flaky(log: str, succeed_at: int, ctx: NodeContext) -> int:
    with open(log, "a") as fh:
        fh.write(f"{ctx.attempt}\\n")
    if ctx.attempt < succeed_at:
        raise ConnectionFailed(f"attempt {ctx.attempt} could not connect")
    return ctx.attempt
"""


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TRELLIS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'trellis.db'}",
        "TRELLIS_TOOLS": str(tmp_path / "tools.py"),
    }


def _trellis(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trellis", *args],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
def test_a_run_killed_during_a_backoff_resumes_at_the_attempt_it_had_reached(tmp_path: Path) -> None:
    log = tmp_path / "attempts.log"
    (tmp_path / "tools.py").write_text(TOOLS)
    (tmp_path / "flow.yaml").write_text(
        yaml(
            f"""
            name: backoff
            state: {{attempt: {{type: integer}}}}
            start: call
            nodes:
              call:
                type: tool
                tool: flaky
                args: {{log: '"{log}"', succeed_at: 3}}
                retry: {{max_attempts: 4, initial_interval: 1.5, jitter: none}}
                output: {{attempt: result}}
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "trellis", "run", str(tmp_path / "flow.yaml"), "--json"],
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while not (log.exists() and log.read_text().splitlines()):
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the first attempt never ran: {proc.stderr.read() if proc.stderr else ''!r}")
        time.sleep(0.01)
    time.sleep(0.4)  # inside the 1.5 s backoff after attempt 1
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    if proc.stderr is not None:
        proc.stderr.close()
    assert log.read_text().split() == ["1"]

    listing = json.loads(_trellis(tmp_path, "runs", "list", "--json").stdout)
    (run,) = listing["runs"]
    shown = json.loads(_trellis(tmp_path, "runs", "show", run["id"], "--json").stdout)
    (node,) = shown["nodes"]
    assert (node["status"], node["attempt"]) == ("retrying", 1)
    assert node["next_attempt_at"] is not None

    resumed = _trellis(tmp_path, "runs", "resume", run["id"], "--json")
    assert resumed.returncode == 0, resumed.stderr
    document = json.loads(resumed.stdout)
    assert document["status"] == "succeeded"
    assert document["output"]["attempt"] == 3
    assert log.read_text().split() == ["1", "2", "3"]  # attempt 1 was not made again
    events = json.loads(_trellis(tmp_path, "runs", "events", run["id"], "--json").stdout)
    started = [e["attempt"] for e in events if e["type"] == "node.started"]
    assert started == [1, 2, 3]


async def test_event_helper_sees_retries(database_url: str) -> None:
    with AgentServer(agents={"svc": Behaviour(script=(500,))}) as agents:
        async with open_engine(database_url) as engine:
            run = await run_definition(
                engine,
                f"""
                name: once-more
                start: call
                nodes:
                  call: {{type: http, url: "{agents.url("svc", "/x")}", retry: {{max_attempts: 2, initial_interval: 0}}}}
                """,
            )
            assert await event_types(engine, run.id) == [
                "run.queued",
                "run.started",
                "node.started:call",
                "node.retrying:call",
                "node.started:call",
                "node.succeeded:call",
                "run.succeeded",
            ]

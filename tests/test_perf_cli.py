"""``trellis perf analyze URL``: findings and recommendations for one live (simulated) instance."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from trellis.cli import app


@pytest.fixture(scope="module")
def instance() -> Iterator[str]:
    """One simulated vLLM instance in its own process (ephemeral port, 40x simulated time)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trellis.workflows.performance.simulator",
            *("--instances", "1", "--server", "vllm", "--port-base", "0", "--speed", "40"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else "the simulator printed nothing"
        (described,) = json.loads(line)["instances"]
        yield str(described["base_url"])
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()


class TestPerfAnalyze:
    def test_json_holds_the_findings_with_evidence_and_the_ordered_plan(
        self, cli: CliRunner, instance: str
    ) -> None:
        result = cli.invoke(app, ["perf", "analyze", instance, "--window", "1", "--json"])
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert doc["server"] == "vllm"
        assert doc["url"] == instance + "/metrics"
        (finding,) = [f for f in doc["analysis"]["findings"] if f["rule"] == "queue-admission-capped"]
        assert {e["metric"] for e in finding["evidence"]} >= {"waiting_share", "kv_usage_mean"}
        assert all(e["window"]["scrapes"] == 5 for e in finding["evidence"])
        assert 0 <= doc["analysis"]["health"]["value"] <= 1
        steps = doc["plan"]["steps"]
        assert steps[0]["flag"] == "--max-num-seqs"
        # the current value is the one in force, read from the instance's admin endpoint
        assert doc["config"]["max_num_seqs"] == steps[0]["current"] == 48
        assert steps[0]["proposed"] > steps[0]["current"]
        assert doc["plan"]["changes"] == {s["knob"]: s["proposed"] for s in steps}

    def test_text_names_findings_evidence_and_recommendations(self, cli: CliRunner, instance: str) -> None:
        result = cli.invoke(
            app, ["perf", "analyze", instance + "/metrics", "--server", "vllm", "--window", "0.5"]
        )
        assert result.exit_code == 0, result.output
        assert "(vllm)" in result.stdout
        assert "[warning] queue-admission-capped" in result.stdout
        assert "waiting_share = 1" in result.stdout
        assert "1. --max-num-seqs" in result.stdout
        assert "health:" in result.stdout

    @pytest.mark.parametrize(
        "args",
        [
            ["not-a-url"],
            ["http://127.0.0.1:1", "--server", "triton"],
            ["http://127.0.0.1:1", "--window", "0"],
            ["http://127.0.0.1:1", "--scrapes", "1"],
        ],
    )
    def test_bad_input_exits_two(self, cli: CliRunner, args: list[str]) -> None:
        result = cli.invoke(app, ["perf", "analyze", *args])
        assert result.exit_code == 2, result.output

    def test_an_instance_that_cannot_be_scraped_exits_one_with_a_clear_message(
        self, cli: CliRunner, instance: str
    ) -> None:
        result = cli.invoke(app, ["perf", "analyze", "http://127.0.0.1:1", "--window", "0.1"])
        assert result.exit_code == 1
        assert "cannot scrape http://127.0.0.1:1/metrics" in result.output
        missing = cli.invoke(app, ["perf", "analyze", instance + "/nothing-here", "--window", "0.1"])
        assert missing.exit_code == 1
        assert "HTTP 404" in missing.output

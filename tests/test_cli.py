"""The ``trellis`` command line: output formats and exit codes (DESIGN §4)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine_support import yaml
from trellis.cli import app

GOOD = yaml(
    """
    name: greet
    input: {type: object, required: [name], properties: {name: {type: string}}}
    state: {name: {type: string}, greeting: {type: string}}
    output: {greeting: state.greeting}
    start: hello
    nodes:
      hello: {type: set, values: {greeting: '"hello " + state.name'}}
    """
)

BROKEN = yaml(
    """
    name: broken
    start: first
    nodes:
      first: {type: router, routes: [{when: 'state.x >', next: nowhere}]}
      orphan: {type: set, values: {a: 1}}
    """
)

GATED = yaml(
    """
    name: gated
    state: {ok: {type: boolean}}
    start: approve
    nodes:
      approve: {type: approval, title: "go?", timeout: {after: 1h, next: late}, output: {ok: result.approved}}
      late: {type: set, values: {ok: false}}
    """
)

FAILING = yaml(
    """
    name: failing
    start: stop
    nodes:
      stop: {type: fail, error: Nope, message: "it failed"}
    """
)


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("TRELLIS_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'trellis.db'}")
    monkeypatch.chdir(tmp_path)
    for name, text in {
        "good.yaml": GOOD,
        "broken.yaml": BROKEN,
        "gated.yaml": GATED,
        "failing.yaml": FAILING,
    }.items():
        (tmp_path / name).write_text(text)
    return CliRunner()


class TestValidate:
    def test_a_valid_definition_exits_zero(self, cli: CliRunner) -> None:
        result = cli.invoke(app, ["validate", "good.yaml"])
        assert result.exit_code == 0, result.output
        assert "ok" in result.output

    def test_every_problem_is_printed_as_file_line_col_path_code_message_and_exits_two(
        self, cli: CliRunner
    ) -> None:
        result = cli.invoke(app, ["validate", "broken.yaml"])
        assert result.exit_code == 2
        lines = [line for line in result.output.splitlines() if line.startswith("broken.yaml:")]
        codes = {line.split()[2] for line in lines}
        assert {"CEL_SYNTAX", "UNKNOWN_TARGET", "ROUTER_WITHOUT_DEFAULT", "UNREACHABLE_NODE"} <= codes
        unreachable = next(line for line in lines if "UNREACHABLE_NODE" in line)
        assert unreachable.startswith("broken.yaml:5:")
        assert " /nodes/orphan " in unreachable

    def test_json_output_lists_diagnostics_per_file(self, cli: CliRunner) -> None:
        result = cli.invoke(app, ["validate", "good.yaml", "broken.yaml", "--json"])
        assert result.exit_code == 2
        documents = json.loads(result.output)
        assert [d["ok"] for d in documents] == [True, False]
        assert {"code", "severity", "path", "message", "line", "col"} <= set(documents[1]["diagnostics"][0])

    def test_invalid_yaml_gets_the_same_treatment(self, cli: CliRunner, tmp_path: Path) -> None:
        (tmp_path / "bad.yaml").write_text("name: x\nnodes: [unclosed\n")
        result = cli.invoke(app, ["validate", "bad.yaml"])
        assert result.exit_code == 2
        assert "PARSE_ERROR" in result.output
        assert result.output.startswith("bad.yaml:")


class TestRun:
    def test_a_succeeding_run_prints_the_run_document_and_exits_zero(self, cli: CliRunner) -> None:
        result = cli.invoke(app, ["run", "good.yaml", "--input", '{"name": "ada"}', "--json"])
        assert result.exit_code == 0, result.output
        document = json.loads(result.output)
        assert document["status"] == "succeeded"
        assert document["output"] == {"greeting": "hello ada"}
        assert {"id", "workflow", "version", "input", "error", "created_at"} <= set(document)

    def test_input_from_a_file(self, cli: CliRunner, tmp_path: Path) -> None:
        (tmp_path / "in.json").write_text('{"name": "bob"}')
        result = cli.invoke(app, ["run", "good.yaml", "--input", "@in.json", "--json"])
        assert json.loads(result.output)["output"] == {"greeting": "hello bob"}

    def test_input_that_does_not_match_the_schema_exits_two_and_says_where(self, cli: CliRunner) -> None:
        result = cli.invoke(app, ["run", "good.yaml", "--input", '{"name": 5}', "--json"])
        assert result.exit_code == 2
        assert "/name" in result.output

    def test_malformed_json_input_exits_two(self, cli: CliRunner) -> None:
        result = cli.invoke(app, ["run", "good.yaml", "--input", "{nope"])
        assert result.exit_code == 2
        assert "not valid JSON" in result.output

    def test_an_invalid_definition_exits_two(self, cli: CliRunner) -> None:
        result = cli.invoke(app, ["run", "broken.yaml"])
        assert result.exit_code == 2

    def test_a_failing_run_exits_one(self, cli: CliRunner) -> None:
        result = cli.invoke(app, ["run", "failing.yaml", "--json"])
        assert result.exit_code == 1
        assert json.loads(result.output)["error"]["error"] == "Nope"

    def test_a_parked_run_exits_three_then_approve_finishes_it(self, cli: CliRunner) -> None:
        parked = cli.invoke(app, ["run", "gated.yaml", "--json"])
        assert parked.exit_code == 3
        run = json.loads(parked.output)
        assert run["waiting_for"]["kind"] == "approval"
        approved = cli.invoke(
            app, ["runs", "approve", run["id"], "--comment", "fine", "--as", "ada", "--json"]
        )
        assert approved.exit_code == 0, approved.output
        assert json.loads(approved.output)["output"] == {"ok": True}
        again = cli.invoke(app, ["runs", "approve", run["id"]])
        assert again.exit_code == 2
        assert "not waiting for an approval" in again.output

    def test_auto_approve_runs_straight_through(self, cli: CliRunner) -> None:
        result = cli.invoke(app, ["run", "gated.yaml", "--auto-approve", "--json"])
        assert result.exit_code == 0, result.output

    def test_detach_queues_without_running(self, cli: CliRunner) -> None:
        result = cli.invoke(app, ["run", "good.yaml", "--input", '{"name": "x"}', "--detach", "--json"])
        assert result.exit_code == 0
        assert json.loads(result.output)["status"] == "queued"

    def test_runs_list_show_events_and_history_speak_json(self, cli: CliRunner) -> None:
        run = json.loads(cli.invoke(app, ["run", "good.yaml", "--input", '{"name": "x"}', "--json"]).output)
        listing = json.loads(cli.invoke(app, ["runs", "list", "--json"]).output)
        assert [r["id"] for r in listing["runs"]] == [run["id"]]
        shown = json.loads(cli.invoke(app, ["runs", "show", run["id"], "--json"]).output)
        assert [n["node"] for n in shown["nodes"]] == ["hello"]
        events = json.loads(cli.invoke(app, ["runs", "events", run["id"], "--json"]).output)
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        history = json.loads(cli.invoke(app, ["runs", "history", run["id"], "--json"]).output)
        assert history[0]["values"] == {"name": "x", "greeting": "hello x"}
        missing = cli.invoke(app, ["runs", "show", "nope"])
        assert missing.exit_code == 2
        assert "no run with id 'nope'" in missing.output

    def test_step_mode_parks_before_each_node(self, cli: CliRunner) -> None:
        first = cli.invoke(app, ["run", "good.yaml", "--input", '{"name": "x"}', "--step", "--json"])
        assert first.exit_code == 3
        run = json.loads(first.output)
        assert run["waiting_for"] == {"kind": "step", "next": ["hello"]}
        done = cli.invoke(app, ["runs", "resume", run["id"], "--json"])
        assert done.exit_code == 0, done.output


class TestGraphAndSchema:
    def test_graph_prints_mermaid(self, cli: CliRunner) -> None:
        result = cli.invoke(app, ["graph", "gated.yaml"])
        assert result.exit_code == 0
        assert result.output.startswith("flowchart TD")
        assert "approve -.->|timeout| late" in result.output

    def test_graph_shows_default_value_catches_and_where_the_run_ends(self, cli: CliRunner) -> None:
        example = Path(__file__).resolve().parent.parent / "examples" / "nlp_data_viz.yaml"
        lines = cli.invoke(app, ["graph", str(example)]).output.splitlines()
        assert '    data -.->|"catch *: defaults"| viz' in lines  # catch without next: on to `next`
        assert '    nlp -.->|"catch *"| keywords' in lines
        assert "    __end__((end))" in lines
        assert {"    viz --> __end__", "    table --> __end__"} <= set(lines)

    def test_schema_prints_the_json_schema(self, cli: CliRunner) -> None:
        schema = json.loads(cli.invoke(app, ["schema"]).output)
        assert schema["$schema"].endswith("2020-12/schema")


def test_commands_that_only_read_the_database_load_neither_langgraph_nor_alembic(tmp_path: Path) -> None:
    """`runs list` and its kind open the store alone: the engine's imports cost them seconds."""
    env = {**os.environ, "TRELLIS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'trellis.db'}"}
    first = subprocess.run(  # creates and migrates the database
        [sys.executable, "-m", "trellis", "runs", "list", "--json"], env=env, capture_output=True, timeout=60
    )
    assert first.returncode == 0, first.stderr
    for command in (["runs", "list"], ["workflows", "list"], ["agents", "list"], ["triggers", "list"]):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "trellis", *command, "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in done.stderr.splitlines()}
        assert imported & {"langgraph", "langchain_core", "alembic", "trellis"} == {"trellis"}, command


@pytest.mark.slow
def test_a_run_cancelled_from_another_process_exits_four(tmp_path: Path) -> None:
    env = {**os.environ, "TRELLIS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'trellis.db'}"}
    (tmp_path / "slow.yaml").write_text(yaml("name: slow\nstart: w\nnodes:\n  w: {type: wait, for: 30s}\n"))
    runner = subprocess.Popen(
        [sys.executable, "-m", "trellis", "run", str(tmp_path / "slow.yaml"), "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run_id = None
    deadline = time.monotonic() + 60
    while run_id is None and time.monotonic() < deadline:
        listing = subprocess.run(
            [sys.executable, "-m", "trellis", "runs", "list", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        runs = json.loads(listing.stdout)["runs"] if listing.returncode == 0 else []
        run_id = runs[0]["id"] if runs and runs[0]["status"] == "waiting" else None
    assert run_id is not None
    cancel = subprocess.run(
        [sys.executable, "-m", "trellis", "runs", "cancel", run_id], env=env, capture_output=True, check=False
    )
    assert cancel.returncode == 0
    stdout, _ = runner.communicate(timeout=60)
    assert runner.returncode == 4
    assert json.loads(stdout)["status"] == "cancelled"

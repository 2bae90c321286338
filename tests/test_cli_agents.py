"""``trellis agents ...`` and ``trellis breakers ...``: the same documents as the REST API, exit codes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from trellis.cli import app
from trellis.config import Settings
from trellis.errors import ConnectionFailed
from trellis.registry import Registry
from trellis.resilience import BreakerPolicy
from trellis.runtime import Engine
from trellis.store import SystemEvent


class Trellis:
    """``trellis --database-url URL ...`` through Typer's runner."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.runner = CliRunner()

    def __call__(self, *args: str) -> Result:
        return self.runner.invoke(app, ["--database-url", self.database_url, *args])

    def json(self, *args: str) -> Any:
        result = self(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def engine(self) -> Any:
        return Engine.open(Settings(database_url=self.database_url), registry=Registry())

    def open_breaker(self, key: str) -> None:
        """Make ``key`` open for real: one failure with a threshold of one."""

        async def main() -> None:
            async with self.engine() as engine:
                admission, _ = await engine.breakers.admit(key, BreakerPolicy(failure_threshold=1))
                await engine.breakers.failed(admission, ConnectionFailed(f"{key}: refused"))

        asyncio.run(main())

    def system_events(self, type_prefix: str) -> list[SystemEvent]:
        async def main() -> list[SystemEvent]:
            async with self.engine() as engine:
                return await engine.system_events(type_prefix=type_prefix)

        return asyncio.run(main())


@pytest.fixture
def trellis(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Trellis:
    monkeypatch.chdir(tmp_path)
    return Trellis(database_url)


REGISTER_NLP = ("agents", "register", "nlp", "--url", "http://127.0.0.1:9100/nlp")


class TestRegister:
    def test_options_become_the_spec_and_json_has_the_rest_fields(self, trellis: Trellis) -> None:
        doc = trellis.json(
            *REGISTER_NLP,
            "--timeout",
            "2.5",
            "--no-health-path",
            "--auth-env",
            "NLP_TOKEN",
            "--breaker",
            '{"failure_threshold": 3, "recovery_seconds": 60}',
            "--retry",
            '{"max_attempts": 4}',
            "--description",
            "entities",
        )
        assert (doc["name"], doc["base_url"], doc["timeout_seconds"], doc["health_path"]) == (
            "nlp",
            "http://127.0.0.1:9100/nlp",
            2.5,
            None,
        )
        assert doc["auth"] == {"header": "Authorization", "scheme": "Bearer", "secret": "env:NLP_TOKEN"}
        assert (doc["breaker"]["failure_threshold"], doc["breaker"]["recovery_seconds"]) == (3, 60)
        assert doc["retry"]["max_attempts"] == 4
        assert (doc["enabled"], doc["healthy"], doc["revision"], doc["description"]) == (
            True,
            True,
            1,
            "entities",
        )
        assert trellis.json("agents", "show", "nlp") == doc
        assert [a["name"] for a in trellis.json("agents", "list")] == ["nlp"]

    def test_a_yaml_file_holds_name_and_spec_and_options_override_it(
        self, trellis: Trellis, tmp_path: Path
    ) -> None:
        (tmp_path / "viz.yaml").write_text(
            "name: viz\nbase_url: http://127.0.0.1:9300\nenabled: false\nbreaker: {failure_threshold: 5}\n"
        )
        doc = trellis.json("agents", "register", "--file", "viz.yaml", "--timeout", "7")
        assert (doc["name"], doc["enabled"], doc["timeout_seconds"], doc["breaker"]["failure_threshold"]) == (
            "viz",
            False,
            7,
            5,
        )

    def test_a_json_file_and_policies_from_files(self, trellis: Trellis, tmp_path: Path) -> None:
        (tmp_path / "data.json").write_text(json.dumps({"name": "data", "base_url": "http://127.0.0.1:9200"}))
        (tmp_path / "health.json").write_text('{"threshold": 0.8}')
        doc = trellis.json("agents", "register", "-f", "data.json", "--health", "@health.json", "--disabled")
        assert (doc["name"], doc["health"]["threshold"], doc["enabled"]) == ("data", 0.8, False)

    def test_a_taken_name_exits_two(self, trellis: Trellis) -> None:
        assert trellis(*REGISTER_NLP).exit_code == 0
        again = trellis(*REGISTER_NLP)
        assert again.exit_code == 2
        assert "'nlp' is already registered" in again.output

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (("agents", "register", "nlp", "--url", "ftp://x"), "/base_url"),
            ((*REGISTER_NLP, "--breaker", '{"failure_threshold": 0}'), "/breaker/failure_threshold"),
            ((*REGISTER_NLP, "--breaker", "{not json"), "--breaker is not valid JSON"),
            ((*REGISTER_NLP, "--retry", "@missing.json"), "cannot read missing.json"),
            (("agents", "register", "Bad Name", "--url", "http://x:1"), "agent name 'Bad Name' is invalid"),
            (("agents", "register", "nlp"), "--url is required"),
            (("agents", "register", "--url", "http://x:1"), "name the agent"),
            ((*REGISTER_NLP, "--auth-env", "A", "--auth-secret", "env:B"), "not both"),
            ((*REGISTER_NLP, "--auth-header", "X-Token"), "need --auth-env or --auth-secret"),
            (("agents", "register", "--file", "nowhere.yaml"), "cannot read nowhere.yaml"),
        ],
    )
    def test_invalid_input_exits_two_saying_what_is_wrong(
        self, trellis: Trellis, args: tuple[str, ...], message: str
    ) -> None:
        result = trellis(*args)
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split())
        assert trellis.json("agents", "list") == []

    def test_a_secret_in_clear_is_refused(self, trellis: Trellis) -> None:
        result = trellis(*REGISTER_NLP, "--auth-secret", "hunter2")
        assert result.exit_code == 2
        output = " ".join(result.output.split())
        assert "must be a secret reference, env:NAME or file:/path" in output
        assert "/auth/secret" in output
        assert trellis("agents", "show", "nlp").exit_code == 2


class TestChange:
    def test_update_replaces_the_fields_given_and_says_whether_anything_changed(
        self, trellis: Trellis
    ) -> None:
        trellis.json(*REGISTER_NLP, "--description", "entities")
        doc = trellis.json("agents", "update", "nlp", "--timeout", "9")
        assert (doc["changed"], doc["revision"], doc["timeout_seconds"], doc["description"]) == (
            True,
            2,
            9,
            "entities",
        )
        again = trellis.json("agents", "update", "nlp", "--timeout", "9")
        assert (again["changed"], again["revision"]) == (False, 2)

    def test_update_replace_resets_what_is_not_given(self, trellis: Trellis, tmp_path: Path) -> None:
        trellis.json(*REGISTER_NLP, "--description", "entities", "--timeout", "3")
        (tmp_path / "nlp.yaml").write_text("base_url: http://127.0.0.1:9999\n")
        doc = trellis.json("agents", "update", "nlp", "--file", "nlp.yaml", "--replace")
        assert (doc["base_url"], doc["timeout_seconds"], doc["description"]) == (
            "http://127.0.0.1:9999",
            30,
            None,
        )

    def test_a_document_shown_can_be_fed_back_unchanged(self, trellis: Trellis, tmp_path: Path) -> None:
        trellis.json(*REGISTER_NLP)
        (tmp_path / "nlp.json").write_text(trellis("agents", "show", "nlp", "--json").stdout)
        doc = trellis.json("agents", "update", "nlp", "--file", "nlp.json", "--replace")
        assert (doc["changed"], doc["revision"]) == (False, 1)

    def test_update_errors_exit_two(self, trellis: Trellis) -> None:
        assert trellis("agents", "update", "nope", "--timeout", "1").exit_code == 2
        trellis.json(*REGISTER_NLP)
        nothing = trellis("agents", "update", "nlp")
        assert nothing.exit_code == 2
        assert "nothing to change" in nothing.output
        clear = trellis("agents", "update", "nlp", "--auth-secret", "hunter2")
        assert clear.exit_code == 2
        assert "/auth/secret" in clear.output

    def test_disable_and_enable(self, trellis: Trellis) -> None:
        trellis.json(*REGISTER_NLP)
        assert trellis.json("agents", "disable", "nlp")["enabled"] is False
        assert trellis.json("agents", "show", "nlp")["enabled"] is False
        assert trellis.json("agents", "enable", "nlp")["enabled"] is True
        assert trellis("agents", "enable", "nope").exit_code == 2
        kinds = [e.type for e in trellis.system_events("agent.")]
        assert kinds == ["agent.registered", "agent.disabled", "agent.enabled"]

    def test_health_and_human_output(self, trellis: Trellis) -> None:
        trellis.json(*REGISTER_NLP)
        report = trellis.json("agents", "health", "nlp")
        assert (report["agent"], report["healthy"], report["samples"], report["breaker"]) == (
            "nlp",
            True,
            0,
            None,
        )
        assert "nlp healthy" in trellis("agents", "health", "nlp").output
        assert "nlp" in trellis("agents", "list").output
        assert "base_url: http://127.0.0.1:9100/nlp" in trellis("agents", "show", "nlp").output
        assert trellis("agents", "health", "nope").exit_code == 2


class TestBreakers:
    def test_list_show_and_reset_an_open_breaker(self, trellis: Trellis) -> None:
        assert trellis.json("breakers", "list") == []
        trellis.open_breaker("agent:nlp")
        listed = trellis.json("breakers", "list")
        assert [(b["key"], b["state"]) for b in listed] == [("agent:nlp", "open")]
        assert listed[0]["next_trial_at"] is not None
        assert trellis.json("breakers", "show", "agent:nlp") == listed[0]
        assert "agent:nlp" in trellis("breakers", "list").output

        reset = trellis.json("breakers", "reset", "agent:nlp", "--as", "alice")
        assert (reset["state"], reset["next_trial_at"]) == ("closed", None)
        closed = trellis.system_events("breaker.closed")
        assert [(e.subject, e.data["by"], e.data["previous"]) for e in closed] == [
            ("agent:nlp", "alice", "open")
        ]

    def test_reset_without_as_records_the_os_user(self, trellis: Trellis) -> None:
        trellis.open_breaker("http:127.0.0.1:9300")
        result = trellis("breakers", "reset", "http:127.0.0.1:9300")
        assert result.exit_code == 0, result.output
        assert "is closed" in result.output
        (closed,) = trellis.system_events("breaker.closed")
        assert str(closed.data["by"]).startswith("cli")

    def test_unknown_keys_exit_two(self, trellis: Trellis) -> None:
        for command in ("show", "reset"):
            result = trellis("breakers", command, "agent:nope")
            assert result.exit_code == 2, command
            assert "agent:nope" in result.output

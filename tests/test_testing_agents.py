"""The fake agent server: every behaviour, the admin API and the subprocess entry point, over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from threading import Thread
from typing import Any

import httpx
import pytest

from trellis.testing import AgentServer, Behaviour, Failure, FloatBetween, RecordedRequest


@pytest.fixture(scope="module")
def shared_server() -> Iterator[AgentServer]:
    with AgentServer(agents=["nlp", "data"]) as running:
        yield running


@pytest.fixture
def server(shared_server: AgentServer) -> AgentServer:
    """One server for the module (stopping costs ~0.1 s), reset before each test."""
    shared_server.reset()
    return shared_server


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as http:
        yield http


def invoke(client: httpx.Client, server: AgentServer, agent: str = "nlp", **body: Any) -> httpx.Response:
    return client.post(server.url(agent, "/invoke"), json=body)


class TestLifecycle:
    def test_start_returns_a_bound_loopback_port_that_accepts_connections(self) -> None:
        server = AgentServer(agents=["nlp"]).start()
        try:
            assert server.port > 0
            assert server.url("nlp") == f"http://127.0.0.1:{server.port}/nlp"
            with socket.create_connection(("127.0.0.1", server.port), timeout=1):
                pass
        finally:
            server.stop()

    def test_stop_closes_the_port_and_is_idempotent(self) -> None:
        server = AgentServer(agents=["nlp"]).start()
        port = server.port
        server.stop()
        server.stop()
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
        with pytest.raises(RuntimeError, match="not running"):
            server.port  # noqa: B018

    def test_a_port_in_use_fails_start_with_an_error(self, server: AgentServer) -> None:
        with pytest.raises(RuntimeError, match=f"failed to start on 127.0.0.1:{server.port}"):
            AgentServer(agents=["nlp"], port=server.port).start()

    def test_unknown_agents_answer_404_naming_the_known_ones(
        self, server: AgentServer, client: httpx.Client
    ) -> None:
        response = client.post(f"{server.origin}/nope/invoke", json={})
        assert response.status_code == 404
        assert response.json() == {"error": "unknown agent 'nope'", "agents": ["data", "nlp"]}

    def test_agent_names_are_checked(self, server: AgentServer) -> None:
        with pytest.raises(KeyError, match="nlpp"):
            server.url("nlpp")
        with pytest.raises(ValueError, match="reserved"):
            AgentServer(agents=["_control"])
        with pytest.raises(ValueError, match="already exists"):
            server.add("nlp")

    def test_agents_can_be_added_while_running(self, client: httpx.Client) -> None:
        with AgentServer(agents=["nlp"]) as server:
            server.add("viz", Behaviour(status=418))
            assert invoke(client, server, "viz").status_code == 418

    def test_reset_restores_every_agents_initial_behaviour(self, client: httpx.Client) -> None:
        agents = {"nlp": Behaviour(status=503), "data": None}
        with AgentServer(agents, responders={"data": lambda request: "initial"}) as server:
            server["nlp"].set(status=None)
            server["data"].set(status=500)
            server["data"].responder = lambda request: "replaced"
            invoke(client, server, "data")
            server.reset()
            assert [invoke(client, server, a).status_code for a in ("nlp", "data")] == [503, 200]
            assert server["data"].count == 1
            assert invoke(client, server, "data").json() == "initial"


class TestAnswers:
    def test_default_answer_echoes_agent_input_and_call_number(
        self, server: AgentServer, client: httpx.Client
    ) -> None:
        assert invoke(client, server, text="hi").json() == {
            "agent": "nlp",
            "path": "/invoke",
            "input": {"text": "hi"},
            "result": {"call": 1},
        }

    def test_bare_and_arbitrary_subpaths_and_methods_reach_the_agent(
        self, server: AgentServer, client: httpx.Client
    ) -> None:
        assert client.post(server.url("data"), json=[1]).json()["path"] == "/"
        assert client.put(server.url("data", "/tables/t1"), json={}).json()["path"] == "/tables/t1"
        assert client.get(server.url("data", "/rows")).json()["input"] is None
        assert [r.method for r in server["data"].calls] == ["POST", "PUT", "GET"]

    def test_responders_build_the_body_sync_or_async_and_may_fail(self, client: httpx.Client) -> None:
        async def slow_upper(request: RecordedRequest) -> dict[str, Any]:
            await asyncio.sleep(0.01)
            return {"upper": request.json["text"].upper()}

        responders = {
            "nlp": lambda request: {"len": len(request.json["text"])},
            "viz": slow_upper,
            "data": lambda request: Failure(409, message="conflict"),
        }
        with AgentServer(agents=["nlp", "viz", "data"], responders=responders) as server:
            assert invoke(client, server, text="abc").json() == {"len": 3}
            assert invoke(client, server, "viz", text="abc").json() == {"upper": "ABC"}
            refused = invoke(client, server, "data")
            assert (refused.status_code, refused.json()["error"]) == (409, "conflict")

    def test_a_raising_responder_answers_500_saying_why(self, client: httpx.Client) -> None:
        with AgentServer(agents=["nlp"], responders={"nlp": lambda request: 1 // 0}) as server:
            response = invoke(client, server)
        assert response.status_code == 500
        assert response.json()["error"].startswith("responder raised ZeroDivisionError: ")

    def test_a_fixed_reply_replaces_the_body(self, server: AgentServer, client: httpx.Client) -> None:
        server["nlp"].set(reply={"sentiment": "positive"})
        assert invoke(client, server).json() == {"sentiment": "positive"}


class TestLatency:
    def test_fixed_latency_delays_every_answer(self, server: AgentServer, client: httpx.Client) -> None:
        server["nlp"].set(latency=0.15)
        started = time.monotonic()
        assert invoke(client, server).status_code == 200
        assert time.monotonic() - started == FloatBetween(0.15, 0.6)

    def test_a_latency_range_is_drawn_from_the_seeded_generator(
        self, server: AgentServer, client: httpx.Client
    ) -> None:
        server["nlp"].set(latency=(0.02, 0.12), seed=5)
        draws = random.Random(5)
        for _ in range(3):
            expected = draws.uniform(0.02, 0.12)
            started = time.monotonic()
            invoke(client, server)
            assert time.monotonic() - started == FloatBetween(expected, expected + 0.3)

    def test_invalid_latency_is_refused(self) -> None:
        with pytest.raises(ValueError, match="latency"):
            Behaviour(latency=(0.5, 0.1))


class TestErrorRate:
    def statuses(self, client: httpx.Client, server: AgentServer, n: int) -> list[int]:
        return [invoke(client, server).status_code for _ in range(n)]

    def test_a_seed_gives_a_reproducible_pattern_of_500s(self, client: httpx.Client) -> None:
        draws = random.Random(42)
        expected = [500 if draws.random() < 0.5 else 200 for _ in range(12)]
        for _ in range(2):
            with AgentServer(agents={"nlp": Behaviour(error_rate=0.5, seed=42)}) as server:
                assert self.statuses(client, server, 12) == expected
        assert set(expected) == {200, 500}

    def test_reseeding_restarts_the_pattern(self, server: AgentServer, client: httpx.Client) -> None:
        server["nlp"].set(error_rate=0.5, seed=7)
        first = self.statuses(client, server, 8)
        server["nlp"].set(seed=7)
        assert self.statuses(client, server, 8) == first

    def test_rates_zero_and_one_are_never_and_always(self, server: AgentServer, client: httpx.Client) -> None:
        assert set(self.statuses(client, server, 5)) == {200}
        server["nlp"].set(error_rate=1.0)
        assert set(self.statuses(client, server, 5)) == {500}


class TestStatus:
    @pytest.mark.parametrize(("retry_after", "header"), [(2, "2"), (0.5, "0.5"), (3.0, "3")])
    def test_429_and_503_carry_retry_after(
        self, server: AgentServer, client: httpx.Client, retry_after: float, header: str
    ) -> None:
        for status in (429, 503):
            server["nlp"].set(status=status, retry_after=retry_after)
            response = invoke(client, server)
            assert (response.status_code, response.headers["retry-after"]) == (status, header)
            assert response.json() == {"error": "injected fault", "status": status, "agent": "nlp"}

    def test_other_statuses_carry_no_retry_after(self, server: AgentServer, client: httpx.Client) -> None:
        server["nlp"].set(status=404, retry_after=2)
        response = invoke(client, server)
        assert response.status_code == 404
        assert "retry-after" not in response.headers

    def test_clearing_the_status_restores_normal_answers(
        self, server: AgentServer, client: httpx.Client
    ) -> None:
        server["nlp"].set(status=503)
        server["nlp"].set(status=None)
        assert invoke(client, server).status_code == 200


class TestHang:
    def test_the_client_timeout_fires_and_the_server_still_stops_quickly(self) -> None:
        server = AgentServer(agents={"nlp": Behaviour(hang=True)}).start()
        try:
            with httpx.Client(timeout=0.2) as client, pytest.raises(httpx.ReadTimeout):
                invoke(client, server)
            assert server["nlp"].calls[0].outcome == "hang"
        finally:
            started = time.monotonic()
            server.stop()
        assert time.monotonic() - started < 1.0

    async def test_stopping_releases_a_request_whose_client_still_waits(self) -> None:
        server = AgentServer(agents={"nlp": Behaviour(hang=True)}).start()
        async with httpx.AsyncClient(timeout=10.0) as client:
            waiting = asyncio.create_task(client.post(server.url("nlp", "/invoke"), json={}))
            await server["nlp"].wait_for_calls_async(1)
            started = time.monotonic()
            await asyncio.to_thread(server.stop)
            assert time.monotonic() - started < 1.0
            response = await asyncio.wait_for(waiting, 2.0)
        assert response.status_code == 503

    def test_turning_hang_off_answers_the_hanging_requests(self, server: AgentServer) -> None:
        server["nlp"].set(hang=True)
        with httpx.Client(timeout=5.0) as client:
            pending = []

            def call() -> None:
                pending.append(invoke(client, server).status_code)

            caller = Thread(target=call)
            caller.start()
            server["nlp"].wait_for_calls(1)
            server["nlp"].set(hang=False)
            caller.join(2.0)
        assert pending == [200]


class TestMalformed:
    def test_invalid_json_is_served_as_json(self, server: AgentServer, client: httpx.Client) -> None:
        server["nlp"].set(malformed="invalid_json")
        response = invoke(client, server)
        assert (response.status_code, response.headers["content-type"]) == (200, "application/json")
        with pytest.raises(json.JSONDecodeError):
            response.json()

    def test_wrong_shape_is_valid_json_without_the_expected_fields(
        self, server: AgentServer, client: httpx.Client
    ) -> None:
        server["nlp"].set(malformed="wrong_shape")
        assert invoke(client, server).json() == {"unexpected": "shape", "agent": "nlp"}


class TestScript:
    def test_steps_play_in_order_then_the_behaviour_applies(
        self, server: AgentServer, client: httpx.Client
    ) -> None:
        nlp = server["nlp"]
        nlp.set(script=["error", "error", "ok"], status=503)
        assert [invoke(client, server).status_code for _ in range(4)] == [500, 500, 200, 503]
        assert nlp.remaining_script == ()
        assert [r.outcome for r in nlp.calls] == ["error", "error", "ok", "error"]

    def test_steps_may_be_statuses_failures_and_malformed_bodies(
        self, server: AgentServer, client: httpx.Client
    ) -> None:
        server["nlp"].set(script=[429, Failure(502, retry_after=1), "wrong_shape"], retry_after=0.1)
        first, second, third = (invoke(client, server) for _ in range(3))
        assert (first.status_code, first.headers["retry-after"]) == (429, "0.1")
        assert (second.status_code, second.headers["retry-after"]) == (502, "1")
        assert third.json()["unexpected"] == "shape"

    def test_unknown_steps_are_refused(self) -> None:
        with pytest.raises(ValueError, match="unknown script step 'explode'"):
            Behaviour(script=("explode",))  # type: ignore[arg-type]


class TestHealth:
    def test_health_follows_the_flag_and_is_not_a_call(
        self, server: AgentServer, client: httpx.Client
    ) -> None:
        assert client.get(server.url("nlp", "/health")).json() == {"status": "ok", "agent": "nlp"}
        server["nlp"].set(healthy=False, status=500)
        response = client.get(server.url("nlp", "/health"))
        assert (response.status_code, response.json()["status"]) == (503, "unavailable")
        assert server["nlp"].count == 0
        assert [(r.path, r.status) for r in server["nlp"].requests] == [("/health", 200), ("/health", 503)]


class TestRecording:
    def test_every_call_is_recorded_with_method_path_body_headers_and_time(
        self, server: AgentServer, client: httpx.Client
    ) -> None:
        before = time.monotonic()
        client.post(server.url("nlp", "/invoke"), json={"q": 1}, headers={"X-Run": "r1"})
        [call] = server["nlp"].wait_for_calls(1)
        assert (call.method, call.path, call.json, call.body) == ("POST", "/invoke", {"q": 1}, b'{"q":1}')
        assert call.headers["x-run"] == "r1"
        assert before <= call.time <= time.monotonic()
        assert server["data"].calls == []

    def test_intervals_show_the_retry_timing_a_client_used(
        self, server: AgentServer, client: httpx.Client
    ) -> None:
        server["nlp"].set(script=["error", "error", "ok"])
        for backoff in (0.05, 0.1, 0.0):
            if invoke(client, server).status_code == 200:
                break
            time.sleep(backoff)
        first, second = server["nlp"].intervals()
        assert first == FloatBetween(0.05, 0.3)
        assert second == FloatBetween(0.1, 0.35)

    def test_waiting_for_calls_is_bounded(self, server: AgentServer) -> None:
        with pytest.raises(TimeoutError, match=r"0 of 1 calls arrived within 0\.05s"):
            server["nlp"].wait_for_calls(1, timeout=0.05)

    async def test_waiting_asynchronously_is_bounded(self, server: AgentServer) -> None:
        with pytest.raises(TimeoutError, match="nlp: 0 of 2"):
            await server["nlp"].wait_for_calls_async(2, timeout=0.05)

    def test_reset_forgets_calls_and_restores_defaults(
        self, server: AgentServer, client: httpx.Client
    ) -> None:
        server["nlp"].set(status=500)
        invoke(client, server)
        server["nlp"].reset()
        assert (server["nlp"].count, server["nlp"].behaviour) == (0, Behaviour())
        assert invoke(client, server).json()["result"] == {"call": 1}


class TestControlOverHttp:
    def test_post_changes_behaviour_and_get_shows_calls(
        self, server: AgentServer, client: httpx.Client
    ) -> None:
        control = f"{server.origin}/_control/nlp"
        changed = client.post(control, json={"status": 503, "retry_after": 1, "script": [{"status": 429}]})
        assert changed.json()["behaviour"]["status"] == 503
        assert [invoke(client, server).status_code for _ in range(2)] == [429, 503]
        state = client.get(control).json()
        assert (state["count"], state["remaining_script"]) == (2, [])
        assert [r["status"] for r in state["requests"]] == [429, 503]
        assert server["nlp"].behaviour.script == (Failure(429),)

    def test_invalid_fields_answer_400_and_change_nothing(
        self, server: AgentServer, client: httpx.Client
    ) -> None:
        control = f"{server.origin}/_control/nlp"
        assert client.post(control, json={"latency": 0.1, "colour": "red"}).status_code == 400
        assert client.post(control, json={"error_rate": 2}).json() == {
            "error": "error_rate must be within 0..1, got 2"
        }
        assert client.post(control, content=b"[1]").status_code == 400
        assert server["nlp"].behaviour == Behaviour()

    def test_reset_and_listing(self, server: AgentServer, client: httpx.Client) -> None:
        server["data"].set(status=500)
        invoke(client, server, "data")
        reset = client.post(f"{server.origin}/_control/data/reset", json={"latency": 0.01})
        assert (reset.json()["count"], reset.json()["behaviour"]["latency"]) == (0, 0.01)
        server["data"].set(status=500)
        restored = client.post(f"{server.origin}/_control/data/reset")
        assert restored.json()["behaviour"] == Behaviour().to_json()
        assert sorted(client.get(f"{server.origin}/_control").json()) == ["data", "nlp"]
        assert client.get(f"{server.origin}/_control/nope").status_code == 404


@contextlib.contextmanager
def spawned(*args: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Run ``python -m <args> --print-port``; yield the process and the port it printed."""
    command = [sys.executable, "-m", *args, "--print-port"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], 15.0)
            assert ready, "the server printed no port within 15 s"
            yield process, int(process.stdout.readline())
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.communicate(timeout=5.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


class TestSubprocess:
    def test_prints_its_port_serves_obeys_control_and_exits_cleanly_on_sigterm(self, tmp_path: Path) -> None:
        config = tmp_path / "agents.json"
        config.write_text(json.dumps({"agents": {"viz": {"status": 503, "retry_after": 1}}}))
        module = ("trellis.testing.agents", "--port", "0", "--agents", "nlp,data", "--config", str(config))
        with spawned(*module) as (process, port), httpx.Client(timeout=5.0) as client:
            origin = f"http://127.0.0.1:{port}"
            assert client.post(f"{origin}/nlp/invoke", json={"a": 1}).json()["input"] == {"a": 1}
            assert client.post(f"{origin}/viz").headers["retry-after"] == "1"
            client.post(f"{origin}/_control/data", json={"status": 429})
            assert client.post(f"{origin}/data/invoke").status_code == 429
            assert client.get(f"{origin}/_control/nlp").json()["count"] == 1
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=5.0) == 0

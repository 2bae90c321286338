"""The fake OpenAI-compatible LLM server: response format, tokens, responders, JSON mode, faults."""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from trellis.testing import (
    AnyInt,
    AnyStr,
    Behaviour,
    Failure,
    LlmServer,
    Replies,
    Rules,
)
from trellis.testing.llm import count_tokens, last_user_message


@pytest.fixture(scope="module")
def shared_llm() -> Iterator[LlmServer]:
    with LlmServer() as running:
        yield running


@pytest.fixture
def llm(shared_llm: LlmServer) -> LlmServer:
    """One server for the module, reset (echo responder, no faults) before each test."""
    shared_llm.reset()
    return shared_llm


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as http:
        yield http


def chat(client: httpx.Client, llm: LlmServer, text: str = "hello", **extra: Any) -> httpx.Response:
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": text}], **extra}
    return client.post(f"{llm.base_url}/chat/completions", json=body)


def content(response: httpx.Response) -> str:
    text = response.json()["choices"][0]["message"]["content"]
    assert isinstance(text, str)
    return text


class TestCompletionFormat:
    def test_the_answer_has_the_openai_chat_completion_fields(
        self, llm: LlmServer, client: httpx.Client
    ) -> None:
        response = chat(client, llm, "What is up")
        assert response.status_code == 200
        assert response.json() == {
            "id": AnyStr("chatcmpl-"),
            "object": "chat.completion",
            "created": AnyInt(min=int(time.time()) - 5),
            "model": "gpt-test",
            "system_fingerprint": "trellis-testing",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "echo: What is up", "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
        }

    def test_prompt_tokens_count_words_of_every_message_and_content_part(
        self, llm: LlmServer, client: httpx.Client
    ) -> None:
        messages = [
            {"role": "system", "content": "You are terse."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "two words"}, {"type": "text", "text": "x"}],
            },
        ]
        llm.responder = Replies(["one two three"])
        response = client.post(f"{llm.base_url}/chat/completions", json={"messages": messages})
        assert response.json()["usage"] == {"prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9}
        assert response.json()["model"] == "trellis-fake"
        assert last_user_message({"messages": messages}) == "two words x"

    def test_max_tokens_truncates_with_finish_reason_length(
        self, llm: LlmServer, client: httpx.Client
    ) -> None:
        llm.responder = Replies(["a b c d e"])
        response = chat(client, llm, max_tokens=2)
        assert (content(response), response.json()["choices"][0]["finish_reason"]) == ("a b", "length")
        assert response.json()["usage"]["completion_tokens"] == 2

    def test_models_and_health_endpoints(self, llm: LlmServer, client: httpx.Client) -> None:
        assert client.get(f"{llm.base_url}/models").json()["data"][0]["id"] == "trellis-fake"
        assert client.get(f"{llm.origin}/health").status_code == 200
        llm.set(healthy=False)
        assert client.get(f"{llm.origin}/health").status_code == 503
        assert llm.count == 0

    def test_requests_without_messages_answer_400_in_openai_error_form(
        self, llm: LlmServer, client: httpx.Client
    ) -> None:
        response = client.post(f"{llm.base_url}/chat/completions", json={"model": "m"})
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"


class TestStreaming:
    def test_stream_sends_chunks_that_add_up_then_usage_and_done(
        self, llm: LlmServer, client: httpx.Client
    ) -> None:
        llm.responder = Replies(["Hello  there,\nfriend"])
        response = chat(client, llm, stream=True, stream_options={"include_usage": True})
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
        assert frames[-1] == "[DONE]"
        chunks = [json.loads(frame) for frame in frames[:-1]]
        assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        assert text == "Hello  there,\nfriend"
        assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
        assert chunks[-1]["usage"] == {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}


class TestResponders:
    def test_replies_play_in_order_and_the_last_repeats(self, llm: LlmServer, client: httpx.Client) -> None:
        llm.responder = Replies(["first", "second"])
        assert [content(chat(client, llm)) for _ in range(3)] == ["first", "second", "second"]

    def test_rules_match_substrings_of_the_last_user_message(
        self, llm: LlmServer, client: httpx.Client
    ) -> None:
        llm.responder = Rules({"weather": "Sunny.", "capital": "Paris."}, default="No idea.")
        assert content(chat(client, llm, "capital of France?")) == "Paris."
        assert content(chat(client, llm, "the weather and the capital")) == "Sunny."
        assert content(chat(client, llm, "something else")) == "No idea."

    def test_callables_see_the_request_and_may_be_async(self, llm: LlmServer, client: httpx.Client) -> None:
        async def count_messages(request: dict[str, Any]) -> str:
            await asyncio.sleep(0)
            return f"{len(request['messages'])} message(s) for {request['model']}"

        llm.responder = count_messages
        assert content(chat(client, llm)) == "1 message(s) for gpt-test"

    def test_a_raising_responder_answers_500(self, llm: LlmServer, client: httpx.Client) -> None:
        def broken(request: dict[str, Any]) -> str:
            return str(request["missing"])

        llm.responder = Rules({}, default=broken)
        response = chat(client, llm)
        assert response.status_code == 500
        assert response.json()["error"] == {
            "message": "responder raised KeyError: 'missing'",
            "type": "server_error",
            "param": None,
            "code": None,
        }

    def test_reset_restores_the_initial_responder(self, llm: LlmServer, client: httpx.Client) -> None:
        llm.responder = Replies(["scripted"])
        llm.reset()
        assert content(chat(client, llm, "hi")) == "echo: hi"

    def test_a_fixed_reply_set_over_http_overrides_the_responder(
        self, llm: LlmServer, client: httpx.Client
    ) -> None:
        client.post(f"{llm.origin}/_control/llm", json={"reply": "Fixed."})
        assert content(chat(client, llm)) == "Fixed."


class TestJsonMode:
    @pytest.mark.parametrize(
        "response_format",
        [{"type": "json_object"}, {"type": "json_schema", "json_schema": {"name": "s", "schema": {}}}],
    )
    def test_scripted_json_comes_back_as_json_text(
        self, llm: LlmServer, client: httpx.Client, response_format: dict[str, Any]
    ) -> None:
        llm.responder = Rules({"sentiment": {"label": "positive", "score": 0.9}})
        response = chat(client, llm, "sentiment of: great", response_format=response_format)
        assert json.loads(content(response)) == {"label": "positive", "score": 0.9}
        assert response.json()["usage"]["completion_tokens"] == count_tokens(content(response))

    def test_scripted_json_text_is_returned_verbatim(self, llm: LlmServer, client: httpx.Client) -> None:
        llm.responder = Replies(['{"ok": true}'])
        assert content(chat(client, llm, response_format={"type": "json_object"})) == '{"ok": true}'

    def test_the_default_echo_answers_json_in_json_mode(self, llm: LlmServer, client: httpx.Client) -> None:
        reply = content(chat(client, llm, "hi", response_format={"type": "json_object"}))
        assert json.loads(reply) == {"echo": "hi"}


class TestFaults:
    def test_429_with_retry_after_in_openai_error_form(self, llm: LlmServer, client: httpx.Client) -> None:
        llm.set(status=429, retry_after=1)
        response = chat(client, llm)
        assert (response.status_code, response.headers["retry-after"]) == (429, "1")
        assert response.json()["error"]["type"] == "rate_limit_error"

    def test_scripted_failures_then_success(self, llm: LlmServer, client: httpx.Client) -> None:
        llm.set(script=[500, "error", "ok"])
        assert [chat(client, llm).status_code for _ in range(3)] == [500, 500, 200]
        assert [r.outcome for r in llm.calls] == ["error", "error", "ok"]

    def test_a_reply_may_be_a_failure(self, llm: LlmServer, client: httpx.Client) -> None:
        llm.responder = Replies([Failure(503, retry_after=0.2, message="overloaded"), "fine"])
        failed = chat(client, llm)
        assert (failed.status_code, failed.headers["retry-after"]) == (503, "0.2")
        assert failed.json()["error"]["message"] == "overloaded"
        assert content(chat(client, llm)) == "fine"

    def test_malformed_bodies(self, llm: LlmServer, client: httpx.Client) -> None:
        llm.set(script=["invalid_json", "wrong_shape"])
        with pytest.raises(json.JSONDecodeError):
            chat(client, llm).json()
        assert chat(client, llm).json()["choices"] == []

    def test_a_hang_times_the_client_out_and_stopping_stays_quick(self) -> None:
        llm = LlmServer(behaviour=Behaviour(hang=True)).start()
        try:
            with httpx.Client(timeout=0.2) as client, pytest.raises(httpx.ReadTimeout):
                chat(client, llm)
        finally:
            started = time.monotonic()
            llm.stop()
        assert time.monotonic() - started < 1.0

    def test_latency_delays_the_answer(self, llm: LlmServer, client: httpx.Client) -> None:
        llm.set(latency=0.1)
        started = time.monotonic()
        chat(client, llm)
        assert time.monotonic() - started >= 0.1


class TestApiKeys:
    def test_the_authorization_header_is_recorded_and_checked(self, client: httpx.Client) -> None:
        with LlmServer(api_key="sk-test") as llm:
            anonymous = chat(client, llm)
            body = {"messages": [{"role": "user", "content": "hi"}]}
            headers = {"Authorization": "Bearer sk-test"}
            signed = client.post(f"{llm.base_url}/chat/completions", json=body, headers=headers)
        assert (anonymous.status_code, anonymous.json()["error"]["type"]) == (401, "authentication_error")
        assert signed.status_code == 200
        assert [c.headers.get("authorization") for c in llm.calls] == [None, "Bearer sk-test"]


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
    def test_prints_its_port_and_serves_rules_and_control(self, client: httpx.Client) -> None:
        args = ("trellis.testing.llm", "--port", "0", "--rule", "capital=Paris.", "--model", "fake-1")
        with spawned(*args) as (process, port):
            llm_url = f"http://127.0.0.1:{port}/v1/chat/completions"
            body = {"messages": [{"role": "user", "content": "the capital?"}]}
            answer = client.post(llm_url, json=body).json()
            assert (answer["model"], answer["choices"][0]["message"]["content"]) == ("fake-1", "Paris.")
            client.post(f"http://127.0.0.1:{port}/_control/llm", json={"status": 429, "retry_after": 3})
            limited = client.post(llm_url, json=body)
            assert (limited.status_code, limited.headers["retry-after"]) == (429, "3")
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=5.0) == 0

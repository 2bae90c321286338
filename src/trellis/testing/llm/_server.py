"""The fake OpenAI-compatible LLM server: ``POST /v1/chat/completions`` with injectable faults.

Answers in the chat-completions format (``stream: true`` too, as ``chat.completion.chunk``
server-sent events ending in ``data: [DONE]``), counts tokens as whitespace words, truncates to
``max_tokens`` with ``finish_reason: "length"``, and fails like the agent server does (same
:class:`~trellis.testing.Behaviour`): the server *is* its one endpoint, named ``"llm"`` in the
admin API (``POST /_control/llm``).
"""

from __future__ import annotations

import inspect
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from trellis.testing._behaviour import Behaviour, Decision, Endpoint, Failure, RecordedRequest
from trellis.testing._serving import ServerThread, answer, control_routes, failure_response
from trellis.testing.llm._responders import (
    LlmResponder,
    Reply,
    content_text,
    count_tokens,
    echo,
    prompt_tokens,
)

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def error_body(failure: Failure) -> dict[str, Any]:
    """An OpenAI-style error document."""
    kind = _ERROR_TYPES.get(
        failure.status, "server_error" if failure.status >= 500 else "invalid_request_error"
    )
    return {"error": {"message": failure.message, "type": kind, "param": None, "code": None}}


class LlmServer(Endpoint, ServerThread):
    """A fake OpenAI-compatible chat-completions server on 127.0.0.1.

    Args:
        responder: what to answer (see :mod:`trellis.testing.llm`): a callable
            ``(request_json) -> str | dict | list | Failure``, or :class:`Replies`, or
            :class:`Rules`; default :func:`echo`. Settable later as ``server.responder``.
        model: model name reported when the request names none.
        api_key: when set, requests without ``Authorization: Bearer <api_key>`` answer 401.
        behaviour: initial faults (latency, status, hang, script, ...), as for agents.
        port: port to bind; ``0`` picks a free one.

    Example::

        with LlmServer(Rules({"capital of France": "Paris"}), api_key="sk-test") as llm:
            response = httpx.post(
                llm.base_url + "/chat/completions",
                headers={"Authorization": "Bearer sk-test"},
                json={"model": "m", "messages": [{"role": "user", "content": "capital of France?"}]},
            )
            assert response.json()["choices"][0]["message"]["content"] == "Paris"
            llm.set(status=429, retry_after=1)   # from now on: rate limited
            assert llm.calls[0].headers["authorization"] == "Bearer sk-test"
    """

    def __init__(
        self,
        responder: LlmResponder | None = None,
        *,
        model: str = "trellis-fake",
        api_key: str | None = None,
        behaviour: Behaviour | None = None,
        port: int = 0,
        startup_timeout: float = 10.0,
        shutdown_timeout: float = 5.0,
    ) -> None:
        Endpoint.__init__(self, "llm", behaviour)
        self.initial_responder: LlmResponder = responder or echo
        self.responder: LlmResponder = self.initial_responder
        """What the server says now; assign to change it while running."""
        self.model = model
        self.api_key = api_key
        routes = [
            *control_routes(self),
            Route("/health", self._health, methods=["GET"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/v1/chat/completions", self._completions, methods=["POST"]),
        ]
        ServerThread.__init__(
            self,
            Starlette(routes=routes),
            port=port,
            startup_timeout=startup_timeout,
            shutdown_timeout=shutdown_timeout,
        )

    def __repr__(self) -> str:
        port = "stopped" if self._port is None else f"port={self._port}"
        return f"LlmServer({port}, model={self.model!r}, calls={self.count}, responder={self.responder!r})"

    def reset(self, behaviour: Behaviour | None = None) -> None:
        """Like :meth:`Endpoint.reset`, and restore the initial responder.

        A :class:`Replies` responder keeps its position: install a fresh one to start over.
        """
        super().reset(behaviour)
        self.responder = self.initial_responder

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``: what OpenAI clients call ``base_url``."""
        return f"{self.origin}/v1"

    # -- the control API's view (trellis.testing._serving.Endpoints) --------------------------

    def endpoint_names(self) -> list[str]:
        return [self.name]

    def find_endpoint(self, name: str) -> Endpoint | None:
        return self if name == self.name else None

    # -- HTTP -------------------------------------------------------------------------------

    async def _health(self, request: Request) -> Response:
        healthy = self.check_health(request.method, "/health", request.headers)
        return JSONResponse({"status": "ok" if healthy else "unavailable"}, 200 if healthy else 503)

    async def _models(self, request: Request) -> Response:
        model = {"id": self.model, "object": "model", "created": 0, "owned_by": "trellis-testing"}
        return JSONResponse({"object": "list", "data": [model]})

    async def _completions(self, request: Request) -> Response:
        return await answer(
            self,
            request,
            "/v1/chat/completions",
            self.stopping,
            ok=self._complete,
            error_body=error_body,
            wrong_shape=lambda decision: {
                "id": f"chatcmpl-fake-{decision.call}",
                "object": "chat.completion",
                "model": self.model,
                "choices": [],
            },
        )

    async def _complete(self, decision: Decision, record: RecordedRequest) -> Response:
        body = record.json
        if self.api_key is not None and record.headers.get("authorization") != f"Bearer {self.api_key}":
            return _fail(401, "Incorrect API key provided.")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            return _fail(400, "'messages' must be a non-empty list of chat messages.")
        try:
            reply = await self._reply(body)
        except Exception as exc:  # a broken responder is the test's bug: say so in the answer
            return _fail(500, f"responder raised {type(exc).__name__}: {exc}")
        if isinstance(reply, Failure):
            return failure_response(reply, error_body(reply))

        text, finish_reason = _truncate(
            content_text(reply), body.get("max_completion_tokens") or body.get("max_tokens")
        )
        completion: dict[str, Any] = {
            "id": f"chatcmpl-fake-{decision.call}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "system_fingerprint": "trellis-testing",
        }
        prompt, produced = prompt_tokens(body), count_tokens(text)
        usage = {"prompt_tokens": prompt, "completion_tokens": produced, "total_tokens": prompt + produced}
        if body.get("stream"):
            options = body.get("stream_options") or {}
            include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
            chunks = _chunks(completion, text, finish_reason, usage if include_usage else None)
            return StreamingResponse(chunks, media_type="text/event-stream")
        message = {"role": "assistant", "content": text, "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        return JSONResponse({**completion, "choices": [choice], "usage": usage})

    async def _reply(self, body: dict[str, Any]) -> Reply:
        fixed = self.behaviour.reply
        if fixed is not None:
            if not isinstance(fixed, str | dict | list):
                raise TypeError(f"behaviour.reply must be text or a JSON object/array, got {fixed!r}")
            return fixed
        reply = self.responder(body)
        return await reply if inspect.isawaitable(reply) else reply


def _fail(status: int, message: str) -> Response:
    failure = Failure(status, message=message)
    return failure_response(failure, error_body(failure))


def _truncate(text: str, max_tokens: Any) -> tuple[str, str]:
    """Cut ``text`` to ``max_tokens`` words; the finish reason says whether it was cut."""
    if isinstance(max_tokens, int) and count_tokens(text) > max_tokens:
        return " ".join(text.split()[:max_tokens]), "length"
    return text, "stop"


async def _chunks(
    completion: dict[str, Any], text: str, finish_reason: str, usage: dict[str, int] | None
) -> AsyncIterator[str]:
    """The server-sent events of a streamed completion, one word (with its spacing) per chunk."""

    def event(delta: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _sse({**completion, "object": "chat.completion.chunk", "choices": [choice]})

    yield event({"role": "assistant", "content": ""})
    for piece in re.split(r"(?<=\s)(?=\S)", text):
        if piece:
            yield event({"content": piece})
    yield event({}, finish_reason)
    if usage is not None:
        yield _sse({**completion, "object": "chat.completion.chunk", "choices": [], "usage": usage})
    yield "data: [DONE]\n\n"


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"

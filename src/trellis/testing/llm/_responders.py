"""What the fake LLM says: responders map a chat-completions request to a reply.

A responder is any callable ``(request_json) -> Reply`` (sync or async). A :data:`Reply` is the
assistant's content as text, or a JSON value (sent as its JSON text, which is what JSON mode and
structured outputs expect), or a :class:`~trellis.testing.Failure` to answer with an error. A
responder that raises answers 500 with the exception's message.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeAlias

from trellis.testing._behaviour import Failure

Reply: TypeAlias = str | dict[str, Any] | list[Any] | Failure
"""Assistant content (text or a JSON value), or a Failure."""

LlmResponder: TypeAlias = Callable[[dict[str, Any]], Reply | Awaitable[Reply]]
"""Turns a chat-completions request body into a :data:`Reply`."""


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a chat message, whether ``content`` is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def last_user_message(request: Mapping[str, Any]) -> str:
    """The text of the last ``user`` message of a request (``""`` when there is none)."""
    for message in reversed(request.get("messages") or []):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return message_text(message)
    return ""


def wants_json(request: Mapping[str, Any]) -> bool:
    """Whether the request asks for JSON output (``response_format`` json_object/json_schema)."""
    response_format = request.get("response_format")
    return isinstance(response_format, Mapping) and response_format.get("type") in (
        "json_object",
        "json_schema",
    )


def echo(request: dict[str, Any]) -> Reply:
    """The default responder: ``"echo: <last user message>"``, or ``{"echo": ...}`` in JSON mode."""
    text = last_user_message(request)
    return {"echo": text} if wants_json(request) else f"echo: {text}"


class Replies:
    """Canned replies in order; the last one repeats once the list is used up.

    Example::

        LlmServer(Replies(["first", {"answer": 42}, Failure(429, retry_after=1)]))
    """

    def __init__(self, replies: Sequence[Reply]) -> None:
        if not replies:
            raise ValueError("Replies needs at least one reply")
        self.replies = list(replies)
        self._next = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Replies({self.replies!r}, next={self._next})"

    def __call__(self, request: dict[str, Any]) -> Reply:
        with self._lock:
            reply = self.replies[min(self._next, len(self.replies) - 1)]
            self._next += 1
            return reply


class Rules:
    """A rule table: the first substring found in the last user message picks the reply.

    Args:
        rules: substring → reply, tried in order.
        default: reply when no substring matches; default: :func:`echo`.

    Example::

        LlmServer(Rules({"sentiment": {"label": "positive"}, "summarise": "A short summary."}))
    """

    def __init__(self, rules: Mapping[str, Reply], default: Reply | LlmResponder = echo) -> None:
        self.rules = dict(rules)
        self.default = default

    def __repr__(self) -> str:
        return f"Rules({self.rules!r}, default={self.default!r})"

    def __call__(self, request: dict[str, Any]) -> Reply | Awaitable[Reply]:
        text = last_user_message(request)
        for needle, reply in self.rules.items():
            if needle in text:
                return reply
        return self.default(request) if callable(self.default) else self.default


def content_text(reply: str | dict[str, Any] | list[Any]) -> str:
    """The content string sent for a non-failure reply."""
    return reply if isinstance(reply, str) else json.dumps(reply)


def count_tokens(text: str) -> int:
    """Deterministic token count: whitespace-separated words."""
    return len(text.split())


def prompt_tokens(request: Mapping[str, Any]) -> int:
    """Tokens of every message of the request, by :func:`count_tokens`."""
    messages = request.get("messages") or []
    return sum(count_tokens(message_text(m)) for m in messages if isinstance(m, Mapping))

"""A fake OpenAI-compatible LLM server, in-process or as ``python -m trellis.testing.llm``.

Responders decide what it says: a callable ``(request_json) -> str | dict | list | Failure``,
:class:`Replies` (canned, in order) or :class:`Rules` (substring of the last user message ->
reply). Faults (latency, 429 with ``Retry-After``, 500, hangs, malformed bodies, scripts) come
from the same :class:`Behaviour` as the fake agents.
"""

from trellis.testing._behaviour import Behaviour, Failure, RecordedRequest
from trellis.testing.llm._responders import (
    LlmResponder,
    Replies,
    Reply,
    Rules,
    count_tokens,
    echo,
    last_user_message,
    wants_json,
)
from trellis.testing.llm._server import LlmServer

__all__ = [
    "Behaviour",
    "Failure",
    "LlmResponder",
    "LlmServer",
    "RecordedRequest",
    "Replies",
    "Reply",
    "Rules",
    "count_tokens",
    "echo",
    "last_user_message",
    "wants_json",
]

"""Helpers for testing Trellis workflows and the programs around them, against real HTTP.

* :class:`AgentServer` — fake HTTP agents on 127.0.0.1 whose faults (latency, error rate,
  status + ``Retry-After``, hangs, malformed bodies, scripts) tests change while they run;
* :class:`LlmServer` — a fake OpenAI-compatible chat-completions server with the same faults
  and scriptable replies (:class:`Replies`, :class:`Rules`, or any callable);
* :class:`Behaviour` / :class:`Failure` — the fault vocabulary both share;
* matchers (:class:`AnyStr`, :class:`AnyInt`, :class:`FloatBetween`, :class:`IsoTimestamp`)
  for comparing whole event lists.

Both servers also run as processes (``python -m trellis.testing.agents`` / ``.llm``) and
answer ``/_control/...`` so another process can steer them.

Example::

    from trellis.testing import AgentServer, Behaviour

    with AgentServer(agents={"nlp": Behaviour(script=("error", "ok"))}) as agents:
        run_workflow(agent_url=agents.url("nlp"))
        assert agents["nlp"].count == 2
"""

from trellis.testing._behaviour import Behaviour, Endpoint, Failure, RecordedRequest
from trellis.testing._serving import ServerThread
from trellis.testing.agents import AgentServer, FakeAgent, Responder
from trellis.testing.llm import LlmResponder, LlmServer, Replies, Reply, Rules
from trellis.testing.matchers import AnyInt, AnyStr, FloatBetween, IsoTimestamp, Matcher

__all__ = [
    "AgentServer",
    "AnyInt",
    "AnyStr",
    "Behaviour",
    "Endpoint",
    "Failure",
    "FakeAgent",
    "FloatBetween",
    "IsoTimestamp",
    "LlmResponder",
    "LlmServer",
    "Matcher",
    "RecordedRequest",
    "Replies",
    "Reply",
    "Responder",
    "Rules",
    "ServerThread",
]

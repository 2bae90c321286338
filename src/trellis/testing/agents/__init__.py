"""Fake HTTP agents with injectable faults, in-process or as ``python -m trellis.testing.agents``."""

from trellis.testing._behaviour import Behaviour, Failure, RecordedRequest
from trellis.testing.agents._server import AgentServer, FakeAgent, Responder

__all__ = ["AgentServer", "Behaviour", "Failure", "FakeAgent", "RecordedRequest", "Responder"]

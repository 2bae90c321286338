"""Executing runs: the engine, its event bus, and the translation of LangGraph's stream."""

from trellis.runtime._bus import ALL_RUNS, EventBus
from trellis.runtime._engine import Engine, check_input
from trellis.runtime._execute import Execution, Executor

__all__ = ["ALL_RUNS", "Engine", "EventBus", "Execution", "Executor", "check_input"]

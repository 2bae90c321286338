"""What a project declares in code: its tools and its Python-defined workflows.

A definition can only call a tool that the project registered here by name; it can never
name an import path. Projects list the modules that register things in configuration
(``tools = ["myproject.tools"]`` in ``trellis.toml`` or ``TRELLIS_TOOLS``), and those
modules use the process-wide :data:`registry`::

    from trellis.registry import registry

    @registry.tool("kb.search")
    async def search(q: str) -> list[str]: ...

    @registry.workflow("hello-python")
    def build() -> StateGraph: ...
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from trellis.errors import NotFound

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Tool:
    """A registered callable. ``wants_context`` when it declares a ``ctx`` parameter."""

    name: str
    fn: Callable[..., Any]
    wants_context: bool
    is_async: bool
    description: str | None = None


@dataclass(frozen=True, slots=True)
class PythonWorkflow:
    """A workflow written in Python: ``build()`` returns a ``StateGraph`` or a compiled graph."""

    name: str
    build: Callable[[], Any]
    description: str | None = None


@dataclass
class Registry:
    """Tools and Python workflows, by name."""

    tools: dict[str, Tool] = field(default_factory=dict)
    workflows: dict[str, PythonWorkflow] = field(default_factory=dict)
    loaded_modules: list[str] = field(default_factory=list)

    def tool(self, name: str, *, description: str | None = None) -> Callable[[F], F]:
        """Decorator registering a sync or async callable as tool ``name``."""

        def register(fn: F) -> F:
            self.add_tool(name, fn, description=description)
            return fn

        return register

    def add_tool(self, name: str, fn: Callable[..., Any], *, description: str | None = None) -> Tool:
        params = inspect.signature(fn).parameters
        tool = Tool(
            name=name,
            fn=fn,
            wants_context="ctx" in params,
            is_async=inspect.iscoroutinefunction(fn),
            description=description or inspect.getdoc(fn),
        )
        self.tools[name] = tool
        return tool

    def get_tool(self, name: str) -> Tool:
        try:
            return self.tools[name]
        except KeyError:
            known = ", ".join(sorted(self.tools)) or "none"
            raise NotFound(f"no tool named {name!r} is registered (registered: {known})") from None

    def workflow(self, name: str, *, description: str | None = None) -> Callable[[F], F]:
        """Decorator registering a function returning a ``StateGraph`` as workflow ``name``."""

        def register(fn: F) -> F:
            self.workflows[name] = PythonWorkflow(name=name, build=fn, description=description)
            return fn

        return register

    def get_workflow(self, name: str) -> PythonWorkflow | None:
        return self.workflows.get(name)

    def load(self, spec: str) -> None:
        """Import a module by dotted name, or a ``.py`` file by path, so it registers its parts."""
        if spec in self.loaded_modules:
            return
        if spec.endswith(".py") or "/" in spec:
            path = Path(spec).resolve()
            if not path.is_file():
                raise NotFound(f"tool module file {spec!r} does not exist")
            module_name = f"trellis_user_{path.stem}_{abs(hash(str(path)))}"
            module_spec = importlib.util.spec_from_file_location(module_name, path)
            if module_spec is None or module_spec.loader is None:
                raise NotFound(f"cannot import {spec!r}")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_name] = module
            module_spec.loader.exec_module(module)
        else:
            importlib.import_module(spec)
        self.loaded_modules.append(spec)


registry = Registry()
"""The process-wide registry that project modules register into."""

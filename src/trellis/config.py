"""Configuration: ``trellis.toml`` in the working directory, overridden by ``TRELLIS_*`` variables.

Example ``trellis.toml``::

    database_url = "sqlite+aiosqlite:///./.trellis/trellis.db"
    tools = ["myproject.tools"]          # modules that register tools and Python workflows

    [models.small]                        # an alias used by `llm` nodes: `model: small`
    base_url = "https://llm.internal/v1"
    model = "qwen2.5-7b-instruct"
    api_key_env = "LLM_API_KEY"          # the key is read from this variable, never stored

    [agents.nlp]                          # registered at start unless an agent `nlp` exists
    base_url = "http://nlp.internal"
    breaker = {failure_threshold = 5, window_seconds = 60, recovery_seconds = 60}

    [http_breaker]                        # one circuit per host for `http` nodes
    failure_threshold = 5                 # `enabled = false` turns them off

    [retention]                           # `trellis serve` prunes finished runs (`trellis gc`)
    older_than = "30d"
    interval = "1h"

Environment: ``TRELLIS_DATABASE_URL``, ``TRELLIS_TOOLS`` (comma-separated), ``TRELLIS_LEASE_SECONDS``,
``TRELLIS_MODELS`` (JSON object of aliases), ``TRELLIS_CONFIG`` (path of the TOML file).
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./.trellis/trellis.db"


@dataclass(frozen=True, slots=True)
class ModelAlias:
    """Where an ``llm`` node's ``model: <alias>`` goes."""

    base_url: str
    """OpenAI-compatible base URL, e.g. ``http://127.0.0.1:8001/v1``."""
    model: str
    """Model name sent in the request."""
    api_key_env: str | None = None
    """Environment variable holding the API key (sent as a Bearer token)."""
    timeout_seconds: float = 60.0

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


@dataclass(frozen=True, slots=True)
class AgentEndpoint:
    """An HTTP agent that ``agent`` nodes call by name (``[agents.<name>]`` in ``trellis.toml``)."""

    base_url: str
    """Where the agent lives, e.g. ``http://127.0.0.1:9001/nlp``."""
    invoke_path: str = "/invoke"
    """Path ``agent`` nodes POST their input to, unless the node sets ``path``."""
    health_path: str = "/health"
    timeout_seconds: float = 30.0
    auth_header_env: str | None = None
    """Environment variable holding the ``Authorization`` header value (never stored)."""
    retry: dict[str, Any] | None = None
    """Retry policy of nodes calling it (``[agents.<name>.retry]``, fields of a DSL ``retry``)."""
    breaker: dict[str, Any] | None = None
    """Circuit breaker policy (``failure_threshold``, ``window_seconds``, ``recovery_seconds``, ...)."""
    health: dict[str, Any] | None = None
    """Health probing and judgement (``probe_interval_seconds``, ``threshold``, ...)."""
    response_schema: dict[str, Any] | None = None

    def spec_document(self) -> dict[str, Any]:
        """The agent registry document this entry stands for (see ``trellis.agents.AgentSpec``)."""
        document: dict[str, Any] = {
            "base_url": self.base_url,
            "invoke_path": self.invoke_path,
            "health_path": self.health_path,
            "timeout_seconds": self.timeout_seconds,
        }
        if self.auth_header_env:
            document["auth"] = {
                "header": "Authorization",
                "scheme": None,
                "secret": f"env:{self.auth_header_env}",
            }
        for key in ("retry", "breaker", "health", "response_schema"):
            if getattr(self, key) is not None:
                document[key] = getattr(self, key)
        return document


@dataclass(frozen=True, slots=True)
class Settings:
    """Resolved configuration of one Trellis process."""

    database_url: str = DEFAULT_DATABASE_URL
    tools: tuple[str, ...] = ()
    models: dict[str, ModelAlias] = field(default_factory=dict)
    agents: dict[str, AgentEndpoint] = field(default_factory=dict)
    http_breaker: dict[str, Any] | None = field(default_factory=dict)
    """Breaker policy of ``http`` nodes, one circuit per host (``[http_breaker]``; defaults
    apply to fields not given); ``None`` turns the HTTP breakers off (``enabled = false``)."""
    lease_seconds: float = 30.0
    """How long a worker's claim on a run lasts without a heartbeat; a dead worker's runs are
    taken over this long after its last heartbeat."""
    source: str | None = None
    """Path of the TOML file the settings came from, if any."""
    retention: dict[str, Any] = field(default_factory=dict)
    """``[retention]``: ``older_than`` and ``interval`` of the pruning job ``trellis serve`` runs
    (see :class:`trellis.observability.RetentionPolicy`); ``enabled = false`` turns it off."""

    @classmethod
    def load(cls, path: str | Path | None = None, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        raw: dict[str, Any] = {}
        source: str | None = None
        candidate = Path(path or env.get("TRELLIS_CONFIG") or "trellis.toml")
        if candidate.is_file():
            with candidate.open("rb") as fh:
                raw = tomllib.load(fh)
            source = str(candidate)
        elif path is not None or "TRELLIS_CONFIG" in env:
            raise FileNotFoundError(f"configuration file {str(candidate)!r} does not exist")
        models_raw: dict[str, Any] = dict(raw.get("models", {}))
        if env.get("TRELLIS_MODELS"):
            models_raw.update(json.loads(env["TRELLIS_MODELS"]))
        base = candidate.parent if source else Path.cwd()
        tools = [_relative_to(base, t) for t in raw.get("tools", [])]
        if env.get("TRELLIS_TOOLS"):
            tools.extend(t.strip() for t in env["TRELLIS_TOOLS"].split(",") if t.strip())
        return cls(
            database_url=env.get("TRELLIS_DATABASE_URL") or raw.get("database_url") or DEFAULT_DATABASE_URL,
            tools=tuple(dict.fromkeys(tools)),
            models={name: ModelAlias(**spec) for name, spec in models_raw.items()},
            agents={name: AgentEndpoint(**spec) for name, spec in dict(raw.get("agents", {})).items()},
            http_breaker=_http_breaker(raw.get("http_breaker")),
            lease_seconds=float(env.get("TRELLIS_LEASE_SECONDS") or raw.get("lease_seconds") or 30.0),
            source=source,
            retention=dict(raw.get("retention", {})),
        )


def _http_breaker(raw: Any) -> dict[str, Any] | None:
    table = dict(raw or {})
    if table.pop("enabled", True) is False:
        return None
    return table


def _relative_to(base: Path, spec: str) -> str:
    """A tool module given as a file path in ``trellis.toml`` is relative to that file."""
    if spec.endswith(".py") or "/" in spec:
        path = Path(spec)
        return str(path if path.is_absolute() else (base / path).resolve())
    return spec

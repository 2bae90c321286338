"""Fault injection shared by the fake servers: what to do with the next request, and what came in.

An :class:`Endpoint` is one fake service (one agent, or the LLM). It holds the current
:class:`Behaviour` (an immutable value that :meth:`Endpoint.set` swaps atomically), the seeded
random generator behind ``error_rate``, the scripted outcomes still to play, and the record of
every request that arrived. Servers call :meth:`Endpoint.admit` once per request and act on the
returned :class:`Decision`; tests read :attr:`Endpoint.calls`. Everything here is guarded by one
lock, because tests steer an endpoint from their own thread while the server's thread reads it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, TypeAlias, get_args

Outcome: TypeAlias = Literal["ok", "error", "hang", "invalid_json", "wrong_shape"]
"""What the fault layer does with one request; ``"ok"`` hands it to the responder."""

OUTCOMES: frozenset[str] = frozenset(get_args(Outcome))


@dataclass(frozen=True)
class Failure:
    """An error answer, usable as a scripted step or returned by a responder.

    Example::

        agent.set(script=[Failure(429, retry_after=0.2), "ok"])
    """

    status: int = 500
    """HTTP status to answer with."""
    retry_after: float | str | None = None
    """``Retry-After`` value (seconds, or an HTTP date); sent whatever the status."""
    message: str = "injected fault"
    """Human-readable reason put in the error body."""

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise ValueError(f"Failure status must be an HTTP status, got {self.status!r}")


Step: TypeAlias = Outcome | int | Failure
"""One scripted outcome: an :data:`Outcome` name, a bare status code, or a :class:`Failure`."""


@dataclass(frozen=True)
class Behaviour:
    """How a fake endpoint answers. Immutable; change a running endpoint with ``endpoint.set(...)``.

    Precedence per request: the next scripted step if any, else ``hang``, else ``status``, else
    a 500 with probability ``error_rate``, else ``malformed``, else a normal answer. ``latency``
    applies before every answer.

    Example::

        Behaviour(latency=(0.01, 0.05), error_rate=0.3, seed=7)
        Behaviour(status=429, retry_after=1)
        Behaviour(script=("error", "error", "ok"))
    """

    latency: float | tuple[float, float] = 0.0
    """Seconds to wait before answering: fixed, or a ``(low, high)`` range drawn per request."""
    error_rate: float = 0.0
    """Probability (0..1) of answering 500, drawn from a ``random.Random(seed)``."""
    status: int | None = None
    """Answer every request with this error status (e.g. 503, 429, 404)."""
    retry_after: float | str | None = None
    """``Retry-After`` sent with 429 and 503 answers chosen by ``status`` or the script."""
    hang: bool = False
    """Never answer: until the client disconnects, the server stops, or ``set(hang=False)``."""
    malformed: Literal["invalid_json", "wrong_shape"] | None = None
    """Answer 200 with a body that is not JSON, or JSON of the wrong shape."""
    script: tuple[Step, ...] = ()
    """Outcomes for the next requests, in order; afterwards the fields above apply again."""
    healthy: bool = True
    """What the health endpoint reports (200 or 503)."""
    seed: int = 0
    """Seed of the generator behind ``error_rate`` and latency ranges."""
    reply: Any = None
    """A fixed success payload replacing the responder's (agents: the body; LLM: the content)."""

    def __post_init__(self) -> None:
        if isinstance(self.latency, list):  # JSON has no tuples
            object.__setattr__(self, "latency", tuple(self.latency))
        if not isinstance(self.script, tuple):
            object.__setattr__(self, "script", tuple(self.script))
        low, high = self.latency if isinstance(self.latency, tuple) else (self.latency, self.latency)
        if not 0 <= low <= high:
            raise ValueError(f"latency must be >= 0 seconds or a (low, high) range, got {self.latency!r}")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error_rate must be within 0..1, got {self.error_rate!r}")
        if self.status is not None and not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status, got {self.status!r}")
        if self.malformed not in (None, "invalid_json", "wrong_shape"):
            raise ValueError(f"malformed must be 'invalid_json' or 'wrong_shape', got {self.malformed!r}")
        for step in self.script:
            if isinstance(step, str) and step not in OUTCOMES:
                raise ValueError(f"unknown script step {step!r}; use one of {sorted(OUTCOMES)}")
            if isinstance(step, int) and not 100 <= step <= 599:
                raise ValueError(f"script step {step!r} is not an HTTP status")

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, base: Behaviour | None = None) -> Behaviour:
        """Build from JSON fields (as sent to ``POST /_control/{name}``) on top of ``base``."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown behaviour fields {unknown}; known: {sorted(names)}")
        changes = dict(data)
        if "script" in changes:
            changes["script"] = tuple(
                Failure(**step) if isinstance(step, Mapping) else step for step in changes["script"]
            )
        return replace(base or cls(), **changes)

    def to_json(self) -> dict[str, Any]:
        """The fields as JSON values (tuples become lists, failures objects)."""
        data = asdict(self)
        data["latency"] = list(self.latency) if isinstance(self.latency, tuple) else self.latency
        data["script"] = [_step_json(step) for step in self.script]
        return data


@dataclass(frozen=True)
class RecordedRequest:
    """One request as a fake server received it."""

    method: str
    path: str
    """Path below the endpoint, e.g. ``/invoke`` for ``POST /nlp/invoke``."""
    headers: Mapping[str, str]
    """Request headers, names lower-cased."""
    body: bytes
    json: Any
    """The body parsed as JSON; ``None`` when empty or not JSON."""
    time: float
    """``time.monotonic()`` at arrival, comparable with the test's own clock."""
    outcome: Outcome | Literal["health"]
    """What the fault layer decided; ``"ok"`` means the responder answered."""
    status: int | None
    """Status the fault layer chose; ``None`` for a hang."""

    def to_json(self) -> dict[str, Any]:
        """A JSON view for the control endpoint (the body as text)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["headers"] = dict(self.headers)
        data["body"] = self.body.decode("utf-8", errors="replace")
        return data


@dataclass(frozen=True)
class Decision:
    """What a server must do with one admitted request."""

    outcome: Outcome
    delay: float
    """Seconds of latency to add first."""
    call: int
    """1-based number of this call on its endpoint (health checks excluded)."""
    failure: Failure | None = None
    """Set when ``outcome`` is ``"error"``."""
    releases: int = 0
    """The endpoint's release generation at admission; a hang ends when it moves on."""

    @property
    def status(self) -> int | None:
        if self.outcome == "hang":
            return None
        return self.failure.status if self.failure else 200


class Endpoint:
    """One fake service: its current behaviour and everything it received.

    Args:
        name: how the endpoint is addressed (the agent name, or ``"llm"``).
        behaviour: the initial behaviour (default: answer at once, always OK).
    """

    def __init__(self, name: str, behaviour: Behaviour | None = None) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._requests: list[RecordedRequest] = []
        self._calls = 0
        self._releases = 0  # bumped to wake hung requests
        self.initial_behaviour = behaviour or Behaviour()
        """What :meth:`reset` restores."""
        self._install(self.initial_behaviour)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, calls={self.count}, behaviour={self.behaviour!r})"

    def _install(self, behaviour: Behaviour) -> None:
        self._behaviour = behaviour
        self._script: deque[Step] = deque(behaviour.script)
        self._rng = random.Random(behaviour.seed)

    @property
    def behaviour(self) -> Behaviour:
        """The behaviour now in force."""
        return self._behaviour

    @property
    def remaining_script(self) -> tuple[Step, ...]:
        """Scripted steps not yet played."""
        with self._lock:
            return tuple(self._script)

    def set(self, **changes: Any) -> Behaviour:
        """Change some behaviour fields now; requests already waiting keep their decision.

        Setting ``script`` restarts the script, setting ``seed`` restarts the generator, and
        ``hang=False`` releases requests that are hanging.

        Example::

            agent.set(status=503, retry_after=2)
            agent.set(status=None, script=["error", "ok"])
        """
        with self._lock:
            new = replace(self._behaviour, **changes)
            self._behaviour = new
            if "script" in changes:
                self._script = deque(new.script)
            if "seed" in changes:
                self._rng = random.Random(new.seed)
            if changes.get("hang") is False:
                self._releases += 1
            return new

    def reset(self, behaviour: Behaviour | None = None) -> None:
        """Install ``behaviour`` (default: the initial one), forget requests, release hangs."""
        with self._lock:
            self._install(behaviour or self.initial_behaviour)
            self._requests.clear()
            self._calls = 0
            self._releases += 1

    def clear(self) -> None:
        """Forget the recorded requests (numbering of calls restarts at 1)."""
        with self._lock:
            self._requests.clear()
            self._calls = 0

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, health checks included, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def calls(self) -> list[RecordedRequest]:
        """Requests other than health checks, oldest first."""
        return [r for r in self.requests if r.outcome != "health"]

    @property
    def count(self) -> int:
        """How many calls (health checks excluded) arrived."""
        with self._lock:
            return self._calls

    def intervals(self) -> list[float]:
        """Seconds between consecutive calls' arrivals: the retry timing a client used."""
        times = [r.time for r in self.calls]
        return [b - a for a, b in itertools.pairwise(times)]

    def wait_for_calls(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least ``n`` calls arrived; raise ``TimeoutError`` after ``timeout`` s."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: self._calls >= n, timeout=timeout):
                raise TimeoutError(f"{self.name}: {self._calls} of {n} calls arrived within {timeout}s")
        return self.calls

    async def wait_for_calls_async(
        self,
        n: int,
        timeout: float = 5.0,  # noqa: ASYNC109 - bounded by default, like its sync twin
    ) -> list[RecordedRequest]:
        """Like :meth:`wait_for_calls`, without blocking the running event loop."""
        deadline = time.monotonic() + timeout
        while self.count < n:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.name}: {self.count} of {n} calls arrived within {timeout}s")
            await asyncio.sleep(0.01)
        return self.calls

    def snapshot(self) -> dict[str, Any]:
        """State as JSON: behaviour, remaining script, count and requests."""
        with self._lock:
            return {
                "name": self.name,
                "behaviour": self._behaviour.to_json(),
                "remaining_script": [_step_json(step) for step in self._script],
                "count": self._calls,
                "requests": [r.to_json() for r in self._requests],
            }

    # -- used by the servers ------------------------------------------------------------------

    def admit(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[Decision, RecordedRequest]:
        """Record an arriving call and decide what to do with it."""
        with self._arrived:
            self._calls += 1
            decision = self._decide(self._calls)
            record = self._record(method, path, headers, body, decision.outcome, decision.status)
            return decision, record

    def check_health(self, method: str, path: str, headers: Mapping[str, str]) -> bool:
        """Record a health check and tell whether the endpoint reports itself healthy."""
        with self._lock:
            healthy = self._behaviour.healthy
            self._record(method, path, headers, b"", "health", 200 if healthy else 503)
            return healthy

    def released(self, decision: Decision) -> bool:
        """Whether hangs were released (``set(hang=False)``, ``reset()``) since ``decision``."""
        return self._releases != decision.releases

    def _record(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        outcome: Outcome | Literal["health"],
        status: int | None,
    ) -> RecordedRequest:
        record = RecordedRequest(
            method=method,
            path=path,
            headers=dict(headers),
            body=body,
            json=_parse_json(body),
            time=time.monotonic(),
            outcome=outcome,
            status=status,
        )
        self._requests.append(record)
        self._arrived.notify_all()
        return record

    def _decide(self, call: int) -> Decision:
        return replace(self._decide_outcome(call), releases=self._releases)

    def _decide_outcome(self, call: int) -> Decision:
        b = self._behaviour
        delay = self._rng.uniform(*b.latency) if isinstance(b.latency, tuple) else float(b.latency)
        if self._script:
            step = self._script.popleft()
            if isinstance(step, Failure):
                return Decision("error", delay, call, step)
            if isinstance(step, int):
                return Decision("error", delay, call, self._failure(step))
            return Decision(step, delay, call, Failure() if step == "error" else None)
        if b.hang:
            return Decision("hang", delay, call)
        if b.status is not None:
            return Decision("error", delay, call, self._failure(b.status))
        if b.error_rate and self._rng.random() < b.error_rate:
            return Decision("error", delay, call, Failure())
        if b.malformed is not None:
            return Decision(b.malformed, delay, call)
        return Decision("ok", delay, call)

    def _failure(self, status: int) -> Failure:
        retry_after = self._behaviour.retry_after if status in (429, 503) else None
        return Failure(status, retry_after=retry_after)


def _step_json(step: Step) -> str | int | dict[str, Any]:
    return asdict(step) if isinstance(step, Failure) else step


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None

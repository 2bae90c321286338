"""Circuit breakers shared by every process through the store.

A breaker guards one downstream target (``agent:<name>``, ``http:<host:port>``)::

    closed ──N failures within window──▶ open ──recovery timeout──▶ half_open
      ▲                                   ▲                            │
      └──────M trial successes────────────┼────────────────────────────┤
                                          └──────a trial failure───────┘

* **closed**: every call goes through; failures that are the target's fault (timeouts,
  connection errors, 429, 5xx, malformed answers) are remembered with their time, and the
  ``failure_threshold``-th within ``window_seconds`` opens the circuit.
* **open**: calls are refused at once with :class:`~trellis.errors.CircuitOpen` (``catch`` can
  route it to a fallback) until ``recovery_seconds`` have passed since it opened.
* **half_open**: exactly ``half_open_trials`` calls are admitted as trials; when all succeed the
  circuit closes, and the first failing trial opens it again. A trial that never reports (its
  process died) frees its slot after ``trial_timeout_seconds``.

The transitions are pure functions of the stored row (:func:`admit`, :func:`succeeded`,
:func:`failed`, :func:`abandoned`, :func:`reset`); :class:`BreakerBoard` applies them through
:meth:`~trellis.store.Store.change_breaker`, which locks the row, so two workers racing for the
half-open trial cannot both win it. The closed-state check on the call path is one read; only
failures, trials and transitions write.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from trellis.errors import CircuitOpen, WorkflowError
from trellis.store import BreakerRecord, Store, SystemEvent
from trellis.store.records import iso

State = Literal["closed", "open", "half_open"]

FAILURE_NAMES = frozenset({"Timeout", "ConnectionError", "RateLimited"})
"""Error names that always count against a target's breaker."""


class BreakerPolicy(BaseModel):
    """When a breaker opens and how it recovers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failure_threshold: int = Field(default=5, ge=1)
    """Failures within ``window_seconds`` that open the circuit."""
    window_seconds: float = Field(default=60.0, gt=0)
    """The sliding window failures are counted in."""
    recovery_seconds: float = Field(default=30.0, ge=0)
    """How long the circuit stays open before trial calls are let through."""
    half_open_trials: int = Field(default=1, ge=1)
    """Trial calls admitted in ``half_open``; all must succeed to close the circuit."""
    trial_timeout_seconds: float = Field(default=120.0, gt=0)
    """A trial that has not reported after this long frees its slot (its caller died)."""


def counts_as_failure(error: BaseException) -> bool:
    """Whether ``error`` is the target's fault and so counts against its breaker.

    Timeouts, connection errors, 429 and 5xx answers and malformed answers (``ValidationError``
    raised while reading a response, marked ``details["response"] = True``) count; a 4xx other
    than 429 is the caller's mistake and a ``CircuitOpen`` is not a call at all.
    """
    if not isinstance(error, WorkflowError):
        return False
    if error.name in FAILURE_NAMES:
        return True
    if error.name == "HttpError":
        status = error.details.get("status")
        return not isinstance(status, int) or status >= 500
    return error.name == "ValidationError" and bool(error.details.get("response"))


@dataclass(frozen=True, slots=True)
class Admission:
    """A call let through by a breaker; report its outcome to the :class:`BreakerBoard`."""

    key: str
    policy: BreakerPolicy
    trial: bool
    """A half-open trial call: its outcome decides the circuit."""
    generation: int
    """The breaker's generation when the call was admitted."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a call was refused."""

    state: State
    retry_in: float
    """Seconds until a trial may be admitted (0 when only the trial slots are taken)."""
    opened_at: datetime | None


def _epoch(value: datetime | None) -> float:
    return 0.0 if value is None else value.timestamp()


def _event(kind: str, record: BreakerRecord, **data: Any) -> SystemEvent:
    return SystemEvent(f"breaker.{kind}", record.key, {"key": record.key, **data})


Change = tuple[BreakerRecord | None, Any, Sequence[SystemEvent]]


def admit(record: BreakerRecord, policy: BreakerPolicy, now: datetime) -> Change:
    """Admit a call (an :class:`Admission`) or refuse it (a :class:`Refusal`)."""
    if record.state == "closed":
        return None, Admission(record.key, policy, trial=False, generation=record.generation), ()
    if record.state == "open":
        ready = _epoch(record.opened_at) + policy.recovery_seconds
        if now.timestamp() < ready:
            return None, Refusal("open", ready - now.timestamp(), record.opened_at), ()
        half = replace(
            record,
            state="half_open",
            trials_admitted=1,
            trial_successes=0,
            trial_started_at=now,
            generation=record.generation + 1,
            changed_at=now,
        )
        event = _event("half_open", half, trials=policy.half_open_trials, previous="open")
        return half, Admission(record.key, policy, trial=True, generation=half.generation), [event]
    stale = now.timestamp() - _epoch(record.trial_started_at) > policy.trial_timeout_seconds
    if record.trials_admitted < policy.half_open_trials or stale:
        taken = replace(
            record,
            trials_admitted=1 if stale else record.trials_admitted + 1,
            trial_successes=0 if stale else record.trial_successes,
            trial_started_at=now if stale or record.trial_started_at is None else record.trial_started_at,
        )
        return taken, Admission(record.key, policy, trial=True, generation=record.generation), ()
    return None, Refusal("half_open", 0.0, record.opened_at), ()


def succeeded(record: BreakerRecord, admission: Admission, now: datetime) -> Change:
    """A trial succeeded: the circuit closes once every trial has."""
    if not (admission.trial and record.state == "half_open" and record.generation == admission.generation):
        return None, (), ()
    successes = record.trial_successes + 1
    if successes < admission.policy.half_open_trials:
        return replace(record, trial_successes=successes), (), ()
    closed = _closed(record, now)
    return closed, (), [_event("closed", closed, previous="half_open", reason="trial calls succeeded")]


def failed(record: BreakerRecord, admission: Admission, problem: dict[str, Any], now: datetime) -> Change:
    """A call failed through the target's fault: count it, and open the circuit when due."""
    policy = admission.policy
    if record.state == "closed":
        horizon = now.timestamp() - policy.window_seconds
        recent = (*(t for t in record.failures if t > horizon), now.timestamp())
        recent = recent[-policy.failure_threshold :]
        if len(recent) < policy.failure_threshold:
            return replace(record, failures=recent, last_error=problem), (), ()
        opened = _opened(record, problem, now)
        reason = f"{len(recent)} failures within {policy.window_seconds:g}s"
        return opened, (), [_event("opened", opened, previous="closed", reason=reason, error=problem)]
    if record.state == "half_open" and admission.trial and record.generation == admission.generation:
        opened = _opened(record, problem, now)
        return (
            opened,
            (),
            [_event("opened", opened, previous="half_open", reason="a trial call failed", error=problem)],
        )
    return replace(record, last_error=problem), (), ()


def _transition(record: BreakerRecord, state: State, now: datetime, **changes: Any) -> BreakerRecord:
    """``record`` entering ``state``: a new generation, with failures and trials forgotten."""
    return replace(
        record,
        state=state,
        failures=(),
        opened_at=now if state == "open" else None,
        trials_admitted=0,
        trial_successes=0,
        trial_started_at=None,
        generation=record.generation + 1,
        changed_at=now,
        **changes,
    )


def _opened(record: BreakerRecord, problem: dict[str, Any], now: datetime) -> BreakerRecord:
    return _transition(record, "open", now, last_error=problem)


def _closed(record: BreakerRecord, now: datetime) -> BreakerRecord:
    return _transition(record, "closed", now)


def abandoned(record: BreakerRecord, admission: Admission, now: datetime) -> Change:
    """A trial ended without an outcome (its run was cancelled): free its slot."""
    if admission.trial and record.state == "half_open" and record.generation == admission.generation:
        return replace(record, trials_admitted=max(record.trials_admitted - 1, 0)), (), ()
    return None, (), ()


def reset(record: BreakerRecord, actor: str | None, now: datetime) -> Change:
    """Close the circuit by hand, forgetting its failures."""
    closed = _closed(record, now)
    events = (
        []
        if record.state == "closed"
        else [_event("closed", closed, previous=record.state, reason="reset", by=actor)]
    )
    return closed, closed, events


class BreakerBoard:
    """The breakers of one process, backed by the shared store.

    Args:
        store: where breaker state lives (every process sharing it sees the same circuits).
        clock: epoch seconds (tests pass a fake one to step through recovery timeouts).
    """

    def __init__(self, store: Store, *, clock: Any = time.time) -> None:
        self.store = store
        self._clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def admit(self, key: str, policy: BreakerPolicy) -> tuple[Admission, Sequence[SystemEvent]]:
        """Let a call through, or raise :class:`CircuitOpen`.

        Returns the admission (report its outcome with :meth:`succeeded`, :meth:`failed` or
        :meth:`abandoned`) and the transitions it caused (``breaker.half_open``).
        """
        current = await self.store.get_breaker(key)
        if current is None or current.state == "closed":
            generation = 0 if current is None else current.generation
            return Admission(key, policy, trial=False, generation=generation), ()
        now = self._now()
        result, events = await self._change(key, policy, lambda r: admit(r, policy, now))
        if isinstance(result, Refusal):
            raise _refused(key, result, current)
        return result, events

    async def succeeded(self, admission: Admission) -> Sequence[SystemEvent]:
        if not admission.trial:
            return ()  # a success in the closed state changes nothing: no write on the call path
        now = self._now()
        _, events = await self._change(
            admission.key, admission.policy, lambda r: succeeded(r, admission, now)
        )
        return events

    async def failed(self, admission: Admission, error: WorkflowError) -> Sequence[SystemEvent]:
        now = self._now()
        problem = error.to_problem()
        problem.pop("details", None)
        _, events = await self._change(
            admission.key, admission.policy, lambda r: failed(r, admission, problem, now)
        )
        return events

    async def abandoned(self, admission: Admission) -> None:
        if admission.trial:
            now = self._now()
            await self._change(admission.key, admission.policy, lambda r: abandoned(r, admission, now))

    async def reset(self, key: str, *, actor: str | None = None) -> BreakerRecord:
        """Close breaker ``key`` by hand (records ``breaker.closed`` if it was not closed)."""
        current = await self.store.get_breaker(key)
        policy = BreakerPolicy.model_validate(current.policy) if current else BreakerPolicy()
        now = self._now()
        record, _ = await self._change(key, policy, lambda r: reset(r, actor, now))
        assert isinstance(record, BreakerRecord)
        return record

    async def _change(self, key: str, policy: BreakerPolicy, fn: Any) -> tuple[Any, Sequence[SystemEvent]]:
        def change(
            record: BreakerRecord,
        ) -> tuple[BreakerRecord | None, tuple[Any, Sequence[SystemEvent]], Sequence[SystemEvent]]:
            new, result, events = fn(record)
            return new, (result, events), events

        result: tuple[Any, Sequence[SystemEvent]] = await self.store.change_breaker(
            key, policy.model_dump(), change
        )
        return result


def _refused(key: str, refusal: Refusal, record: BreakerRecord) -> CircuitOpen:
    if refusal.state == "open":
        why = f"circuit {key} is open; the next trial call is due in {refusal.retry_in:.1f}s"
    else:
        why = f"circuit {key} is half-open and its trial calls are taken"
    last = (record.last_error or {}).get("detail")
    return CircuitOpen(
        why + (f" (last failure: {last})" if last else ""),
        details={"key": key, "state": refusal.state, "retry_in": round(refusal.retry_in, 3)},
    )


def breaker_key(kind: Literal["agent", "http"], name: str) -> str:
    """``agent:<name>`` or ``http:<host:port>``."""
    return f"{kind}:{name}"


def trial_deadline(record: BreakerRecord, policy: BreakerPolicy) -> datetime | None:
    """When an open circuit admits its next trial (``None`` unless open)."""
    if record.state != "open" or record.opened_at is None:
        return None
    return record.opened_at + timedelta(seconds=policy.recovery_seconds)


def breaker_document(record: BreakerRecord) -> dict[str, Any]:
    """The breaker's document (REST and ``--json``), with ``next_trial_at``: when an open circuit
    admits its next trial."""
    doc = record.to_dict()
    try:
        policy = BreakerPolicy.model_validate(dict(record.policy))
    except PydanticValidationError:  # a policy stored by another release: show the rest anyway
        doc["next_trial_at"] = None
    else:
        doc["next_trial_at"] = iso(trial_deadline(record, policy))
    return doc

"""Circuit breakers: every transition, as pure functions and through the shared store.

The store-backed tests run on SQLite and PostgreSQL; the race for the half-open trial is run
both between tasks of one process and between two OS processes sharing one database.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta

import pytest

from trellis.errors import (
    CircuitOpen,
    ConnectionFailed,
    HttpError,
    RateLimited,
    TimeoutExceeded,
    ValidationError,
)
from trellis.resilience import BreakerBoard, BreakerPolicy, counts_as_failure
from trellis.resilience import breaker as b
from trellis.store import BreakerRecord, Store, open_store

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = BreakerPolicy(failure_threshold=3, window_seconds=60, recovery_seconds=30, half_open_trials=2)
PROBLEM = {"error": "ConnectionError", "detail": "refused"}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def closed(key: str = "agent:nlp") -> BreakerRecord:
    return BreakerRecord(key=key, state="closed", policy=POLICY.model_dump())


def fail(record: BreakerRecord, seconds: float, trial: bool = False) -> tuple[BreakerRecord, list[str]]:
    admission = b.Admission(record.key, POLICY, trial=trial, generation=record.generation)
    new, _, events = b.failed(record, admission, PROBLEM, at(seconds))
    return (new or record), [e.type for e in events]


def open_at(seconds: float) -> BreakerRecord:
    record = closed()
    for offset in range(3):
        record, _ = fail(record, seconds + offset * 0.001)
    assert record.state == "open"
    return record


class TestTransitions:
    def test_closed_opens_after_n_failures_within_the_window(self) -> None:
        record = closed()
        record, events = fail(record, 0)
        record, events2 = fail(record, 10)
        assert (record.state, events + events2) == ("closed", [])
        record, events = fail(record, 20)
        assert record.state == "open"
        assert events == ["breaker.opened"]
        assert record.opened_at == at(20)
        assert record.last_error == PROBLEM

    def test_failures_older_than_the_window_do_not_count(self) -> None:
        record = closed()
        record, _ = fail(record, 0)
        record, _ = fail(record, 30)
        record, _ = fail(record, 61)  # the first one left the window
        assert record.state == "closed"
        assert len(record.failures) == 2
        record, _ = fail(record, 62)
        assert record.state == "open"

    def test_open_refuses_until_the_recovery_timeout_then_admits_a_trial(self) -> None:
        record = open_at(0)
        new, refusal, events = b.admit(record, POLICY, at(29))
        assert new is None
        assert isinstance(refusal, b.Refusal)
        assert refusal.retry_in == pytest.approx(1.0, abs=0.01)
        assert events == ()
        new, admission, events = b.admit(record, POLICY, at(31))
        assert new is not None
        assert new.state == "half_open"
        assert isinstance(admission, b.Admission)
        assert admission.trial
        assert [e.type for e in events] == ["breaker.half_open"]

    def test_half_open_admits_exactly_m_trials(self) -> None:
        record = open_at(0)
        results = []
        for _ in range(4):
            new, result, _ = b.admit(record, POLICY, at(31))
            record = new or record
            results.append(isinstance(result, b.Admission))
        assert results == [True, True, False, False]
        assert record.trials_admitted == 2

    def test_m_trial_successes_close_the_circuit(self) -> None:
        record = open_at(0)
        admissions = []
        for _ in range(2):
            new, admission, _ = b.admit(record, POLICY, at(31))
            record = new or record
            admissions.append(admission)
        new, _, events = b.succeeded(record, admissions[0], at(32))
        record = new or record
        assert (record.state, events) == ("half_open", ())
        new, _, events = b.succeeded(record, admissions[1], at(33))
        record = new or record
        assert record.state == "closed"
        assert [e.type for e in events] == ["breaker.closed"]
        assert record.failures == ()

    def test_a_trial_failure_opens_the_circuit_again(self) -> None:
        record = open_at(0)
        new, admission, _ = b.admit(record, POLICY, at(31))
        record = new or record
        new, _, events = b.failed(record, admission, PROBLEM, at(32))
        assert new is not None
        assert new.state == "open"
        assert new.opened_at == at(32)
        assert [e.type for e in events] == ["breaker.opened"]
        assert events[0].data["previous"] == "half_open"

    def test_outcomes_of_an_earlier_episode_change_nothing(self) -> None:
        record = open_at(0)
        new, old_trial, _ = b.admit(record, POLICY, at(31))
        record = new or record
        new, _, _ = b.failed(record, old_trial, PROBLEM, at(32))  # reopened: generation moved on
        record = new or record
        new, _, _ = b.admit(record, POLICY, at(63))
        record = new or record
        assert record.state == "half_open"
        # the first episode's trial reports late: neither closes nor reopens the new episode
        assert b.succeeded(record, old_trial, at(64))[0] is None
        assert b.failed(record, old_trial, PROBLEM, at(64))[0].state == "half_open"  # type: ignore[union-attr]

    def test_a_trial_that_never_reports_frees_its_slot_after_the_trial_timeout(self) -> None:
        policy = POLICY.model_copy(update={"half_open_trials": 1, "trial_timeout_seconds": 10})
        record = open_at(0)
        new, _, _ = b.admit(record, policy, at(31))
        record = new or record
        assert isinstance(b.admit(record, policy, at(35))[1], b.Refusal)
        assert isinstance(b.admit(record, policy, at(42))[1], b.Admission)

    def test_an_abandoned_trial_frees_its_slot(self) -> None:
        policy = POLICY.model_copy(update={"half_open_trials": 1})
        record = open_at(0)
        new, admission, _ = b.admit(record, policy, at(31))
        record = new or record
        new, _, _ = b.abandoned(record, admission, at(32))
        record = new or record
        assert isinstance(b.admit(record, policy, at(32))[1], b.Admission)

    def test_reset_closes_and_forgets_failures(self) -> None:
        record = open_at(0)
        new, _, events = b.reset(record, "alice", at(5))
        assert new is not None
        assert (new.state, new.failures, new.opened_at) == ("closed", (), None)
        assert [(e.type, e.data["by"]) for e in events] == [("breaker.closed", "alice")]

    @pytest.mark.parametrize(
        ("error", "counted"),
        [
            (TimeoutExceeded("slow"), True),
            (ConnectionFailed("refused"), True),
            (RateLimited("429"), True),
            (HttpError("503", details={"status": 503}), True),
            (HttpError("404", details={"status": 404}, retryable=False), False),
            (ValidationError("bad input"), False),
            (ValidationError("bad answer", details={"response": True}), True),
            (CircuitOpen("open"), False),
        ],
    )
    def test_only_the_targets_faults_count(self, error: Exception, counted: bool) -> None:
        assert counts_as_failure(error) is counted


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class TestSharedBoard:
    async def test_a_full_cycle_through_the_store(self, store: Store) -> None:
        clock = FakeClock()
        board = BreakerBoard(store, clock=clock)
        policy = BreakerPolicy(failure_threshold=2, window_seconds=60, recovery_seconds=30)
        for _ in range(2):
            admission, _ = await board.admit("agent:nlp", policy)
            events = await board.failed(admission, ConnectionFailed("refused"))
        assert [e.type for e in events] == ["breaker.opened"]
        with pytest.raises(CircuitOpen) as refused:
            await board.admit("agent:nlp", policy)
        assert refused.value.details["state"] == "open"
        assert "refused" in refused.value.message  # the last failure is named
        clock.now += 31
        trial, events = await board.admit("agent:nlp", policy)
        assert trial.trial
        assert [e.type for e in events] == ["breaker.half_open"]
        assert [e.type for e in await board.succeeded(trial)] == ["breaker.closed"]
        record = await store.get_breaker("agent:nlp")
        assert record is not None
        assert record.state == "closed"
        history = [e.type for e in await store.list_system_events(type_prefix="breaker.")]
        assert history == ["breaker.opened", "breaker.half_open", "breaker.closed"]

    async def test_a_success_in_the_closed_state_writes_nothing(self, store: Store) -> None:
        board = BreakerBoard(store)
        admission, _ = await board.admit("http:127.0.0.1:9", BreakerPolicy())
        await board.succeeded(admission)
        assert await store.get_breaker("http:127.0.0.1:9") is None

    async def test_concurrent_callers_win_exactly_m_half_open_trials(self, store: Store) -> None:
        clock = FakeClock()
        board = BreakerBoard(store, clock=clock)
        policy = BreakerPolicy(failure_threshold=1, recovery_seconds=5, half_open_trials=2)
        admission, _ = await board.admit("agent:data", policy)
        await board.failed(admission, ConnectionFailed("refused"))
        clock.now += 6

        async def try_once() -> bool:
            try:
                await board.admit("agent:data", policy)
            except CircuitOpen:
                return False
            return True

        admitted = await asyncio.gather(*(try_once() for _ in range(20)))
        assert sum(admitted) == 2


RACER = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from trellis.errors import CircuitOpen
    from trellis.resilience import BreakerBoard, BreakerPolicy
    from trellis.store import open_store

    async def main(url, start_at, attempts):
        store = await open_store(url, migrate=False)
        board = BreakerBoard(store)
        policy = BreakerPolicy(failure_threshold=1, recovery_seconds=0.5, half_open_trials=1)
        await asyncio.sleep(max(0.0, start_at - time.time()))

        async def once():
            try:
                await board.admit("agent:viz", policy)
            except CircuitOpen:
                return 0
            return 1

        won = sum(await asyncio.gather(*(once() for _ in range(attempts))))
        await store.close()
        print(json.dumps({"won": won}))

    asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))
    """
)


class TestTwoProcesses:
    async def test_two_processes_racing_for_the_half_open_trial_admit_one(self, database_url: str) -> None:
        store = await open_store(database_url)
        try:
            board = BreakerBoard(store)
            policy = BreakerPolicy(failure_threshold=1, recovery_seconds=0.5, half_open_trials=1)
            admission, _ = await board.admit("agent:viz", policy)
            await board.failed(admission, ConnectionFailed("refused"))
            opened = await store.get_breaker("agent:viz")
            assert opened is not None
            assert opened.opened_at is not None
            # both processes start asking at the same instant, after the recovery timeout
            start_at = max(opened.opened_at.timestamp() + 0.6, time.time() + 2.5)
            racers = [
                subprocess.Popen(  # noqa: ASYNC220 (two real processes are the point of the test)
                    [sys.executable, "-c", RACER, database_url, str(start_at), "10"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(2)
            ]
            outputs = [await asyncio.to_thread(p.communicate, timeout=60) for p in racers]
            for process, (_, err) in zip(racers, outputs, strict=True):
                assert process.returncode == 0, err
            won = [json.loads(out)["won"] for out, _ in outputs]
            assert sum(won) == 1, won
            record = await store.get_breaker("agent:viz")
            assert record is not None
            assert (record.state, record.trials_admitted) == ("half_open", 1)
            transitions = [e.type for e in await store.list_system_events(type_prefix="breaker.")]
            assert transitions == ["breaker.opened", "breaker.half_open"]
        finally:
            await store.close()

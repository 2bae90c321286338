"""trellis.triggers on real message buses: NATS JetStream (127.0.0.1:4222) and Redis (6379).

Consumers start runs from messages and acknowledge only once the run is queued: a consumer
killed (SIGKILL, a real subprocess) between receipt and queueing, or between queueing and
acknowledging, leaves the message to be redelivered, and exactly one run exists afterwards.
The publisher sends every event of every run, in order. Without the servers these tests skip,
or fail when CI=true. Each runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Connection

from trellis.config import Settings
from trellis.registry import Registry
from trellis.runtime import Engine
from trellis.store import TriggerRecord
from trellis.store.schema import runs
from trellis.triggers import EventPublisher, PublisherSpec, consumer_for, create_trigger
from trellis.triggers._publisher import WATERMARK_LAG

NATS_URL = os.environ.get("TRELLIS_TEST_NATS_URL", "nats://127.0.0.1:4222")
REDIS_URL = os.environ.get("TRELLIS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

ORDERS = textwrap.dedent(
    """
    name: orders
    input: {type: object, required: [order], properties: {order: {type: string}}}
    state: {order: {type: string}, done: {type: boolean}}
    start: finish
    nodes:
      finish: {type: set, values: {done: true}}
    """
)


def _reachable(url: str, default_port: int, what: str) -> None:
    host_port = url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = host_port.partition(":")
    try:
        socket.create_connection((host, int(port or default_port)), timeout=2).close()
    except OSError as exc:
        message = f"{what} not reachable at {url}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def nats_url() -> str:
    _reachable(NATS_URL, 4222, "NATS")
    return NATS_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    _reachable(REDIS_URL, 6379, "Redis")
    return REDIS_URL


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[Engine]:
    async with Engine.open(Settings(database_url=database_url), registry=Registry()) as opened:
        await opened.register(ORDERS)
        yield opened


@pytest.fixture
def name() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


async def _nats_trigger(engine: Engine, url: str, name: str) -> TriggerRecord:
    spec = {"url": url, "stream": name.upper(), "subject": f"{name}.orders", "ack_wait_seconds": 1.5}
    return await create_trigger(engine, name, "nats", "orders", {**spec, "input": '{"order": body.id}'})


async def _redis_trigger(engine: Engine, url: str, name: str) -> TriggerRecord:
    spec = {"url": url, "stream": f"{name}:orders", "claim_idle_seconds": 1.0, "input": '{"order": body.id}'}
    return await create_trigger(engine, name, "redis", "orders", spec)


async def _send(kind: str, url: str, name: str, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    if kind == "nats":
        import nats

        client = await nats.connect(url)
        try:
            js = client.jetstream()
            try:
                await js.stream_info(name.upper())
            except Exception:
                await js.add_stream(name=name.upper(), subjects=[f"{name}.orders"])
            await js.publish(f"{name}.orders", data)
        finally:
            await client.close()
    else:
        import redis.asyncio as redis

        r = redis.from_url(url)
        try:
            await r.xadd(f"{name}:orders", {"data": data})
        finally:
            await r.aclose()


async def _cleanup(kind: str, url: str, name: str, stream: str = "orders") -> None:
    """Delete the JetStream stream, or the Redis stream ``<name>:<stream>``, a test used."""
    if kind == "nats":
        import nats

        client = await nats.connect(url)
        try:
            await client.jetstream().delete_stream(name.upper())
        except Exception:
            pass
        finally:
            await client.close()
    else:
        import redis.asyncio as redis

        r = redis.from_url(url)
        try:
            await r.delete(f"{name}:{stream}")
        finally:
            await r.aclose()


async def _consume_until(engine: Engine, trigger: TriggerRecord, runs: int, seconds: float = 30) -> int:
    """Run the trigger's consumer until ``runs`` runs of ``orders`` exist (then 0.5 s more)."""
    stop = asyncio.Event()
    consumer = consumer_for(engine, trigger)
    task = asyncio.create_task(consumer.run(stop))
    try:
        async with asyncio.timeout(seconds):
            while len((await engine.store.list_runs(workflow="orders"))[0]) < runs:
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # a duplicate would show up now
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
    return consumer.started


KILLED_CONSUMER = """
import asyncio, sys
from trellis.config import Settings
from trellis.registry import Registry
from trellis.runtime import Engine
from trellis.triggers import _consumers, consumer_for

database_url, name, stage = sys.argv[1:4]
original = _consumers.start_run

async def stalled(*args, **kwargs):
    if stage == "before_queue":
        print("RECEIVED", flush=True)
        await asyncio.sleep(3600)
    result = await original(*args, **kwargs)
    print("QUEUED", flush=True)
    await asyncio.sleep(3600)
    return result

_consumers.start_run = stalled

async def main():
    async with Engine.open(Settings(database_url=database_url), registry=Registry()) as engine:
        trigger = await engine.store.get_trigger(name)
        await consumer_for(engine, trigger).run(asyncio.Event())

asyncio.run(main())
"""


@pytest.mark.parametrize("kind", ["nats", "redis"])
@pytest.mark.parametrize("stage", ["before_queue", "after_queue"])
async def test_a_consumer_killed_before_acknowledging_leaves_the_message_to_be_redelivered_once(
    kind: str,
    stage: str,
    engine: Engine,
    database_url: str,
    name: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """SIGKILL between receipt and queueing (nothing queued) or between queueing and the
    acknowledgement (run queued, message not acknowledged): either way exactly one run."""
    url = request.getfixturevalue(f"{kind}_url")
    trigger = await (_nats_trigger if kind == "nats" else _redis_trigger)(engine, url, name)
    try:
        await _send(kind, url, name, {"id": "o-1"})
        script = tmp_path / "consumer.py"
        script.write_text(KILLED_CONSUMER)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            database_url,
            name,
            stage,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert process.stdout is not None
            line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
        finally:
            process.send_signal(signal.SIGKILL)
            _, errors = await asyncio.wait_for(process.communicate(), 10)
        assert line == ("RECEIVED" if stage == "before_queue" else "QUEUED"), errors.decode()[-2000:]
        queued = len((await engine.store.list_runs(workflow="orders"))[0])
        assert queued == (0 if stage == "before_queue" else 1)
        started = await _consume_until(engine, trigger, runs=1)
        runs, _ = await engine.store.list_runs(workflow="orders")
        assert [r.input for r in runs] == [{"order": "o-1"}]
        assert started == (1 if stage == "before_queue" else 0)  # after_queue: found by its key
        assert (runs[0].options or {})["trigger"]["name"] == name
    finally:
        await _cleanup(kind, url, name)


@pytest.mark.parametrize("kind", ["nats", "redis"])
async def test_a_message_that_cannot_become_a_run_is_dropped_with_the_reason_recorded(
    kind: str, engine: Engine, name: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(f"{kind}_url")
    trigger = await (_nats_trigger if kind == "nats" else _redis_trigger)(engine, url, name)
    try:
        await _send(kind, url, name, {"wrong": 1})
        await _send(kind, url, name, {"id": "o-2"})
        await _consume_until(engine, trigger, runs=1)
        runs, _ = await engine.store.list_runs(workflow="orders")
        assert [r.input for r in runs] == [{"order": "o-2"}]
        after = await engine.store.get_trigger(name)
        assert after is not None
        assert after.last_error is not None
        assert "input mapping" in after.last_error["detail"]
    finally:
        await _cleanup(kind, url, name)


@pytest.mark.parametrize("kind", ["nats", "redis"])
async def test_the_publisher_sends_every_event_of_every_run_in_order_once(
    kind: str, engine: Engine, name: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(f"{kind}_url")
    spec = PublisherSpec(
        kind=kind,
        url=url,
        subject=f"{name}.events",
        stream=name.upper() if kind == "nats" else f"{name}:events",
    )  # type: ignore[arg-type]
    publisher = EventPublisher(engine, name, spec)
    try:
        ids = []
        for order in ("a", "b"):
            run = await engine.submit("orders", {"order": order})
            await engine.execute(run.id)
            ids.append(run.id)
        sent = await publisher.publish_pending()
        assert await publisher.publish_pending() == 0  # the cursors moved: nothing twice
        expected = [(e.run_id, e.seq, e.type) for i in ids for e in await engine.store.list_events(i)]
        assert sent == len(expected)
        received = await _read_published(kind, url, name, len(expected))
        assert sorted(received, key=lambda e: (ids.index(e[0]), e[1])) == expected
        for run_id in ids:  # per run, in seq order, without gaps
            seqs = [s for r, s, _ in received if r == run_id]
            assert seqs == list(range(1, len(seqs) + 1))
        more = await engine.submit("orders", {"order": "c"})
        await engine.execute(more.id)
        assert await publisher.publish_pending() == len(await engine.store.list_events(more.id))
    finally:
        if publisher._sink is not None:
            await publisher._sink.close()
        await _cleanup(kind, url, name, "events")


async def test_a_publisher_pass_reads_live_and_recently_finished_runs_only(
    engine: Engine, name: str, redis_url: str
) -> None:
    """The pass's cost follows live and recent work: a run that finished before the watermark
    is not read again, while one stamped a minute late (a slow clock, a late commit) and an
    unfinished one still are."""
    publisher = EventPublisher(
        engine, name, PublisherSpec(kind="redis", url=redis_url, stream=f"{name}:events")
    )
    store = engine.store
    try:
        first = await engine.submit("orders", {"order": "a"})
        await engine.execute(first.id)
        before = datetime.now(UTC)
        assert await publisher.publish_pending() == len(await store.list_events(first.id))
        watermark = await store.publish_watermark(name)
        assert watermark is not None
        assert before - WATERMARK_LAG <= watermark <= datetime.now(UTC) - WATERMARK_LAG

        late = await engine.submit("orders", {"order": "late"})
        await engine.execute(late.id)
        await _stamp(engine, late.id, datetime.now(UTC) - timedelta(minutes=1))
        forgotten = await engine.submit("orders", {"order": "forgotten"})
        await engine.execute(forgotten.id)
        await _stamp(engine, forgotten.id, watermark - timedelta(seconds=1))
        queued = await engine.submit("orders", {"order": "queued"})  # run.queued: one event
        await _stamp(engine, queued.id, watermark - timedelta(hours=1), finished=False)

        recent = {run_id for run_id, _, _ in await store.publish_backlog(name, since=watermark)}
        assert recent == {late.id, queued.id}
        everything = {run_id for run_id, _, _ in await store.publish_backlog(name)}
        assert everything == {late.id, forgotten.id, queued.id}
        expected = len(await store.list_events(late.id)) + len(await store.list_events(queued.id))
        assert await publisher.publish_pending() == expected
        assert await publisher.publish_pending() == 0
    finally:
        if publisher._sink is not None:
            await publisher._sink.close()
        await _cleanup("redis", redis_url, name, "events")


async def _stamp(engine: Engine, run_id: str, at: datetime, *, finished: bool = True) -> None:
    """Date a run's last change (and its end) as a writer with another clock would have."""
    values: dict[str, Any] = {"updated_at": at, **({"finished_at": at} if finished else {})}

    def stamp(conn: Connection) -> None:
        conn.execute(update(runs).where(runs.c.id == run_id).values(**values))

    await engine.store._runner.write(stamp)


async def _read_published(kind: str, url: str, name: str, count: int) -> list[tuple[str, int, str]]:
    documents: list[dict[str, Any]] = []
    if kind == "nats":
        import nats

        client = await nats.connect(url)
        try:
            sub = await client.jetstream().pull_subscribe(f"{name}.events.>", stream=name.upper())
            while len(documents) < count:
                for message in await sub.fetch(batch=count, timeout=5):
                    documents.append(json.loads(message.data))
                    await message.ack()
        finally:
            await client.close()
    else:
        import redis.asyncio as redis

        r = redis.from_url(url)
        try:
            entries = await r.xrange(f"{name}:events")
            documents = [json.loads(fields[b"event"]) for _, fields in entries]
        finally:
            await r.aclose()
    return [(d["run_id"], d["seq"], d["type"]) for d in documents]

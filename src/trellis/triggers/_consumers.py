"""Message-bus triggers: runs from NATS JetStream messages and Redis stream entries.

Both consumers follow one rule: **acknowledge only after the run is durably queued**. A message
is received, mapped to a run input, submitted under the idempotency key
``trigger:<name>:<message id>`` (the JetStream stream sequence, the Redis entry id), and only
then acknowledged. A process that dies anywhere before the acknowledgement leaves the message
unacknowledged, so the bus delivers it again (JetStream after ``ack_wait``; Redis when another
consumer claims the idle pending entry) — and if the run had been queued already, the key finds
it instead of creating a second one.

A message whose payload cannot become a run input (not JSON where an object is needed, a
failed mapping, input the workflow's schema refuses) is dropped — terminated on JetStream,
acknowledged on Redis — and the reason is kept in the trigger's ``last_error``: redelivering
it would fail the same way forever. Other failures (the database unreachable) leave it to be
redelivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from trellis.errors import ValidationError
from trellis.runtime import Engine
from trellis.store import TriggerRecord
from trellis.triggers._specs import map_input
from trellis.triggers._start import start_run

log = logging.getLogger("trellis.triggers")


def _payload(data: bytes | str) -> Any:
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


class _Consumer:
    """What both consumers share: mapping a message to a run, and the acknowledgement rule."""

    def __init__(self, engine: Engine, trigger: TriggerRecord) -> None:
        self.engine = engine
        self.trigger = trigger
        self.spec: Mapping[str, Any] = trigger.spec
        self.started = 0
        """Runs this consumer created (deliveries that found their run already do not count)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(trigger={self.trigger.name!r})"

    async def start(self, message_id: str, bindings: Mapping[str, Any]) -> bool:
        """Queue the run of one message; True when it is queued (new or found), False to drop it.

        Raises whatever made the run impossible to queue *for now* (the caller does not
        acknowledge, so the message comes back).
        """
        try:
            run_input = map_input(self.trigger.name, self.spec, bindings)
            _, created = await start_run(
                self.engine, self.trigger, run_input, delivery=message_id, source={"message": message_id}
            )
        except ValidationError as exc:
            log.warning("trigger %s: dropping message %s: %s", self.trigger.name, message_id, exc.message)
            await self.engine.store.update_trigger(self.trigger.name, last_error=exc.to_problem())
            return False
        self.started += int(created)
        return True


class NatsConsumer(_Consumer):
    """A durable JetStream pull consumer (shared by every Trellis process) starting runs."""

    async def run(self, stop: asyncio.Event) -> None:
        import nats
        from nats.js.api import AckPolicy, ConsumerConfig
        from nats.js.errors import NotFoundError

        spec = self.spec
        stream, subject = str(spec["stream"]), str(spec["subject"])
        durable = spec.get("durable") or f"trellis-{self.trigger.name}".replace(".", "_")
        client = await nats.connect(str(spec["url"]), connect_timeout=5, max_reconnect_attempts=-1)
        try:
            js = client.jetstream()
            if spec.get("create_stream", True):
                try:
                    await js.stream_info(stream)
                except NotFoundError:
                    await js.add_stream(name=stream, subjects=[subject])
            config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=float(spec["ack_wait_seconds"]))
            subscription = await js.pull_subscribe(subject, durable=durable, stream=stream, config=config)
            while not stop.is_set():
                try:
                    messages = await subscription.fetch(batch=10, timeout=1.0)
                except TimeoutError:  # no message within the second (nats-py raises its own
                    continue  # TimeoutError, or asyncio's when the deadline ran out in between)
                for message in messages:
                    sequence = message.metadata.sequence.stream
                    bindings = {
                        "body": _payload(message.data),
                        "subject": message.subject,
                        "headers": dict(message.headers or {}),
                    }
                    try:
                        queued = await self.start(f"{stream}:{sequence}", bindings)
                    except Exception:
                        log.exception(
                            "trigger %s: message %s not queued; redelivering", self.trigger.name, sequence
                        )
                        await message.nak(delay=1.0)
                        continue
                    await (message.ack_sync() if queued else message.term())
        finally:
            with contextlib.suppress(TimeoutError):  # a close that hangs must not hold the stop up
                await asyncio.wait_for(client.close(), 5)


async def _redis(result: Any) -> Any:
    """redis-py types its asyncio client's replies as ``X | Awaitable[X]``; they are awaitables."""
    return await result


class RedisConsumer(_Consumer):
    """A Redis stream consumer group (shared by every Trellis process) starting runs."""

    def __init__(self, engine: Engine, trigger: TriggerRecord, *, consumer: str | None = None) -> None:
        super().__init__(engine, trigger)
        self.consumer = consumer or engine.owner
        """This process's name in the group; entries it leaves pending are claimed by others."""

    async def run(self, stop: asyncio.Event) -> None:
        import redis.asyncio as redis
        from redis.exceptions import ResponseError

        spec = self.spec
        stream = str(spec["stream"])
        group = spec.get("group") or f"trellis-{self.trigger.name}"
        idle_ms = int(float(spec["claim_idle_seconds"]) * 1000)
        client = redis.from_url(str(spec["url"]), decode_responses=True)
        try:
            try:
                await _redis(client.xgroup_create(stream, group, id="0", mkstream=True))
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            while not stop.is_set():
                # Entries another consumer received and never acknowledged (it died) come first.
                claimed = await _redis(
                    client.xautoclaim(stream, group, self.consumer, min_idle_time=idle_ms, count=10)
                )
                entries: list[tuple[str, dict[str, str]]] = list(claimed[1])
                if not entries:
                    reply = await _redis(
                        client.xreadgroup(group, self.consumer, {stream: ">"}, count=10, block=500)
                    )
                    for _, batch in reply or []:
                        entries.extend(batch)
                for entry_id, fields in entries:
                    if fields is None:  # deleted from the stream while pending
                        await _redis(client.xack(stream, group, entry_id))
                        continue
                    body = _payload(fields["data"]) if "data" in fields else dict(fields)
                    try:
                        await self.start(f"{stream}:{entry_id}", {"body": body, "fields": dict(fields)})
                    except Exception:
                        log.exception(
                            "trigger %s: entry %s not queued; it stays pending", self.trigger.name, entry_id
                        )
                        continue
                    await _redis(client.xack(stream, group, entry_id))
        finally:
            await client.aclose()


def consumer_for(engine: Engine, trigger: TriggerRecord) -> NatsConsumer | RedisConsumer:
    """The consumer of a ``nats`` or ``redis`` trigger."""
    if trigger.kind == "nats":
        return NatsConsumer(engine, trigger)
    if trigger.kind == "redis":
        return RedisConsumer(engine, trigger)
    raise ValueError(f"trigger {trigger.name!r} is a {trigger.kind} trigger, not a message-bus one")

"""Entry points: what starts runs besides ``POST /v1/runs``, and what follows them from outside.

* **Schedules** — cron + time zone + input, declared by a workflow (``schedules:``), in
  ``trellis.toml`` or over REST/CLI; exactly one run per tick across processes
  (:class:`Scheduler`).
* **Webhooks in** — ``POST /v1/hooks/{trigger}``, HMAC-signed, mapped by CEL, idempotent per
  delivery id (:func:`receive_webhook`).
* **Message bus** — NATS JetStream and Redis Streams consumers that acknowledge only once the
  run is queued (:class:`NatsConsumer`, :class:`RedisConsumer`), and an
  :class:`EventPublisher` sending run and node events to a subject or stream.
* **Webhooks out** — a run's callback URL receives its final document (and optionally each
  event), signed, retried with backoff, every attempt recorded (:class:`CallbackDispatcher`).
* **Single-node execution** — one node on a given state, for debugging (:func:`execute_node`).

Every start goes through :func:`start_run`, whose idempotency key (trigger name + delivery id)
is what makes redelivery safe. :class:`TriggerService` runs all of it inside ``trellis serve``
and ``trellis worker``.

.. versionadded:: 0.2
"""

from trellis.triggers._callbacks import FINAL_EVENTS, CallbackDispatcher
from trellis.triggers._consumers import NatsConsumer, RedisConsumer, consumer_for
from trellis.triggers._node_exec import execute_node
from trellis.triggers._publisher import EventPublisher, PublisherSpec
from trellis.triggers._scheduler import GRACE_SECONDS, Scheduler, first_tick
from trellis.triggers._service import (
    TriggerService,
    TriggerSettings,
    create_trigger,
    delete_trigger,
    get_trigger,
    set_enabled,
    sync_config_triggers,
)
from trellis.triggers._specs import KINDS, SecretUnavailable, check_trigger, map_input, read_secret
from trellis.triggers._start import delivery_key, start_run
from trellis.triggers._webhooks import receive_webhook, sign

__all__ = [
    "FINAL_EVENTS",
    "GRACE_SECONDS",
    "KINDS",
    "CallbackDispatcher",
    "EventPublisher",
    "NatsConsumer",
    "PublisherSpec",
    "RedisConsumer",
    "Scheduler",
    "SecretUnavailable",
    "TriggerService",
    "TriggerSettings",
    "check_trigger",
    "consumer_for",
    "create_trigger",
    "delete_trigger",
    "delivery_key",
    "execute_node",
    "first_tick",
    "get_trigger",
    "map_input",
    "read_secret",
    "receive_webhook",
    "set_enabled",
    "sign",
    "start_run",
    "sync_config_triggers",
]

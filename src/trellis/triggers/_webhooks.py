"""Webhooks in: ``POST /v1/hooks/{trigger}`` checked, mapped and turned into a run.

A delivery is accepted when its ``sha256=<hex>`` signature header is the HMAC-SHA256 of the raw
body under the trigger's secret (compared in constant time). Its delivery id header makes it
idempotent: a delivery id the trigger has seen answers with the run it started, and starts none.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping

from trellis.auth import Unauthorized
from trellis.errors import Conflict, NotFound, ValidationError
from trellis.runtime import Engine
from trellis.store import RunRecord
from trellis.triggers._specs import map_input, read_secret
from trellis.triggers._start import find_started, start_run


def sign(secret: bytes, body: bytes) -> str:
    """The signature header value of ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


async def receive_webhook(
    engine: Engine, name: str, body: bytes, headers: Mapping[str, str]
) -> tuple[RunRecord, bool]:
    """Check one delivery to webhook trigger ``name`` and start its run: ``(run, created)``.

    Args:
        headers: the request headers, names lower-cased.

    Raises:
        NotFound: no webhook trigger has this name.
        Conflict: the trigger is paused.
        Unauthorized: the signature is missing or wrong.
        ValidationError: no delivery id, a body that is not JSON, or a failed input mapping.
    """
    trigger = await engine.store.get_trigger(name)
    if trigger is None or trigger.kind != "webhook":
        raise NotFound(f"no webhook trigger named {name!r}", details={"trigger": name})
    if not trigger.enabled:
        raise Conflict(f"webhook trigger {name!r} is paused", details={"trigger": name})
    spec = trigger.spec
    presented = headers.get(str(spec["signature_header"]).lower(), "")
    expected = sign(read_secret(str(spec["secret"]), f"webhook trigger {name!r}"), body)
    if not presented or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise Unauthorized(
            f"webhook {name!r}: the {spec['signature_header']} header is missing or does not match "
            "sha256=<HMAC-SHA256 of the body under the trigger's secret>",
            details={"trigger": name},
        )
    delivery = headers.get(str(spec["delivery_header"]).lower(), "").strip()
    if not delivery:
        raise ValidationError(
            f"webhook {name!r}: the {spec['delivery_header']} header (a unique delivery id) is missing",
            details={"trigger": name},
        )
    started = await find_started(engine, name, delivery)
    if started is not None:
        return started, False
    try:
        payload = json.loads(body) if body else None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationError(f"webhook {name!r}: the body is not JSON: {exc}") from None
    run_input = map_input(name, spec, {"body": payload, "headers": dict(headers)})
    return await start_run(engine, trigger, run_input, delivery=delivery)

"""``http`` nodes, and the HTTP error mapping shared by ``llm`` and ``agent`` nodes.

Statuses map to error names that ``retry.on`` and ``catch`` match: 429 → ``RateLimited``
(with ``Retry-After``), 5xx → ``HttpError`` (retryable; ``Retry-After`` honoured on 503),
other 4xx → ``HttpError`` (not retryable), transport failures → ``ConnectionError``,
client-side timeouts → ``Timeout``. Calls of ``http`` nodes are guarded by one circuit breaker
per host (``http:<host:port>``) when the process configures an HTTP breaker policy.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Collection
from typing import Any

import httpx

from trellis.dsl.models import HttpNode
from trellis.errors import ConnectionFailed, HttpError, RateLimited, TimeoutExceeded, WorkflowError
from trellis.expressions import compile_template, render_value
from trellis.nodes._context import NodeContext
from trellis.nodes._env import BuildEnv, json_or_text
from trellis.nodes._guard import guarded
from trellis.nodes._wrapper import Body, Outcome
from trellis.resilience import breaker_key


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_for_status(
    response: httpx.Response, what: str, ok: Collection[int] | None = None
) -> WorkflowError | None:
    """The error a response stands for, or ``None`` when it is a success."""
    status = response.status_code
    if (ok is not None and status in ok) or (ok is None and status < 400):
        return None
    retry_after = retry_after_seconds(response.headers.get("retry-after"))
    snippet = response.text[:300] if response.content else ""
    details = {"status": status, "url": str(response.request.url), "body": snippet}
    if status == 429:
        return RateLimited(f"{what} answered 429 Too Many Requests", details=details, retry_after=retry_after)
    if status >= 500:
        return HttpError(
            f"{what} answered {status}", details=details, retryable=True, retry_after=retry_after
        )
    return HttpError(f"{what} answered {status}", details=details, retryable=False)


async def send(
    env: BuildEnv,
    method: str,
    url: str,
    *,
    what: str,
    ok: Collection[int] | None = None,
    timeout_seconds: float | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """Send one request, turning transport failures and error statuses into workflow errors."""
    try:
        response = await env.http().request(
            method,
            url,
            timeout=httpx.USE_CLIENT_DEFAULT if timeout_seconds is None else timeout_seconds,
            **kwargs,
        )
    except httpx.TimeoutException as exc:
        raise TimeoutExceeded(f"{what}: {type(exc).__name__} calling {url}", details={"url": url}) from exc
    except (httpx.TransportError, OSError) as exc:
        raise ConnectionFailed(f"{what}: cannot reach {url}: {exc}", details={"url": url}) from exc
    error = error_for_status(response, what, ok)
    if error is not None:
        raise error
    return response


def build(node_id: str, node: HttpNode, env: BuildEnv) -> Body:
    url = compile_template(node.url)
    ok = frozenset(node.ok_statuses) if node.ok_statuses is not None else None

    async def body(ctx: NodeContext) -> Outcome:
        target = url.render(ctx.bindings)
        request: dict[str, Any] = {
            "headers": render_value(node.headers, ctx.bindings),
            "params": render_value(node.query, ctx.bindings),
        }
        if node.body is not None:
            rendered = render_value(node.body, ctx.bindings, native=True)
            if isinstance(rendered, str):
                request["content"] = rendered
            else:
                request["json"] = rendered
        host = httpx.URL(target).netloc.decode("ascii", "replace") or target

        async def call() -> httpx.Response:
            return await send(env, node.method, target, what=f"http node {ctx.node!r}", ok=ok, **request)

        response = await guarded(ctx, env, breaker_key("http", host), env.http_breaker, call)
        return Outcome(
            result={
                "status": response.status_code,
                "headers": dict(response.headers),
                "body": json_or_text(response),
            }
        )

    return body

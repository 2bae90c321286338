"""Scraping a live ``/metrics`` endpoint."""

from __future__ import annotations

import time

import httpx

from trellis.workflows.performance.collectors._parse import parse_metrics
from trellis.workflows.performance.collectors._types import Scrape, ServerType
from trellis.workflows.performance.errors import MetricsFormatError, ScrapeError

DEFAULT_TIMEOUT = 5.0
"""Seconds allowed for one scrape (connect + read)."""


async def fetch(
    url: str,
    client: httpx.AsyncClient | None = None,
    *,
    server: ServerType | str | None = None,
    timeout_seconds: float = DEFAULT_TIMEOUT,
) -> Scrape:
    """Scrape ``url`` and parse the answer into a :class:`Scrape` stamped with the read time.

    Args:
        url: the full ``/metrics`` URL of one instance.
        client: a client to reuse (its connection pool); a short-lived one otherwise.
        server: the server type; detected from the metric names when omitted.
        timeout_seconds: seconds for the whole request.

    Raises:
        ScrapeError: the endpoint was unreachable, timed out, answered with a non-2xx status,
            or answered with something that is not vLLM / TGI / SGLang metrics text. It is an
            *error* of the observation, never a verdict about the instance's health.
    """
    own = client is None
    http = client if client is not None else httpx.AsyncClient()
    try:
        response = await http.get(url, timeout=timeout_seconds, headers={"Accept": "text/plain"})
    except httpx.TimeoutException as exc:
        raise ScrapeError(url, f"no answer within {timeout_seconds:g} s ({type(exc).__name__})") from exc
    except httpx.HTTPError as exc:
        raise ScrapeError(url, f"{type(exc).__name__}: {exc}") from exc
    finally:
        if own:
            await http.aclose()
    taken = time.time()
    if response.status_code >= 300:
        raise ScrapeError(
            url, f"HTTP {response.status_code}: {response.text[:200]!r}", status=response.status_code
        )
    try:
        return parse_metrics(response.text, server=server, timestamp=taken, source=url)
    except MetricsFormatError as exc:
        raise ScrapeError(url, exc.reason, status=response.status_code) from exc

"""``GET /metrics``: Prometheus metrics (see :mod:`trellis.observability.metrics`); no key needed.

The app's :class:`~trellis.observability.Metrics` is made at the first scrape and kept on the
app, so instruments registered on it live as long as the app.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from trellis.api._app import api_context
from trellis.observability import CONTENT_TYPE, Metrics

router = APIRouter()


def app_metrics(request: Request) -> Metrics:
    """The :class:`Metrics` of the app serving ``request`` (made on first use)."""
    metrics: Metrics | None = getattr(request.app.state, "trellis_metrics", None)
    if metrics is None:
        engine = api_context(request).engine
        metrics = Metrics(engine.store, registry=engine.instruments.registry)
        request.app.state.trellis_metrics = metrics
    return metrics


@router.get(
    "/metrics",
    tags=["operations"],
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}},
)
async def metrics(request: Request) -> Response:
    """Runs, nodes, retries, tokens, queue, breakers and agents (text exposition format)."""
    return Response(await app_metrics(request).render(), media_type=CONTENT_TYPE)

"""The REST API (DESIGN §4): FastAPI routers over an :class:`~trellis.runtime.Engine`.

=======================================================  ===========================================
route                                                    what
=======================================================  ===========================================
``GET /healthz``, ``GET /readyz``                        liveness; readiness (db, migrations, worker)
``POST /v1/workflows``                                   register (JSON or YAML) → ``{name, version,
                                                         hash}``, 201 new / 200 identical
``GET /v1/workflows[/{name}[/versions[/{v}]]]``          list, latest, versions, one version
``GET /v1/workflows/{name}[/versions/{v}]/graph``        Mermaid flowchart and node list
``POST /v1/runs``                                        create (``Idempotency-Key``, ``wait``)
``GET /v1/runs``                                         list: status, workflow, created range, cursor
``GET /v1/runs/{id}[/nodes|/events|/state|/history]``    a run and its records
``GET /v1/runs/{id}/history/{checkpoint}/diff``          what changed in a state version
``GET /v1/runs/{id}/stream``, ``/v1/runs/{id}/ws``,      live events: SSE, WebSocket
``/ws``
``POST /v1/runs/{id}/cancel|pause|resume|retry|``        steer a run
``rollback|approve|reject``
``GET /v1/queue``, ``GET /v1/audit``                     queue and workers; audit log (admin)
``POST|GET /v1/agents``, ``GET|PATCH|PUT                 the agent registry; enable, disable;
/v1/agents/{name}``, ``POST .../enable|disable``          rolling health of one agent
``GET /v1/agents/{name}/health``
``GET /v1/breakers[/{key}]``,                            shared circuit breakers; close one by hand
``POST /v1/breakers/{key}/reset``
``GET /v1/system-events``                                ``breaker.*`` and ``agent.*`` events
``GET /metrics``                                         Prometheus exposition (no key needed)
``GET /v1/metrics/summary?workflow=&since=``             run analytics: success rate, p50/p95,
                                                         node failures and retries, LLM tokens
``GET /v1/runs/{id}/logs``                               log lines the run's nodes emitted
``GET /``, ``GET /ui/...``                               the dashboard (static files, no key needed)
=======================================================  ===========================================

Access (roles and permissions) is described in :mod:`trellis.auth`.
"""

from trellis.api._app import ApiContext, ApiSettings, create_app

__all__ = ["ApiContext", "ApiSettings", "create_app"]

"""Rollout targets: where configuration is applied, traffic is weighted and restored.

:class:`RolloutTarget` is the one interface the rollout stage talks to. :class:`HttpRolloutTarget`
drives instances through a small admin HTTP API. vLLM, TGI and SGLang have no such API
themselves: in production it is served by a sidecar or the deployment tooling (which rewrites
the launch flags and restarts the server); the bundled simulator
(:mod:`trellis.workflows.performance.simulator`) serves it natively.

Admin endpoint contract (``admin_url`` = instance base URL + ``/admin``), JSON bodies:

``GET {admin_url}/config``
    200 ``{"config": {knob: value}, "original": {knob: value}, "weight": float}``: the
    configuration in force, the one the instance started with, and its traffic share.
``POST {admin_url}/config`` with ``{"config": {knob: value}}``
    Merge the given knobs into the configuration in force (keys are the knob ids of
    :mod:`trellis.workflows.performance.optimization`, e.g. ``max_num_seqs``). 200 with the
    resulting ``{"config": ...}``; 422 (problem details) naming the unknown knob or invalid
    value. Idempotent: applying the same configuration twice changes nothing.
``POST {admin_url}/restore``
    Put the original configuration back. 200 ``{"config": original}``; idempotent.
``POST {admin_url}/weight`` with ``{"weight": 0..1}``
    This instance's share of the fleet's traffic. When a router is configured instead
    (``router_url``), weights go to it as ``POST {router_url}`` with
    ``{"weights": {instance_id: share}}``.

Any non-2xx answer or transport error raises
:class:`~trellis.workflows.performance.errors.RolloutTargetError`. When the performance-agent
workflow drives a target, its requests carry ``X-Trellis-Run``, ``X-Trellis-Node`` and
``X-Trellis-Stage`` headers, so an admin endpoint can log which run and rollout stage changed it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import httpx

from trellis.workflows.performance.errors import RolloutTargetError


@dataclass(frozen=True, slots=True)
class Instance:
    """One serving instance: where its metrics are and where it is administered."""

    id: str
    base_url: str
    """``http://host:port`` without a trailing slash."""
    metrics_path: str = "/metrics"
    admin_path: str = "/admin"

    @property
    def metrics_url(self) -> str:
        return self.base_url.rstrip("/") + self.metrics_path

    @property
    def admin_url(self) -> str:
        return self.base_url.rstrip("/") + self.admin_path

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "base_url": self.base_url, "metrics_url": self.metrics_url}


@dataclass(frozen=True, slots=True)
class Split:
    """Which instances run the new configuration at a given share."""

    share: float
    canary: tuple[str, ...]
    baseline: tuple[str, ...]
    applied: tuple[str, ...] = ()
    """Canary instances whose configuration was changed by this call."""
    unchanged: tuple[str, ...] = ()
    """Canary instances that already ran the configuration (nothing sent)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "share": self.share,
            "canary": list(self.canary),
            "baseline": list(self.baseline),
            "applied": list(self.applied),
            "unchanged": list(self.unchanged),
        }


def split_instances(ids: Sequence[str], share: float) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The first ``ceil(share * n)`` instances are canaries (at least one when ``share > 0``).

    The order is stable, so stage 10 % -> 50 % -> 100 % only ever adds canaries.

    Raises:
        ValueError: ``share`` is outside ``[0, 1]``.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be within [0, 1], got {share!r}")
    count = min(len(ids), math.ceil(round(share * len(ids), 9)))
    return tuple(ids[:count]), tuple(ids[count:])


@runtime_checkable
class RolloutTarget(Protocol):
    """Where a rollout acts. Every method is idempotent, so a resumed stage may repeat it."""

    @property
    def instances(self) -> Sequence[Instance]: ...

    async def apply(self, config: Mapping[str, Any], share: float) -> Split:
        """Run ``config`` on the first ``share`` of instances; the rest keep theirs."""
        ...

    async def set_weights(self, weights: Mapping[str, float]) -> None:
        """Set each instance's share of traffic (shares sum to 1)."""
        ...

    async def restore(self) -> tuple[str, ...]:
        """Put every instance back on its original configuration; returns the instance ids."""
        ...

    async def config(self, instance_id: str) -> dict[str, Any]:
        """The configuration an instance currently runs."""
        ...


class HttpRolloutTarget:
    """A :class:`RolloutTarget` over the admin HTTP contract in the module docstring.

    Args:
        instances: the fleet, in rollout order (the first ones become canaries first).
        client: an ``httpx.AsyncClient`` to reuse; one is created (and closed by ``aclose``)
            otherwise.
        router_url: a traffic router that takes all weights at once; per-instance
            ``/weight`` calls otherwise.
        timeout_seconds: per admin request.
    """

    def __init__(
        self,
        instances: Sequence[Instance],
        *,
        client: httpx.AsyncClient | None = None,
        router_url: str | None = None,
        timeout_seconds: float = 10.0,
    ) -> None:
        ids = [i.id for i in instances]
        if len(set(ids)) != len(ids):
            raise ValueError(f"instance ids must be unique, got {ids}")
        self._instances = tuple(instances)
        self._by_id = {i.id: i for i in instances}
        self._client = client or httpx.AsyncClient()
        self._owns_client = client is None
        self._router_url = router_url
        self._timeout = timeout_seconds

    @property
    def instances(self) -> Sequence[Instance]:
        return self._instances

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def _call(self, instance: str, action: str, method: str, url: str, body: Any = None) -> Any:
        try:
            response = await self._client.request(method, url, json=body, timeout=self._timeout)
        except httpx.HTTPError as exc:
            raise RolloutTargetError(instance, action, f"{url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 300:
            raise RolloutTargetError(
                instance,
                action,
                f"{url} answered {response.status_code}: {response.text[:300]}",
                status=response.status_code,
            )
        try:
            return response.json()
        except ValueError as exc:
            raise RolloutTargetError(
                instance, action, f"{url} answered non-JSON: {response.text[:200]!r}"
            ) from exc

    def _instance(self, instance_id: str) -> Instance:
        try:
            return self._by_id[instance_id]
        except KeyError:
            raise RolloutTargetError(
                instance_id, "config", f"unknown instance; known: {sorted(self._by_id)}"
            ) from None

    async def config(self, instance_id: str) -> dict[str, Any]:
        instance = self._instance(instance_id)
        answer = await self._call(instance_id, "config", "GET", instance.admin_url + "/config")
        return dict(answer.get("config", {}))

    async def apply(self, config: Mapping[str, Any], share: float) -> Split:
        canary, baseline = split_instances([i.id for i in self._instances], share)
        applied: list[str] = []
        unchanged: list[str] = []
        for instance_id in canary:
            current = await self.config(instance_id)
            if all(current.get(k) == v for k, v in config.items()):
                unchanged.append(instance_id)
                continue
            url = self._by_id[instance_id].admin_url + "/config"
            await self._call(instance_id, "apply", "POST", url, {"config": dict(config)})
            applied.append(instance_id)
        return Split(share, canary, baseline, tuple(applied), tuple(unchanged))

    async def set_weights(self, weights: Mapping[str, float]) -> None:
        unknown = sorted(set(weights) - set(self._by_id))
        if unknown:
            raise RolloutTargetError(
                ",".join(unknown), "weights", f"unknown instances; known: {sorted(self._by_id)}"
            )
        if self._router_url is not None:
            await self._call("router", "weights", "POST", self._router_url, {"weights": dict(weights)})
            return
        for instance_id, weight in weights.items():
            url = self._by_id[instance_id].admin_url + "/weight"
            await self._call(instance_id, "weights", "POST", url, {"weight": weight})

    async def restore(self) -> tuple[str, ...]:
        for instance in self._instances:
            await self._call(instance.id, "restore", "POST", instance.admin_url + "/restore")
        return tuple(i.id for i in self._instances)

    def __repr__(self) -> str:
        return (
            f"HttpRolloutTarget(instances={[i.id for i in self._instances]}, router_url={self._router_url!r})"
        )

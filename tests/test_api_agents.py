"""trellis.api agents: the registry (/v1/agents), breakers (/v1/breakers), system events, /metrics."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from trellis.auth import Role, create_key
from trellis.errors import ConnectionFailed
from trellis.resilience import BreakerPolicy
from trellis.runtime import Engine

NLP = {"name": "nlp", "base_url": "http://127.0.0.1:9100/nlp/", "timeout_seconds": 2.5}


@pytest.fixture
async def keys(api_engine: Engine) -> dict[str, str]:
    """One key per role, named after it: ``{"viewer": "trl_...", ...}``."""
    return {
        role.value: (await create_key(api_engine.store, name=role.value, role=role)).secret for role in Role
    }


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def register(client: httpx.AsyncClient, body: dict[str, Any] = NLP) -> dict[str, Any]:
    response = await client.post("/v1/agents", json=body)
    assert response.status_code == 201, response.text
    document: dict[str, Any] = response.json()
    return document


async def open_breaker(engine: Engine, key: str, **policy: Any) -> None:
    """Make ``key`` open for real: one failure with a threshold of one."""
    breaker_policy = BreakerPolicy(failure_threshold=1, **policy)
    admission, _ = await engine.breakers.admit(key, breaker_policy)
    await engine.breakers.failed(admission, ConnectionFailed(f"{key}: connection refused"))


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` of a Prometheus text exposition."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class TestRegister:
    async def test_a_new_agent_is_a_201_document_with_every_default_filled_in(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.post("/v1/agents", json=NLP)
        assert response.status_code == 201
        assert response.headers["location"] == "/v1/agents/nlp"
        doc = response.json()
        assert doc["name"] == "nlp"
        assert doc["base_url"] == "http://127.0.0.1:9100/nlp"  # trailing slash dropped
        assert (doc["timeout_seconds"], doc["invoke_path"], doc["health_path"]) == (2.5, "/invoke", "/health")
        assert doc["breaker"]["failure_threshold"] == 5
        assert (doc["enabled"], doc["healthy"], doc["revision"]) == (True, True, 1)
        assert (await client.get("/v1/agents/nlp")).json() == doc
        assert [a["name"] for a in (await client.get("/v1/agents")).json()["agents"]] == ["nlp"]

    async def test_an_agent_can_be_registered_disabled(self, client: httpx.AsyncClient) -> None:
        doc = await register(client, {**NLP, "enabled": False})
        assert doc["enabled"] is False

    async def test_a_taken_name_is_a_409_problem(self, client: httpx.AsyncClient) -> None:
        await register(client)
        response = await client.post("/v1/agents", json={**NLP, "base_url": "http://elsewhere:1"})
        assert response.status_code == 409
        assert response.headers["content-type"] == "application/problem+json"
        assert "'nlp' is already registered" in response.json()["detail"]
        assert (await client.get("/v1/agents/nlp")).json()["base_url"] == "http://127.0.0.1:9100/nlp"

    @pytest.mark.parametrize(
        ("change", "path"),
        [
            ({"base_url": "ftp://files"}, "/base_url"),
            ({"breaker": {"failure_threshold": 0}}, "/breaker/failure_threshold"),
            ({"health": {"threshold": 2}}, "/health/threshold"),
            ({"invoke_path": "invoke"}, "/invoke_path"),
            ({"response_schema": {"type": "nope"}}, "/response_schema"),
            ({"retries": 3}, "/retries"),
            ({"name": "Not A Name"}, "/name"),
            ({"name": None}, "/name"),
        ],
    )
    async def test_an_invalid_spec_is_a_422_naming_the_json_path(
        self, client: httpx.AsyncClient, change: dict[str, Any], path: str
    ) -> None:
        response = await client.post("/v1/agents", json={**NLP, **change})
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["error"] == "ValidationError"
        assert problem["details"]["path"] == path
        assert (await client.get("/v1/agents")).json()["agents"] == []

    async def test_a_secret_in_clear_is_refused_and_never_echoed(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/v1/agents", json={**NLP, "auth": {"secret": "hunter2"}})
        assert response.status_code == 422
        problem = response.json()
        assert problem["details"]["path"] == "/auth/secret"
        assert "secret reference, env:NAME or file:/path" in problem["detail"]
        assert "hunter2" not in response.text
        assert (await client.get("/v1/agents/nlp")).status_code == 404

    async def test_a_secret_reference_is_stored_as_given(self, client: httpx.AsyncClient) -> None:
        doc = await register(client, {**NLP, "auth": {"secret": "env:NLP_TOKEN", "header": "X-Token"}})
        assert doc["auth"] == {"header": "X-Token", "scheme": "Bearer", "secret": "env:NLP_TOKEN"}

    async def test_a_body_that_is_not_an_object_is_a_422(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/v1/agents", json=["nlp"])
        assert response.status_code == 422
        assert response.json()["errors"][0]["location"] == "body"


class TestChange:
    async def test_patch_replaces_the_fields_given_and_keeps_the_rest(
        self, client: httpx.AsyncClient
    ) -> None:
        await register(client, {**NLP, "description": "entities"})
        response = await client.patch(
            "/v1/agents/nlp", json={"timeout_seconds": 9, "breaker": {"failure_threshold": 2}}
        )
        assert response.status_code == 200
        doc = response.json()
        assert (doc["changed"], doc["revision"]) == (True, 2)
        assert (doc["timeout_seconds"], doc["description"]) == (9, "entities")
        assert doc["breaker"]["failure_threshold"] == 2
        again = (await client.patch("/v1/agents/nlp", json={"timeout_seconds": 9})).json()
        assert (again["changed"], again["revision"]) == (False, 2)

    async def test_put_replaces_the_whole_spec(self, client: httpx.AsyncClient) -> None:
        await register(client, {**NLP, "description": "entities"})
        doc = (await client.put("/v1/agents/nlp", json={"base_url": "http://127.0.0.1:9200"})).json()
        assert (doc["base_url"], doc["timeout_seconds"], doc["description"]) == (
            "http://127.0.0.1:9200",
            30.0,
            None,
        )
        assert doc["changed"] is True
        missing = await client.put("/v1/agents/nlp", json={"timeout_seconds": 1})
        assert missing.status_code == 422
        assert missing.json()["details"]["path"] == "/base_url"

    async def test_a_document_read_can_be_put_back_unchanged(self, client: httpx.AsyncClient) -> None:
        doc = await register(client)
        again = (await client.put("/v1/agents/nlp", json=doc)).json()
        assert (again["changed"], again["revision"]) == (False, 1)

    async def test_changes_are_checked_like_registrations(self, client: httpx.AsyncClient) -> None:
        await register(client)
        clear = await client.patch("/v1/agents/nlp", json={"auth": {"secret": "hunter2"}})
        assert clear.status_code == 422
        assert clear.json()["details"]["path"] == "/auth/secret"
        renamed = await client.patch("/v1/agents/nlp", json={"name": "other"})
        assert renamed.status_code == 422
        assert renamed.json()["details"]["path"] == "/name"
        assert (await client.get("/v1/agents/nlp")).json()["revision"] == 1

    async def test_unknown_agents_are_404_problems(self, client: httpx.AsyncClient) -> None:
        for method, path in [
            ("GET", "/v1/agents/nope"),
            ("PATCH", "/v1/agents/nope"),
            ("PUT", "/v1/agents/nope"),
            ("POST", "/v1/agents/nope/enable"),
            ("POST", "/v1/agents/nope/disable"),
            ("GET", "/v1/agents/nope/health"),
        ]:
            body = {"base_url": "http://x:1"} if method in ("PATCH", "PUT") else None
            response = await client.request(method, path, json=body)
            assert response.status_code == 404, (method, path, response.text)
            assert response.headers["content-type"] == "application/problem+json"

    async def test_disable_and_enable_flip_the_flag_and_record_events(
        self, client: httpx.AsyncClient
    ) -> None:
        await register(client)
        disabled = (await client.post("/v1/agents/nlp/disable")).json()
        assert (disabled["enabled"], disabled["revision"]) == (False, 2)
        assert (await client.post("/v1/agents/nlp/enable")).json()["enabled"] is True
        events = (await client.get("/v1/system-events", params={"subject": "nlp"})).json()["events"]
        assert [e["type"] for e in events] == ["agent.registered", "agent.disabled", "agent.enabled"]

    async def test_patch_can_disable_too(self, client: httpx.AsyncClient) -> None:
        await register(client)
        doc = (await client.patch("/v1/agents/nlp", json={"enabled": False})).json()
        assert (doc["enabled"], doc["changed"]) == (False, True)

    async def test_health_reports_window_statistics_and_the_breaker(
        self, client: httpx.AsyncClient, api_engine: Engine
    ) -> None:
        await register(client)
        api_engine.health.observe("nlp", ok=True, latency_ms=10.0)
        api_engine.health.observe("nlp", ok=False, latency_ms=None, error="HTTP 503")
        await api_engine.health.flush()
        await open_breaker(api_engine, "agent:nlp")
        report = (await client.get("/v1/agents/nlp/health")).json()
        assert (report["agent"], report["healthy"], report["samples"], report["success_rate"]) == (
            "nlp",
            True,
            2,
            0.5,
        )
        assert report["latency_ms"]["p50"] == 10.0
        assert report["breaker"] == "open"


class TestBreakers:
    async def test_an_open_breaker_is_listed_with_its_next_trial_time(
        self, client: httpx.AsyncClient, api_engine: Engine
    ) -> None:
        await open_breaker(api_engine, "agent:nlp", recovery_seconds=45)
        listed = (await client.get("/v1/breakers")).json()["breakers"]
        assert [(b["key"], b["state"]) for b in listed] == [("agent:nlp", "open")]
        breaker = listed[0]
        assert breaker["policy"]["recovery_seconds"] == 45
        assert breaker["last_error"]["error"] == "ConnectionError"
        opened = datetime.fromisoformat(breaker["opened_at"])
        assert datetime.fromisoformat(breaker["next_trial_at"]) == opened + timedelta(seconds=45)
        assert (await client.get("/v1/breakers/agent:nlp")).json() == breaker

    async def test_a_closed_breaker_has_no_next_trial_and_counts_its_recent_failures(
        self, client: httpx.AsyncClient, api_engine: Engine
    ) -> None:
        policy = BreakerPolicy(failure_threshold=3)
        admission, _ = await api_engine.breakers.admit("http:127.0.0.1:9300", policy)
        await api_engine.breakers.failed(admission, ConnectionFailed("refused"))
        breaker = (await client.get("/v1/breakers/http:127.0.0.1:9300")).json()
        assert (breaker["state"], breaker["recent_failures"], breaker["next_trial_at"]) == ("closed", 1, None)

    async def test_reset_closes_it_records_who_did_and_is_audited(
        self, client: httpx.AsyncClient, api_engine: Engine, keys: dict[str, str]
    ) -> None:
        await open_breaker(api_engine, "agent:nlp")
        response = await client.post("/v1/breakers/agent:nlp/reset", headers=bearer(keys["operator"]))
        assert response.status_code == 200, response.text
        assert (response.json()["state"], response.json()["next_trial_at"]) == ("closed", None)
        events = (
            await client.get(
                "/v1/system-events",
                params={"type": "breaker.", "subject": "agent:nlp"},
                headers=bearer(keys["viewer"]),
            )
        ).json()["events"]
        assert [e["type"] for e in events] == ["breaker.opened", "breaker.closed"]
        assert events[-1]["data"] == {
            "key": "agent:nlp",
            "previous": "open",
            "reason": "reset",
            "by": "operator",
        }
        audit = (await client.get("/v1/audit", headers=bearer(keys["admin"]))).json()["records"]
        assert [(r["actor"], r["method"], r["path"], r["status"]) for r in audit] == [
            ("operator", "POST", "/v1/breakers/agent:nlp/reset", 200)
        ]

    async def test_unknown_keys_are_404_problems(self, client: httpx.AsyncClient) -> None:
        for method, path in [("GET", "/v1/breakers/agent:nope"), ("POST", "/v1/breakers/agent:nope/reset")]:
            response = await client.request(method, path)
            assert response.status_code == 404, path
            assert "agent:nope" in response.json()["detail"]
        assert (await client.get("/v1/breakers")).json()["breakers"] == []


class TestSystemEvents:
    async def test_events_page_by_id_and_filter_by_type_prefix(
        self, client: httpx.AsyncClient, api_engine: Engine
    ) -> None:
        await register(client)
        await open_breaker(api_engine, "agent:nlp")
        everything = (await client.get("/v1/system-events")).json()
        assert [e["type"] for e in everything["events"]] == ["agent.registered", "breaker.opened"]
        assert everything["next_after"] is None
        first = (await client.get("/v1/system-events", params={"limit": 1})).json()
        assert [e["type"] for e in first["events"]] == ["agent.registered"]
        rest = (await client.get("/v1/system-events", params={"after": first["next_after"]})).json()
        assert [e["type"] for e in rest["events"]] == ["breaker.opened"]
        agents = (await client.get("/v1/system-events", params={"type": "agent."})).json()["events"]
        assert [e["subject"] for e in agents] == ["nlp"]


class TestMetrics:
    async def test_breaker_and_agent_gauges_in_prometheus_text(
        self, client: httpx.AsyncClient, api_engine: Engine, keys: dict[str, str]
    ) -> None:
        response = await client.post(
            "/v1/agents", json={**NLP, "enabled": False}, headers=bearer(keys["operator"])
        )
        assert response.status_code == 201
        await open_breaker(api_engine, "agent:nlp")
        scrape = await client.get("/metrics")  # no key: like /healthz
        assert scrape.status_code == 200
        assert scrape.headers["content-type"].startswith("text/plain")
        samples = metric_samples(scrape.text)
        assert samples[("trellis_breaker_state", (("key", "agent:nlp"),))] == 2
        assert samples[("trellis_breaker_open", (("key", "agent:nlp"),))] == 1
        assert samples[("trellis_agent_healthy", (("agent", "nlp"),))] == 1
        assert samples[("trellis_agent_enabled", (("agent", "nlp"),))] == 0

        await client.post("/v1/breakers/agent:nlp/reset", headers=bearer(keys["operator"]))
        samples = metric_samples((await client.get("/metrics")).text)
        assert samples[("trellis_breaker_state", (("key", "agent:nlp"),))] == 0
        assert samples[("trellis_breaker_open", (("key", "agent:nlp"),))] == 0

    async def test_an_empty_store_is_still_a_valid_scrape(self, client: httpx.AsyncClient) -> None:
        families = {f.name for f in text_string_to_metric_families((await client.get("/metrics")).text)}
        assert {"trellis_breaker_state", "trellis_agent_healthy"} <= families


class TestRoles:
    async def test_a_viewer_reads_but_cannot_register_change_or_reset(
        self, client: httpx.AsyncClient, api_engine: Engine, keys: dict[str, str]
    ) -> None:
        viewer, operator = bearer(keys["viewer"]), bearer(keys["operator"])
        refused = await client.post("/v1/agents", json=NLP, headers=viewer)
        assert refused.status_code == 403
        assert "may not register" in refused.json()["detail"]
        assert (await client.post("/v1/agents", json=NLP, headers=operator)).status_code == 201
        assert (
            await client.patch("/v1/agents/nlp", json={"timeout_seconds": 1}, headers=viewer)
        ).status_code == 403
        assert (await client.post("/v1/agents/nlp/disable", headers=viewer)).status_code == 403
        await open_breaker(api_engine, "agent:nlp")
        assert (await client.post("/v1/breakers/agent:nlp/reset", headers=viewer)).status_code == 403
        assert (await client.get("/v1/breakers/agent:nlp", headers=viewer)).json()["state"] == "open"
        assert (await client.get("/v1/agents/nlp", headers=viewer)).json()["timeout_seconds"] == 2.5
        assert (await client.get("/v1/agents", headers={})).status_code == 401

    async def test_an_approver_cannot_reset_a_breaker(
        self, client: httpx.AsyncClient, api_engine: Engine, keys: dict[str, str]
    ) -> None:
        await open_breaker(api_engine, "agent:nlp")
        response = await client.post("/v1/breakers/agent:nlp/reset", headers=bearer(keys["approver"]))
        assert response.status_code == 403
        assert (await client.get("/v1/breakers/agent:nlp", headers=bearer(keys["approver"]))).json()[
            "state"
        ] == "open"

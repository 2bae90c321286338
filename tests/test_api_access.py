"""trellis.api access: API keys and roles (401, 403), the audit log, `trellis keys`, and serve's bind guard."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from typer.testing import CliRunner

from api_support import GATE, HELLO, register, wait_for_status
from trellis.api import create_app
from trellis.auth import Role, create_key
from trellis.cli import app as cli
from trellis.cli._serve import is_loopback
from trellis.config import Settings
from trellis.queue import Worker
from trellis.registry import Registry
from trellis.runtime import Engine


@pytest.fixture
async def keys(api_engine: Engine) -> dict[str, str]:
    """One key per role, named after it: ``{"viewer": "trl_...", ...}``."""
    return {
        role.value: (await create_key(api_engine.store, name=role.value, role=role)).secret for role in Role
    }


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class TestOpenApi:
    async def test_without_keys_everyone_is_the_anonymous_admin(self, client: httpx.AsyncClient) -> None:
        await register(client, HELLO)
        assert (await client.get("/v1/runs")).status_code == 200
        records = (await client.get("/v1/audit")).json()["records"]
        assert [(r["actor"], r["role"], r["method"], r["path"], r["status"]) for r in records] == [
            ("anonymous", "admin", "POST", "/v1/workflows", 201)
        ]


class TestAuthentication:
    async def test_a_missing_key_is_a_401_saying_how_to_send_one(
        self, client: httpx.AsyncClient, keys: dict[str, str]
    ) -> None:
        response = await client.get("/v1/runs")
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer realm="trellis"'
        assert response.headers["content-type"] == "application/problem+json"
        assert "Authorization: Bearer" in response.json()["detail"]

    @pytest.mark.parametrize(
        "mangle", [lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"), lambda k: "trl_x", str.upper]
    )
    async def test_a_wrong_key_is_a_401(
        self, client: httpx.AsyncClient, keys: dict[str, str], mangle: object
    ) -> None:
        response = await client.get("/v1/runs", headers=bearer(mangle(keys["admin"])))  # type: ignore[operator]
        assert response.status_code == 401
        assert "not valid" in response.json()["detail"]

    async def test_a_revoked_key_is_refused(
        self, client: httpx.AsyncClient, keys: dict[str, str], api_engine: Engine
    ) -> None:
        assert (await client.get("/v1/runs", headers=bearer(keys["viewer"]))).status_code == 200
        assert [k.name for k in await api_engine.store.revoke_api_key("viewer")] == ["viewer"]
        assert (await client.get("/v1/runs", headers=bearer(keys["viewer"]))).status_code == 401

    async def test_x_api_key_works_and_probes_need_no_key(
        self, client: httpx.AsyncClient, keys: dict[str, str]
    ) -> None:
        assert (await client.get("/v1/runs", headers={"X-API-Key": keys["viewer"]})).status_code == 200
        assert (await client.get("/v1/runs", params={"api_key": keys["viewer"]})).status_code == 401
        for path in ("/healthz", "/openapi.json"):
            assert (await client.get(path)).status_code == 200, path
        assert (await client.get("/readyz")).status_code in (200, 503)

    async def test_the_database_holds_a_salted_hash_never_the_key(
        self, api_engine: Engine, keys: dict[str, str]
    ) -> None:
        stored = {k.name: k for k in await api_engine.store.list_api_keys()}
        for name, secret in keys.items():
            record = stored[name]
            assert secret.startswith(f"trl_{record.id}")
            assert secret not in (record.secret_hash, record.salt)
            assert len(record.secret_hash) == 64
            assert secret not in repr(record)
            assert "hash" not in json.dumps(record.to_dict())
        assert len({k.salt for k in stored.values()}) == len(stored)


class TestRoles:
    async def test_a_viewer_reads_and_may_not_write(
        self, client: httpx.AsyncClient, keys: dict[str, str]
    ) -> None:
        viewer = bearer(keys["viewer"])
        assert (await client.get("/v1/workflows", headers=viewer)).status_code == 200
        response = await client.post("/v1/runs", json={"workflow": "hello"}, headers=viewer)
        assert response.status_code == 403
        problem = response.json()
        assert "'viewer' has role 'viewer', which may not submit" in problem["detail"]
        assert "operator, admin" in problem["detail"]
        assert (await client.get("/v1/audit", headers=viewer)).status_code == 403

    async def test_an_operator_starts_runs_but_may_not_approve_them(
        self, client: httpx.AsyncClient, keys: dict[str, str], worker: Worker
    ) -> None:
        operator = bearer(keys["operator"])
        register_response = await client.post(
            "/v1/workflows", content=GATE, headers={**operator, "Content-Type": "application/yaml"}
        )
        assert register_response.status_code == 201
        run = (
            await client.post("/v1/runs", json={"workflow": "gate", "wait": True}, headers=operator)
        ).json()
        assert run["status"] == "waiting"
        assert (await client.post(f"/v1/runs/{run['id']}/approve", headers=operator)).status_code == 403

        approver = bearer(keys["approver"])
        assert (await client.post("/v1/runs", json={"workflow": "gate"}, headers=approver)).status_code == 403
        assert (await client.post(f"/v1/runs/{run['id']}/cancel", headers=approver)).status_code == 403
        approved = await client.post(
            f"/v1/runs/{run['id']}/approve", json={"comment": "ok"}, headers=approver
        )
        assert approved.status_code == 200

        done = await wait_for_status(client, run["id"], "succeeded", headers=approver)
        assert done["output"]["decision"]["by"] == "approver"

    async def test_every_mutating_call_is_audited_with_its_caller_and_answer(
        self, client: httpx.AsyncClient, keys: dict[str, str]
    ) -> None:
        operator, viewer = bearer(keys["operator"]), bearer(keys["viewer"])
        await client.post(
            "/v1/workflows", content=HELLO, headers={**operator, "Content-Type": "application/yaml"}
        )
        run = (
            await client.post(
                "/v1/runs", json={"workflow": "hello", "input": {"name": "A"}}, headers=operator
            )
        ).json()
        await client.post(f"/v1/runs/{run['id']}/cancel", headers=viewer)
        await client.post(f"/v1/runs/{run['id']}/cancel", headers=operator)
        await client.post(f"/v1/runs/{run['id']}/cancel")
        await client.get("/v1/runs", headers=operator)  # reads are not audited
        records = (await client.get("/v1/audit", headers=bearer(keys["admin"]))).json()["records"]
        assert [
            (r["actor"], r["role"], r["method"], r["path"], r["run_id"], r["status"]) for r in records
        ] == [
            ("operator", "operator", "POST", "/v1/workflows", None, 201),
            ("operator", "operator", "POST", "/v1/runs", run["id"], 201),
            ("viewer", "viewer", "POST", f"/v1/runs/{run['id']}/cancel", run["id"], 403),
            ("operator", "operator", "POST", f"/v1/runs/{run['id']}/cancel", run["id"], 200),
            ("unauthenticated", None, "POST", f"/v1/runs/{run['id']}/cancel", None, 401),
        ]
        of_run = (
            await client.get("/v1/audit", params={"run_id": run["id"]}, headers=bearer(keys["admin"]))
        ).json()
        assert len(of_run["records"]) == 3


class TestKeysCommand:
    def test_create_prints_the_secret_once_list_never_and_revoke_removes_it(self, database_url: str) -> None:
        runner = CliRunner()
        base = ["--database-url", database_url, "keys"]
        created = runner.invoke(cli, [*base, "create", "--role", "operator", "--name", "ci", "--json"])
        assert created.exit_code == 0, created.output
        secret = json.loads(created.stdout)["key"]
        assert secret.startswith("trl_")
        duplicate = runner.invoke(cli, [*base, "create", "--role", "viewer", "--name", "ci"])
        assert duplicate.exit_code == 2
        listed = runner.invoke(cli, [*base, "list", "--json"])
        assert secret not in listed.stdout
        assert [(k["name"], k["role"]) for k in json.loads(listed.stdout)] == [("ci", "operator")]

        async def status(key: str) -> int:
            async with Engine.open(Settings(database_url=database_url), registry=Registry()) as engine:
                transport = httpx.ASGITransport(app=create_app(engine))
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                    return (await client.get("/v1/runs", headers=bearer(key))).status_code

        assert asyncio.run(status(secret)) == 200
        assert runner.invoke(cli, [*base, "revoke", "ci"]).exit_code == 0
        assert asyncio.run(status(secret)) == 200  # no key left: the API is open again
        assert runner.invoke(cli, [*base, "revoke", "ci"]).exit_code == 2
        assert runner.invoke(cli, [*base, "create", "--role", "root", "--name", "x"]).exit_code == 2


class TestServeBindGuard:
    def test_serve_refuses_a_public_interface_without_keys(self, database_url: str) -> None:
        result = CliRunner().invoke(
            cli, ["--database-url", database_url, "serve", "--host", "0.0.0.0", "--no-worker"]
        )
        assert result.exit_code == 2
        assert "refusing to bind 0.0.0.0" in result.output
        assert "--insecure" in result.output

    @pytest.mark.parametrize(
        ("host", "loopback"),
        [
            ("127.0.0.1", True),
            ("127.1.2.3", True),
            ("::1", True),
            ("[::1]", True),
            ("localhost", True),
            ("0.0.0.0", False),
            ("::", False),
            ("10.0.0.5", False),
            ("example.com", False),
        ],
    )
    def test_loopback_hosts(self, host: str, loopback: bool) -> None:
        assert is_loopback(host) is loopback

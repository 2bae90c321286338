"""trellis.api workflows: registration (JSON, YAML), versions, graphs, and their errors."""

from __future__ import annotations

import json

import httpx
import yaml

from api_support import HELLO, register

YAML = {"Content-Type": "application/yaml"}


class TestRegister:
    async def test_yaml_registers_version_1_with_201_and_a_location(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/v1/workflows", content=HELLO, headers=YAML)
        assert response.status_code == 201
        body = response.json()
        assert body == {"name": "hello", "version": 1, "hash": body["hash"]}
        assert body["hash"].startswith("sha256:")
        assert response.headers["location"] == "/v1/workflows/hello/versions/1"

    async def test_identical_content_is_a_200_no_op_and_changed_content_the_next_version(
        self, client: httpx.AsyncClient
    ) -> None:
        first = await client.post("/v1/workflows", content=HELLO, headers=YAML)
        again = await client.post("/v1/workflows", json=yaml.safe_load(HELLO))
        assert again.status_code == 200
        assert again.json() == first.json()
        changed = await client.post(
            "/v1/workflows", content=HELLO.replace("Greets", "Welcomes"), headers=YAML
        )
        assert changed.status_code == 201
        assert changed.json()["version"] == 2

    async def test_an_invalid_definition_is_a_422_listing_every_diagnostic_with_its_path(
        self, client: httpx.AsyncClient
    ) -> None:
        broken = HELLO.replace("start: greet", "start: nowhere")
        response = await client.post("/v1/workflows", content=broken, headers=YAML)
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["error"] == "DefinitionError"
        diagnostics = problem["details"]["diagnostics"]
        assert any(d["path"] == "/start" and "nowhere" in d["message"] for d in diagnostics)

    async def test_malformed_json_is_a_400_naming_the_position(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/v1/workflows", content='{"name": "x",', headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400
        assert "line 1 column 14" in response.json()["detail"]

    async def test_a_json_array_is_not_a_definition(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/v1/workflows", json=[1, 2])
        assert response.status_code == 422
        assert "JSON object, not list" in response.json()["detail"]

    async def test_an_unknown_content_type_is_a_415(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/v1/workflows", content="x", headers={"Content-Type": "text/csv"})
        assert response.status_code == 415
        assert "text/csv" in response.json()["detail"]

    async def test_a_body_over_the_limit_is_a_413(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/v1/workflows", content="#" * (1 << 20 + 1), headers=YAML)
        assert response.status_code == 413


class TestRead:
    async def test_list_show_versions_and_one_version(self, client: httpx.AsyncClient) -> None:
        await register(client, HELLO)
        await register(client, HELLO.replace("Greets", "Welcomes"))
        listed = (await client.get("/v1/workflows")).json()["workflows"]
        assert [(w["name"], w["version"], w["description"]) for w in listed] == [
            ("hello", 2, "Welcomes someone.")
        ]
        latest = (await client.get("/v1/workflows/hello")).json()
        assert (latest["version"], latest["versions"]) == (2, [1, 2])
        assert latest["source"].startswith("\nname: hello")
        versions = (await client.get("/v1/workflows/hello/versions")).json()["versions"]
        assert [v["version"] for v in versions] == [1, 2]
        first = (await client.get("/v1/workflows/hello/versions/1")).json()
        assert first["definition"]["description"] == "Greets someone."

    async def test_unknown_names_and_versions_are_404_problems(self, client: httpx.AsyncClient) -> None:
        await register(client, HELLO)
        for path in ("/v1/workflows/nope", "/v1/workflows/nope/versions", "/v1/workflows/hello/versions/9"):
            response = await client.get(path)
            assert response.status_code == 404, path
            assert response.headers["content-type"] == "application/problem+json"
        assert "'hello@9'" in (await client.get("/v1/workflows/hello/versions/9")).json()["detail"]

    async def test_a_version_that_is_not_a_number_is_a_422_naming_the_path_parameter(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get("/v1/workflows/hello/versions/two")
        assert response.status_code == 422
        assert response.json()["errors"][0]["location"] == "path.version"

    async def test_graphs_are_mermaid_with_the_node_list(self, client: httpx.AsyncClient) -> None:
        await register(client, HELLO)
        latest = (await client.get("/v1/workflows/hello/graph")).json()
        assert latest["mermaid"].startswith("flowchart TD")
        assert "greet" in latest["mermaid"]
        assert latest["nodes"] == [{"id": "greet", "type": "set", "scope": ""}]
        pinned = (await client.get("/v1/workflows/hello/versions/1/graph")).json()
        assert json.dumps(pinned) == json.dumps(latest)
        assert (await client.get("/v1/workflows/nope/graph")).status_code == 404

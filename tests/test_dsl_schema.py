"""JSON Schema export, canonical JSON and content hashes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from trellis.dsl import SCHEMA_ID, canonical_json, content_hash, load_document, workflow_json_schema

DEFINITIONS = Path(__file__).parent / "definitions"


def refund_triage() -> Any:
    return load_document((DEFINITIONS / "refund_triage.yaml").read_text()).data


class TestWorkflowJsonSchema:
    def test_is_a_valid_2020_12_schema(self) -> None:
        jsonschema.Draft202012Validator.check_schema(workflow_json_schema())

    def test_identifies_itself(self) -> None:
        schema = workflow_json_schema()
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"] == SCHEMA_ID == "https://trellis.dev/schemas/workflow-1.0.json"
        assert schema["title"] == "Trellis workflow definition"

    def test_accepts_the_refund_triage_example(self) -> None:
        validator = jsonschema.Draft202012Validator(workflow_json_schema())
        assert [error.message for error in validator.iter_errors(refund_triage())] == []

    @pytest.mark.parametrize(
        "data",
        [
            {"name": "x", "start": "a", "nodes": {"a": {"type": "nope"}}},
            {"name": "x", "start": "a", "nodes": {"a": {"type": "end", "nxt": "b"}}},
            {"name": "x", "nodes": {}},
            {"name": "x", "start": "a", "nodes": {"a": {"type": "wait", "for": "soon"}}},
        ],
    )
    def test_rejects_structural_errors(self, data: dict[str, Any]) -> None:
        assert not jsonschema.Draft202012Validator(workflow_json_schema()).is_valid(data)

    def test_uses_the_written_field_names(self) -> None:
        wait = workflow_json_schema()["$defs"]["WaitNode"]["properties"]
        assert "for" in wait
        assert "for_" not in wait

    def test_each_call_returns_a_fresh_copy(self) -> None:
        schema = workflow_json_schema()
        schema["title"] = "changed"
        assert workflow_json_schema()["title"] == "Trellis workflow definition"


class TestCanonicalJson:
    def test_sorted_keys_and_no_whitespace(self) -> None:
        assert (
            canonical_json({"b": [1, {"d": 2, "c": None}], "a": True})
            == '{"a":true,"b":[1,{"c":null,"d":2}]}'
        )

    def test_keeps_non_ascii_text(self) -> None:
        assert canonical_json({"t": "café ✓"}) == '{"t":"café ✓"}'

    def test_refuses_values_that_are_not_json(self) -> None:
        with pytest.raises(ValueError, match="JSON compliant"):
            canonical_json({"x": float("nan")})


class TestContentHash:
    def test_has_the_sha256_prefix(self) -> None:
        digest = content_hash({"name": "a"})
        assert digest.startswith("sha256:")
        assert len(digest) == len("sha256:") + 64

    def test_ignores_the_version_and_key_order(self) -> None:
        assert content_hash({"name": "a", "version": 1, "start": "x"}) == content_hash(
            {"start": "x", "version": 7, "name": "a"}
        )

    def test_changes_with_the_content(self) -> None:
        assert content_hash({"name": "a"}) != content_hash({"name": "b"})

    def test_yaml_and_json_forms_of_one_definition_hash_alike(self) -> None:
        data = refund_triage()
        as_json = load_document(json.dumps(data, indent=2), "refund.json").data
        assert content_hash(data) == content_hash(as_json)

    def test_does_not_modify_its_argument(self) -> None:
        data = {"name": "a", "version": 2}
        content_hash(data)
        assert data == {"name": "a", "version": 2}

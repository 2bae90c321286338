"""Loading definition text: YAML and JSON, parse errors, duplicate keys, positions."""

from __future__ import annotations

import json
import textwrap

import pytest

from trellis.dsl import Document, load_document, validate


def diagnostics_of(document: Document) -> list[tuple[str, str, int | None, int | None]]:
    return [(d.code, d.path, d.line, d.col) for d in document.diagnostics]


class TestYaml:
    def test_parses_plain_data(self) -> None:
        document = load_document("name: demo\nnodes:\n  a: {type: end}\n")
        assert document.data == {"name": "demo", "nodes": {"a": {"type": "end"}}}
        assert document.diagnostics == ()
        assert document.parsed

    def test_syntax_error_is_a_parse_error_with_line_and_column(self) -> None:
        document = load_document("name: demo\nnodes: [a, b\nstart: a\n", "flow.yaml")
        assert document.data is None
        assert not document.parsed
        ((code, path, line, col),) = diagnostics_of(document)
        assert (code, path, line, col) == ("PARSE_ERROR", "", 3, 6)
        assert "flow sequence started on line 2" in document.diagnostics[0].message

    def test_bad_indentation_is_a_parse_error(self) -> None:
        document = load_document("a: b: c\n")
        assert diagnostics_of(document) == [("PARSE_ERROR", "", 1, 5)]

    def test_several_documents_are_refused(self) -> None:
        document = load_document("name: a\n---\nname: b\n")
        assert [d.code for d in document.diagnostics] == ["PARSE_ERROR"]

    def test_python_tags_are_refused(self) -> None:
        document = load_document("name: !!python/object/apply:os.system [echo hi]\n")
        assert document.data is None
        assert [d.code for d in document.diagnostics] == ["PARSE_ERROR"]

    def test_empty_text_is_no_data(self) -> None:
        document = load_document("")
        assert (document.data, document.diagnostics) == (None, ())

    def test_validate_reports_parse_errors_only(self) -> None:
        document = load_document("name: [\n", "flow.yaml")
        report = validate(document.data, document)
        assert [d.code for d in report.diagnostics] == ["PARSE_ERROR"]
        assert report.filename == "flow.yaml"


class TestYamlScalars:
    """YAML 1.2 core-schema scalars, not PyYAML's YAML 1.1 ones: the data is plain JSON."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("on", "on"),
            ("yes", "yes"),
            ("No", "No"),
            ("true", True),
            ("False", False),
            ("2024-01-01", "2024-01-01"),
            ("010", 10),
            ("0x1f", 31),
            ("0o17", 15),
            ("-3", -3),
            ("1e3", 1000.0),
            ("1.5", 1.5),
            (".inf", float("inf")),
            ("1:30", "1:30"),
            ("1_000", "1_000"),
            ("~", None),
            ("null", None),
            ("48h", "48h"),
        ],
    )
    def test_scalar(self, text: str, expected: object) -> None:
        assert load_document(f"v: {text}\n").data == {"v": expected}

    def test_retry_on_stays_a_field_name(self) -> None:
        data = load_document("retry: {on: [Timeout]}\n").data
        assert data == {"retry": {"on": ["Timeout"]}}

    def test_anchors_and_merge_keys_work(self) -> None:
        document = load_document("base: &b {x: 1}\nuse: *b\nmerged: {<<: *b, y: 2}\n")
        assert document.data == {"base": {"x": 1}, "use": {"x": 1}, "merged": {"x": 1, "y": 2}}
        assert document.position("/use") == (2, 1)

    def test_alias_bombs_are_indexed_in_linear_time(self) -> None:
        lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
        document = load_document("\n".join(lines) + "\n")
        assert document.parsed
        assert document.position("/a8/0/0/0") == document.position("/a8/0")


class TestDuplicateKeys:
    def test_duplicate_key_is_reported_where_it_repeats(self) -> None:
        text = "name: demo\nstart: a\nname: other\n"
        document = load_document(text)
        assert diagnostics_of(document) == [("DUPLICATE_KEY", "/name", 3, 1)]
        assert "first on line 1" in document.diagnostics[0].message
        assert document.data == {"name": "other", "start": "a"}

    def test_duplicate_node_ids_under_nodes(self) -> None:
        text = textwrap.dedent(
            """\
            nodes:
              draft: {type: end}
              send: {type: end}
              draft: {type: fail}
            """
        )
        document = load_document(text)
        assert diagnostics_of(document) == [("DUPLICATE_KEY", "/nodes/draft", 4, 3)]

    def test_positions_follow_the_value_that_is_kept(self) -> None:
        document = load_document("a: 1\nb: 2\na: 3\n")
        assert document.position("/a") == (3, 1)


class TestJson:
    def test_parses_json_files_with_json(self) -> None:
        document = load_document('{"name": "demo", "n": 1e3, "on": true}', "flow.json")
        assert document.data == {"name": "demo", "n": 1000.0, "on": True}
        assert document.diagnostics == ()

    def test_json_syntax_error_has_line_and_column(self) -> None:
        document = load_document('{\n  "name": "demo",\n  "start": \n}\n', "flow.json")
        assert document.data is None
        assert diagnostics_of(document) == [("PARSE_ERROR", "", 4, 1)]
        assert document.diagnostics[0].message.startswith("invalid JSON:")

    def test_trailing_comma_is_a_json_error(self) -> None:
        document = load_document('{"a": 1,}', "FLOW.JSON")
        assert diagnostics_of(document) == [("PARSE_ERROR", "", 1, 9)]

    def test_positions_work_with_tab_indentation(self) -> None:
        text = json.dumps({"name": "demo", "nodes": {"a": {"type": "end"}}}, indent="\t")
        document = load_document(text, "flow.json")
        assert document.position("/nodes/a/type") == (5, 4)

    def test_duplicate_keys_in_json(self) -> None:
        document = load_document('{\n  "a": 1,\n  "a": 2\n}', "flow.json")
        assert diagnostics_of(document) == [("DUPLICATE_KEY", "/a", 3, 3)]
        assert document.data == {"a": 2}

    def test_json_text_in_a_yaml_file_parses_as_yaml(self) -> None:
        assert load_document('{"a": [1, 2]}', "flow.yaml").data == {"a": [1, 2]}


class TestPositions:
    TEXT = textwrap.dedent(
        """\
        name: demo
        nodes:
          a:
            type: router
            routes:
              - {when: 'state.x ! 1', next: b}
            plain: state.x ! 1
            quoted: "state.x ! 1"
            escaped: "state.\\x41 ! 1"
            block: |
              first line
              second ! line
            folded: >
              folded text
        """
    )

    def test_position_of_a_mapping_entry_is_its_key(self) -> None:
        document = load_document(self.TEXT)
        assert document.position("/nodes/a") == (3, 3)
        assert document.position("/nodes/a/type") == (4, 5)

    def test_position_of_a_list_item_is_the_item(self) -> None:
        assert load_document(self.TEXT).position("/nodes/a/routes/0") == (6, 9)

    def test_root_position(self) -> None:
        assert load_document(self.TEXT).position("") == (1, 1)

    def test_missing_pointer_falls_back_to_the_nearest_ancestor(self) -> None:
        document = load_document(self.TEXT)
        assert document.position("/nodes/a/missing/deeper") == (3, 3)
        assert document.position("/nothing") == (1, 1)

    def test_pointer_escapes_are_understood(self) -> None:
        document = load_document("headers:\n  a/b: 1\n  c~d: 2\n")
        assert document.position("/headers/a~1b") == (2, 3)
        assert document.position("/headers/c~0d") == (3, 3)

    @pytest.mark.parametrize(
        ("pointer", "offset", "expected"),
        [
            ("/nodes/a/routes/0/when", 8, (6, 25)),
            ("/nodes/a/plain", 8, (7, 20)),
            ("/nodes/a/quoted", 8, (8, 22)),
            ("/nodes/a/escaped", 8, (9, 14)),  # escapes: the value's start
            ("/nodes/a/block", 18, (12, 14)),
            ("/nodes/a/folded", 3, (13, 13)),  # folded: the value's start
        ],
    )
    def test_locate_a_character_inside_a_string(
        self, pointer: str, offset: int, expected: tuple[int, int]
    ) -> None:
        assert load_document(self.TEXT).locate(pointer, offset) == expected

    def test_data_not_from_text_has_no_positions(self) -> None:
        document = load_document("name: [\n")
        assert document.position("/name") is None

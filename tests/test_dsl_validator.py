"""Semantic validation of definitions: one test per diagnostic code, then the interplay.

Every definition here is YAML text so the tests can check that each diagnostic points at the
right line. ``line_of`` finds the line of a marker in the text, so the tests do not hard-code
line numbers.
"""

from __future__ import annotations

import contextlib
import copy
import random
import textwrap
from pathlib import Path
from typing import Any

import pytest

from trellis.dsl import (
    Code,
    Diagnostic,
    Report,
    Workflow,
    load_document,
    load_workflow,
    load_workflow_file,
    validate,
)
from trellis.errors import DefinitionError
from trellis.expressions import compile_expression

DEFINITIONS = Path(__file__).parent / "definitions"


def check(text: str) -> Report:
    document = load_document(textwrap.dedent(text), "flow.yaml")
    return validate(document.data, document)


def single(text: str) -> Diagnostic:
    report = check(text)
    assert len(report.diagnostics) == 1, report.format()
    return report.diagnostics[0]


def line_of(text: str, marker: str, occurrence: int = 1) -> int:
    """1-based line of the ``occurrence``-th line containing ``marker``."""
    hits = [i for i, line in enumerate(textwrap.dedent(text).splitlines(), 1) if marker in line]
    return hits[occurrence - 1]


def codes(report: Report) -> list[str]:
    return [d.code for d in report.diagnostics]


class TestRefundTriageExample:
    """The worked example of research/dsl.md §8.3."""

    def test_validates_without_any_diagnostic(self) -> None:
        path = DEFINITIONS / "refund_triage.yaml"
        document = load_document(path.read_text(), str(path))
        report = validate(document.data, document)
        assert report.diagnostics == ()
        assert isinstance(report.workflow, Workflow)
        assert report.workflow.policies.retries["llm"].on == ["RateLimited", "Timeout"]

    def test_route_picks_gather_for_an_int_amount_above_a_double_threshold(self) -> None:
        workflow = load_workflow_file(DEFINITIONS / "refund_triage.yaml")
        route = workflow.nodes["route"]
        assert route.type == "router"
        state = {"intent": "refund", "ticket": {"amount": 120}}
        chosen = next(r.next for r in route.routes if compile_expression(r.when).evaluate({"state": state}))
        assert chosen == "gather"


class TestTargets:
    def test_unknown_next_is_an_error_that_suggests_the_intended_node(self) -> None:
        text = """\
            name: demo
            start: classify
            nodes:
              classify: {type: tool, tool: t, next: drat}
              draft: {type: end}
            """
        found = single(text)
        assert (found.code, found.severity, found.path) == ("UNKNOWN_TARGET", "error", "/nodes/classify/next")
        line = line_of(text, "next: drat")
        assert (found.line, found.col) == (
            line,
            textwrap.dedent(text).splitlines()[line - 1].index("next") + 1,
        )
        assert "`next: drat`" in found.message
        assert "did you mean `draft`?" in found.message

    @pytest.mark.parametrize(
        ("node", "path"),
        [
            ("{type: router, routes: [{when: 'true', next: nope}], default: b}", "/nodes/a/routes/0/next"),
            ("{type: router, routes: [{when: 'true', next: b}], default: nope}", "/nodes/a/default"),
            ("{type: tool, tool: t, catch: [{next: nope}], next: b}", "/nodes/a/catch/0/next"),
            ("{type: approval, timeout: {after: 1h, next: nope}, next: b}", "/nodes/a/timeout/next"),
        ],
    )
    def test_every_kind_of_target_is_checked(self, node: str, path: str) -> None:
        found = single(f"name: demo\nstart: a\nnodes:\n  a: {node}\n  b: {{type: end}}\n")
        assert (found.code, found.path, found.line) == ("UNKNOWN_TARGET", path, 4)
        assert "valid targets: b" in found.message

    def test_unknown_start_is_an_unknown_target_at_start(self) -> None:
        text = """\
            name: demo
            start: begin
            nodes:
              begin_here: {type: end}
            """
        found = single(text)
        assert (found.code, found.path, found.line) == ("UNKNOWN_TARGET", "/start", 2)
        assert "did you mean `begin_here`?" in found.message

    def test_start_cannot_name_an_inline_node(self) -> None:
        text = """\
            name: demo
            start: inner
            nodes:
              par:
                type: parallel
                branches:
                  one: [{type: end, id: inner}]
            """
        report = check(text)
        assert ("UNKNOWN_TARGET", "/start") in [(d.code, d.path) for d in report.diagnostics]
        assert "must name a top-level node" in report.errors[0].message

    def test_catch_next_leaving_a_branch_names_the_scopes(self) -> None:
        text = """\
            name: demo
            start: par
            nodes:
              par:
                type: parallel
                branches:
                  kb:
                    - {type: tool, tool: t, catch: [{next: recover}]}
                next: recover
              recover: {type: end}
            """
        found = single(text)
        assert (found.code, found.severity) == ("CATCH_LEAVES_SCOPE", "error")
        assert found.path == "/nodes/par/branches/kb/0/catch/0/next"
        assert found.line == line_of(text, "catch: [{next: recover}]")
        assert "`recover` is in the top level" in found.message
        assert "branch `kb` of parallel `par`" in found.message

    def test_next_from_one_branch_into_another_leaves_its_scope(self) -> None:
        text = """\
            name: demo
            start: par
            nodes:
              par:
                type: parallel
                branches:
                  left: [{type: tool, tool: t, next: right_end}]
                  right: [{type: end, id: right_end}]
            """
        found = single(text)
        assert (found.code, found.path) == ("CATCH_LEAVES_SCOPE", "/nodes/par/branches/left/0/next")

    def test_catch_next_leaving_a_map_body(self) -> None:
        text = """\
            name: demo
            start: each
            nodes:
              each:
                type: map
                items: state.items
                do:
                  - {type: tool, tool: t, catch: [{next: done}]}
                next: done
              done: {type: end}
            """
        found = single(text)
        assert (found.code, found.path) == ("CATCH_LEAVES_SCOPE", "/nodes/each/do/0/catch/0/next")
        assert "the body of map `each`" in found.message

    def test_top_level_node_cannot_enter_a_branch(self) -> None:
        text = """\
            name: demo
            start: a
            nodes:
              a: {type: tool, tool: t, next: inner}
              par:
                type: parallel
                branches:
                  one: [{type: end, id: inner}]
            """
        report = check(text)
        assert ("CATCH_LEAVES_SCOPE", "/nodes/a/next") in [(d.code, d.path) for d in report.diagnostics]

    def test_inline_nodes_may_target_nodes_of_their_own_branch(self) -> None:
        report = check(
            """\
            name: demo
            start: par
            nodes:
              par:
                type: parallel
                branches:
                  one:
                    - {type: tool, tool: t, next: last, catch: [{next: last}]}
                    - {type: tool, tool: skipped_on_purpose}
                    - {type: end, id: last}
            """
        )
        assert codes(report) == ["UNREACHABLE_NODE"]  # only the skipped middle node


class TestReachability:
    def test_top_level_node_not_reached_from_start(self) -> None:
        text = """\
            name: demo
            start: a
            nodes:
              a: {type: end}
              orphan: {type: end}
            """
        found = single(text)
        assert (found.code, found.severity, found.path) == ("UNREACHABLE_NODE", "error", "/nodes/orphan")
        assert (found.line, found.col) == (line_of(text, "orphan:"), 3)

    def test_inline_node_not_reached_from_the_first_of_its_list(self) -> None:
        text = """\
            name: demo
            start: par
            nodes:
              par:
                type: parallel
                branches:
                  one:
                    - {type: tool, tool: first, next: third}
                    - {type: tool, tool: second}
                    - {type: end, id: third}
            """
        found = single(text)
        assert (found.code, found.path) == ("UNREACHABLE_NODE", "/nodes/par/branches/one/1")
        assert found.line == line_of(text, "tool: second")

    def test_catch_next_and_approval_timeout_next_reach_nodes(self) -> None:
        report = check(
            """\
            name: demo
            start: a
            nodes:
              a: {type: tool, tool: t, catch: [{next: fallback}], next: gate}
              gate: {type: approval, timeout: {after: 1h, next: expired}}
              fallback: {type: end}
              expired: {type: end}
            """
        )
        assert report.diagnostics == ()

    def test_a_misspelt_target_is_not_reported_again_as_unreachable_nodes(self) -> None:
        report = check(
            """\
            name: demo
            start: a
            nodes:
              a: {type: tool, tool: t, next: secnd}
              second: {type: tool, tool: t, next: third}
              third: {type: end}
            """
        )
        assert codes(report) == ["UNKNOWN_TARGET"]


class TestRouters:
    def test_router_without_default_is_an_error(self) -> None:
        text = """\
            name: demo
            start: route
            nodes:
              route:
                type: router
                routes: [{when: "state.x > 1", next: big}]
              big: {type: end}
            """
        found = single(text)
        assert (found.code, found.severity, found.path) == (
            "ROUTER_WITHOUT_DEFAULT",
            "error",
            "/nodes/route/default",
        )
        assert found.line == line_of(text, "route:")
        assert "router `route` has no `default`" in found.message


class TestCycles:
    def test_loop_without_exit_is_an_error(self) -> None:
        text = """\
            name: demo
            start: start_here
            nodes:
              start_here: {type: tool, tool: t, next: ping}
              ping: {type: tool, tool: t, next: pong}
              pong: {type: tool, tool: t, next: ping}
            """
        found = single(text)
        assert (found.code, found.severity, found.path) == ("CYCLE_WITHOUT_EXIT", "error", "/nodes/ping")
        assert found.line == line_of(text, "ping:")
        assert "`ping` → `pong` → `ping`" in found.message

    def test_node_looping_on_itself(self) -> None:
        found = single("name: demo\nstart: a\nnodes:\n  a: {type: tool, tool: t, next: a}\n")
        assert (found.code, found.path) == ("CYCLE_WITHOUT_EXIT", "/nodes/a")

    def test_loop_through_a_router_with_an_exit_route_is_fine(self) -> None:
        report = check(
            """\
            name: demo
            start: draft
            nodes:
              draft: {type: llm, model: m, prompt: "draft", next: review}
              review:
                type: router
                routes: [{when: "state.approved", next: send}]
                default: draft
              send: {type: end}
            """
        )
        assert report.diagnostics == ()

    def test_loop_through_a_router_whose_routes_all_stay_in_the_loop(self) -> None:
        report = check(
            """\
            name: demo
            start: draft
            nodes:
              draft: {type: llm, model: m, prompt: "draft", next: review}
              review:
                type: router
                routes: [{when: "state.approved", next: draft}]
                default: draft
            """
        )
        assert codes(report) == ["CYCLE_WITHOUT_EXIT"]

    def test_loop_inside_a_branch(self) -> None:
        text = """\
            name: demo
            start: par
            nodes:
              par:
                type: parallel
                branches:
                  one:
                    - {type: tool, tool: t, id: spin, next: spin}
            """
        found = single(text)
        assert (found.code, found.path) == ("CYCLE_WITHOUT_EXIT", "/nodes/par/branches/one/0")


class TestIds:
    def test_inline_id_reusing_a_top_level_id_is_a_duplicate(self) -> None:
        text = """\
            name: demo
            start: par
            nodes:
              par:
                type: parallel
                branches:
                  one: [{type: end, id: par}]
            """
        found = single(text)
        assert (found.code, found.severity, found.path) == (
            "DUPLICATE_ID",
            "error",
            "/nodes/par/branches/one/0/id",
        )
        assert found.line == line_of(text, "id: par")
        assert "already used by the node at /nodes/par" in found.message

    def test_generated_inline_id_colliding_with_a_top_level_key(self) -> None:
        report = check(
            """\
            name: demo
            start: par
            nodes:
              par:
                type: parallel
                branches:
                  one: [{type: end}]
                next: par_one_0
              par_one_0: {type: end}
            """
        )
        duplicate = [d for d in report.diagnostics if d.code == "DUPLICATE_ID"]
        assert len(duplicate) == 1
        assert duplicate[0].path == "/nodes/par_one_0"
        assert (
            "already used by the node at /nodes/par/branches/one/0 (as its generated id)"
            in duplicate[0].message
        )

    def test_two_top_level_nodes_with_one_key_are_a_duplicate_key(self) -> None:
        text = """\
            name: demo
            start: a
            nodes:
              a: {type: end}
              a: {type: end}
            """
        found = single(text)
        assert (found.code, found.path) == ("DUPLICATE_KEY", "/nodes/a")
        assert found.line == line_of(text, "a: {type: end}", occurrence=2)

    @pytest.mark.parametrize(
        ("nodes", "path"),
        [
            ("  Draft: {type: end}\n", "/nodes/Draft"),
            ("  par:\n    type: parallel\n    branches:\n      one: [{type: end, id: 2nd}]\n", None),
            (
                "  par:\n    type: parallel\n    branches:\n      One: [{type: end}]\n",
                "/nodes/par/branches/One",
            ),
        ],
    )
    def test_malformed_ids_and_branch_names(self, nodes: str, path: str | None) -> None:
        start = "Draft" if "Draft" in nodes else "par"
        report = check(f"name: demo\nstart: {start}\nnodes:\n{nodes}")
        malformed = [d for d in report.diagnostics if d.code == "MALFORMED_ID"]
        assert len(malformed) == 1, report.format()
        assert malformed[0].path == (path or "/nodes/par/branches/one/0/id")
        assert "^[a-z][a-z0-9_]*$" in malformed[0].message


class TestExpressions:
    def test_cel_syntax_error_points_at_the_character(self) -> None:
        text = """\
            name: demo
            start: route
            nodes:
              route:
                type: router
                routes:
                  - when: state.amount >> 100
                    next: done
                default: done
              done: {type: end}
            """
        found = single(text)
        assert (found.code, found.severity, found.path) == (
            "CEL_SYNTAX",
            "error",
            "/nodes/route/routes/0/when",
        )
        line = line_of(text, "when:")
        column = textwrap.dedent(text).splitlines()[line - 1].index(">>") + 2  # the second '>'
        assert (found.line, found.col) == (line, column)
        assert "`routes[0].when` of node `route`" in found.message
        assert "at character 14" in found.message

    def test_cel_syntax_error_inside_a_literal_block(self) -> None:
        text = """\
            name: demo
            start: a
            nodes:
              a:
                type: set
                values:
                  x: |
                    state.a +
                    )
            """
        found = single(text)
        assert found.code == "CEL_SYNTAX"
        assert (found.line, found.col) == (line_of(text, "    )"), 9)

    @pytest.mark.parametrize(
        ("node", "path"),
        [
            ("{type: tool, tool: t, output: {x: 'result +'}}", "/nodes/a/output/x"),
            ("{type: tool, tool: t, catch: [{output: {x: 'error +'}}]}", "/nodes/a/catch/0/output/x"),
            ("{type: tool, tool: t, args: {x: '1 +'}}", "/nodes/a/args/x"),
            ("{type: agent, agent: g, input: {x: '1 +'}}", "/nodes/a/input/x"),
            ("{type: subworkflow, workflow: w@1, input: {x: '1 +'}}", "/nodes/a/input/x"),
            ("{type: set, values: {x: '1 +'}}", "/nodes/a/values/x"),
            ("{type: map, items: '[1,', do: [{type: end}]}", "/nodes/a/items"),
            ("{type: wait, until: 'timestamp('}", "/nodes/a/until"),
        ],
    )
    def test_every_cel_field_is_compiled(self, node: str, path: str) -> None:
        found = single(f"name: demo\nstart: a\nnodes:\n  a: {node}\n")
        assert (found.code, found.path, found.line) == ("CEL_SYNTAX", path, 4)

    def test_workflow_output_is_compiled(self) -> None:
        found = single("name: demo\nstart: a\noutput: {x: 'state.'}\nnodes:\n  a: {type: end}\n")
        assert (found.code, found.path, found.line) == ("CEL_SYNTAX", "/output/x", 3)

    def test_literal_values_in_cel_maps_are_not_compiled(self) -> None:
        report = check(
            "name: demo\nstart: a\nnodes:\n  a: {type: set, values: {n: 1, f: false, l: [1], o: null}}\n"
        )
        assert report.diagnostics == ()

    @pytest.mark.parametrize(
        ("node", "path"),
        [
            ("{type: llm, model: m, prompt: '{{ x'}", "/nodes/a/prompt"),
            ("{type: llm, model: m, prompt: p, system: '{% if %}'}", "/nodes/a/system"),
            ("{type: http, url: 'https://h/{{'}", "/nodes/a/url"),
            ("{type: http, url: u, headers: {X-A: '{{ }'}}", "/nodes/a/headers/X-A"),
            ("{type: http, url: u, query: {q: '{{'}}", "/nodes/a/query/q"),
            ("{type: http, url: u, body: {items: [ok, '{% for %}']}}", "/nodes/a/body/items/1"),
            ("{type: approval, title: '{{ x', timeout: {after: 1h, next: b}, next: b}", "/nodes/a/title"),
            ("{type: fail, message: '{% endif %}'}", "/nodes/a/message"),
        ],
    )
    def test_every_template_field_is_compiled(self, node: str, path: str) -> None:
        report = check(f"name: demo\nstart: a\nnodes:\n  a: {node}\n  b: {{type: end}}\n")
        found = [d for d in report.diagnostics if d.code != "UNREACHABLE_NODE"]
        assert len(found) == 1, report.format()
        assert (found[0].code, found[0].path, found[0].line) == ("TEMPLATE_SYNTAX", path, 4)

    def test_template_syntax_error_points_at_its_line_in_a_block(self) -> None:
        text = """\
            name: demo
            start: a
            nodes:
              a:
                type: llm
                model: m
                prompt: |
                  Hello {{ state.name }}
                  {% if state.vip %}VIP
            """
        found = single(text)
        assert found.code == "TEMPLATE_SYNTAX"
        assert (found.line, found.col) == (line_of(text, "{% if state.vip %}"), 7)
        assert "on line 2" in found.message

    def test_unknown_identifier_names_what_can_be_read(self) -> None:
        text = """\
            name: demo
            start: a
            nodes:
              a: {type: tool, tool: t, args: {q: stat.ticket}}
            """
        found = single(text)
        assert (found.code, found.severity, found.path) == ("UNKNOWN_IDENTIFIER", "error", "/nodes/a/args/q")
        assert found.line == 4
        assert "`stat` is not defined in `args.q` of node `a`; did you mean `state`?" in found.message
        assert "can read: input, state" in found.message

    @pytest.mark.parametrize(
        ("node", "unknown"),
        [
            ("{type: tool, tool: t, args: {x: result.a}}", "result"),
            ("{type: tool, tool: t, output: {x: result.a + error.b}}", "error"),
            ("{type: tool, tool: t, catch: [{output: {x: result}}]}", "result"),
            ("{type: tool, tool: t, args: {x: item}}", "item"),
            ("{type: llm, model: m, prompt: '{{ index }}'}", "index"),
            ("{type: http, url: u, body: {a: '{{ resp }}'}}", "resp"),
        ],
    )
    def test_variables_are_bound_only_where_they_exist(self, node: str, unknown: str) -> None:
        found = single(f"name: demo\nstart: a\nnodes:\n  a: {node}\n")
        assert found.code == "UNKNOWN_IDENTIFIER"
        assert f"`{unknown}` is not defined" in found.message

    def test_result_in_output_and_error_in_catch_output_are_bound(self) -> None:
        report = check(
            """\
            name: demo
            start: a
            nodes:
              a:
                type: tool
                tool: t
                args: {q: "input.q + state.s"}
                output: {x: result.a}
                catch: [{output: {x: "error.message"}}]
            """
        )
        assert report.diagnostics == ()

    def test_item_and_index_are_bound_anywhere_inside_a_map_body(self) -> None:
        report = check(
            """\
            name: demo
            start: each
            nodes:
              each:
                type: map
                items: state.rows
                do:
                  - {type: tool, tool: t, args: {row: item, at: index}, output: {x: "result + item"}}
                  - type: map
                    items: item.children
                    do: [{type: llm, model: m, prompt: "{{ item }} {{ index }}"}]
            """
        )
        assert report.diagnostics == ()

    def test_map_items_is_evaluated_outside_the_body(self) -> None:
        found = single(
            "name: demo\nstart: each\nnodes:\n  each: {type: map, items: item.rows, do: [{type: end}]}\n"
        )
        assert (found.code, found.path) == ("UNKNOWN_IDENTIFIER", "/nodes/each/items")

    def test_a_fallback_node_can_read_error(self) -> None:
        report = check(
            """\
            name: demo
            start: a
            nodes:
              a: {type: tool, tool: t, catch: [{next: recover}]}
              recover: {type: tool, tool: log, args: {why: "error != null ? error.type : 'none'"}}
            """
        )
        assert report.diagnostics == ()

    def test_workflow_output_reads_only_state_and_input(self) -> None:
        found = single("name: demo\nstart: a\noutput: {r: result}\nnodes:\n  a: {type: end}\n")
        assert (found.code, found.path) == ("UNKNOWN_IDENTIFIER", "/output/r")


class TestPolicies:
    @pytest.mark.parametrize(
        ("fragment", "path"),
        [
            ("policies: {retries: {quick: {max_attempts: 0}}}\n", "/policies/retries/quick/max_attempts"),
            ("defaults: {retry: {max_attempts: -1}}\n", "/defaults/retry/max_attempts"),
            ("", "/nodes/a/retry/max_attempts"),
        ],
    )
    def test_max_attempts_below_one(self, fragment: str, path: str) -> None:
        retry = ", retry: {max_attempts: 0}" if not fragment else ""
        text = f"name: demo\nstart: a\n{fragment}nodes:\n  a: {{type: tool, tool: t{retry}}}\n"
        found = single(text)
        assert (found.code, found.severity, found.path) == ("MAX_ATTEMPTS_BELOW_ONE", "error", path)
        assert found.line == (3 if fragment else 4)

    def test_unknown_retry_policy_suggests_a_defined_one(self) -> None:
        text = """\
            name: demo
            policies: {retries: {llm: {max_attempts: 3}}}
            start: a
            nodes:
              a: {type: tool, tool: t, retry: lm}
            """
        found = single(text)
        assert (found.code, found.severity, found.path, found.line) == (
            "UNKNOWN_POLICY",
            "error",
            "/nodes/a/retry",
            5,
        )
        assert "did you mean `llm`?" in found.message

    def test_unknown_timeout_policy_in_defaults(self) -> None:
        found = single("name: demo\nstart: a\ndefaults: {timeout: slow}\nnodes:\n  a: {type: end}\n")
        assert (found.code, found.path, found.line) == ("UNKNOWN_POLICY", "/defaults/timeout", 3)
        assert "defines: (none)" in found.message

    def test_approval_without_timeout_is_only_a_warning(self) -> None:
        text = """\
            name: demo
            start: gate
            nodes:
              gate: {type: approval, title: "Ship it?"}
            """
        report = check(text)
        assert report.ok
        assert report.workflow is not None
        (found,) = report.warnings
        assert (found.code, found.severity, found.path, found.line) == (
            "APPROVAL_WITHOUT_TIMEOUT",
            "warning",
            "/nodes/gate",
            4,
        )


class TestStateFields:
    def test_output_to_an_undeclared_field(self) -> None:
        text = """\
            name: demo
            state: {reply: {type: string}}
            start: a
            nodes:
              a: {type: llm, model: m, prompt: p, output: {replY: result.text}}
            """
        found = single(text)
        assert (found.code, found.severity, found.path, found.line) == (
            "UNKNOWN_STATE_FIELD",
            "error",
            "/nodes/a/output/replY",
            5,
        )
        assert "did you mean `reply`?" in found.message

    @pytest.mark.parametrize(
        ("node", "path"),
        [
            ("{type: tool, tool: t, catch: [{output: {nope: 1}}]}", "/nodes/a/catch/0/output/nope"),
            ("{type: set, values: {nope: 1}}", "/nodes/a/values/nope"),
            ("{type: map, items: state.known, collect: nope, do: [{type: end}]}", "/nodes/a/collect"),
        ],
    )
    def test_every_state_write_is_checked(self, node: str, path: str) -> None:
        found = single(f"name: demo\nstate: {{known: {{}}}}\nstart: a\nnodes:\n  a: {node}\n")
        assert (found.code, found.path) == ("UNKNOWN_STATE_FIELD", path)

    def test_without_declared_state_any_field_may_be_written(self) -> None:
        report = check("name: demo\nstart: a\nnodes:\n  a: {type: set, values: {anything: 1}}\n")
        assert report.diagnostics == ()


class TestEmbeddedDocuments:
    @pytest.mark.parametrize(
        ("text", "path"),
        [
            (
                "name: demo\ninput: {type: object, properties: {n: {type: numbr}}}\nstart: a\n"
                "nodes:\n  a: {type: end}\n",
                "/input/properties/n/type",
            ),
            (
                "name: demo\nstart: a\nnodes:\n  a: {type: approval, title: t, timeout: {after: 1h, next: b},"
                " form: {required: yes}, next: b}\n  b: {type: end}\n",
                "/nodes/a/form/required",
            ),
            (
                "name: demo\nstart: a\nnodes:\n  a: {type: llm, model: m, prompt: p, output_schema: {minItems: -1}}\n",
                "/nodes/a/output_schema/minItems",
            ),
        ],
    )
    def test_an_invalid_json_schema_is_reported_where_it_fails(self, text: str, path: str) -> None:
        found = single(text)
        assert (found.code, found.path) == ("INVALID_JSON_SCHEMA", path)
        assert "not a valid JSON Schema" in found.message
        assert found.line is not None

    def test_a_subworkflow_must_be_pinned_to_a_version(self) -> None:
        found = single("name: demo\nstart: a\nnodes:\n  a: {type: subworkflow, workflow: billing}\n")
        assert (found.code, found.path, found.line) == ("UNPINNED_WORKFLOW", "/nodes/a/workflow", 4)
        assert "billing@3" in found.message
        assert check("name: demo\nstart: a\nnodes:\n  a: {type: subworkflow, workflow: billing@2}\n").ok

    def test_a_top_level_node_cannot_rename_itself_with_id(self) -> None:
        found = single("name: demo\nstart: a\nnodes:\n  a: {id: b, type: end}\n")
        assert (found.code, found.path) == ("MALFORMED_ID", "/nodes/a/id")
        assert check("name: demo\nstart: a\nnodes:\n  a: {id: a, type: end}\n").ok


class TestSchemaDiagnostics:
    def test_unknown_field_suggests_the_right_one(self) -> None:
        text = "name: demo\nstart: a\nnodes:\n  a: {type: tool, tool: t, nxt: b}\n  b: {type: end}\n"
        report = check(text)
        schema = [d for d in report.diagnostics if d.code == "SCHEMA"]
        assert [(d.path, d.line) for d in schema] == [("/nodes/a/nxt", 4)]
        assert "unknown field `nxt`; did you mean `next`?" in schema[0].message

    def test_discriminator_tag_is_not_part_of_the_path(self) -> None:
        found = check("name: demo\nstart: a\nnodes:\n  a: {type: tool, tool: t, args: 3}\n").errors
        assert [(d.code, d.path) for d in found] == [("SCHEMA", "/nodes/a/args")]
        assert "`args` must be a mapping, got int 3" in found[0].message

    def test_unknown_node_type_lists_the_types(self) -> None:
        found = single("name: demo\nstart: a\nnodes:\n  a:\n    type: tol\n")
        assert (found.code, found.path, found.line) == ("SCHEMA", "/nodes/a/type", 5)
        assert "unknown node type `tol`" in found.message
        assert "tool, http, agent, llm, router" in found.message

    def test_missing_node_type_lists_the_types(self) -> None:
        found = single("name: demo\nstart: a\nnodes:\n  a: {tool: t}\n")
        assert (found.code, found.path, found.line) == ("SCHEMA", "/nodes/a/type", 4)
        assert "has no `type`" in found.message

    def test_missing_required_field_points_at_its_node(self) -> None:
        found = single("name: demo\nstart: a\nnodes:\n  a:\n    type: llm\n    prompt: hi\n")
        assert (found.code, found.path, found.line) == ("SCHEMA", "/nodes/a/model", 4)
        assert "missing required field `model` in this llm node" in found.message

    def test_a_value_rejected_by_every_union_member_gives_one_diagnostic(self) -> None:
        found = single("name: demo\nstart: a\nnodes:\n  a: {type: tool, tool: t, retry: 5}\n")
        assert (found.code, found.path) == ("SCHEMA", "/nodes/a/retry")
        assert "must be a mapping or a string, got int 5" in found.message

    def test_errors_inside_a_union_member_are_kept_without_the_noise(self) -> None:
        found = single("name: demo\nstart: a\nnodes:\n  a: {type: tool, tool: t, retry: {max_attempts: x}}\n")
        assert (found.code, found.path) == ("SCHEMA", "/nodes/a/retry/max_attempts")

    def test_document_that_is_not_a_mapping(self) -> None:
        found = single("- just\n- a list\n")
        assert (found.code, found.path) == ("SCHEMA", "")
        assert "got a list" in found.message

    def test_empty_document(self) -> None:
        found = single("")
        assert (found.code, found.path, found.line) == ("SCHEMA", "", None)

    def test_missing_top_level_fields(self) -> None:
        report = check("description: nothing else\n")
        assert {d.path for d in report.errors} == {"/name", "/start", "/nodes"}


class TestManyProblemsAtOnce:
    TEXT = """\
        name: demo
        state: {a: {type: string}}
        policies: {retries: {zero: {max_attempts: 0}}}
        start: first
        nodes:
          first:
            type: tool
            tool: t
            args: {q: "state.a +"}
            output: {b: result}
            retry: fast
            next: secnd
          second:
            type: router
            routes: [{when: "state.a == 'x'", next: first}]
          ping: {type: set, values: {a: "1"}, next: pong}
          pong: {type: set, values: {a: "item"}, next: ping}
          par:
            type: parallel
            branches:
              Kb:
                - {type: tool, tool: t, id: inner, catch: [{next: first}]}
                - {type: llm, model: m, prompt: "{{ state.x ", next: nowhere}
                - {type: end, id: inner}
          gate: {type: approval, nxt: 1}
          Bad_Id: {type: fail}
        """

    def test_every_problem_is_reported(self) -> None:
        report = check(self.TEXT)
        assert not report.ok
        assert report.workflow is None
        assert set(codes(report)) == {
            "SCHEMA",
            "UNKNOWN_TARGET",
            "CATCH_LEAVES_SCOPE",
            "UNREACHABLE_NODE",
            "ROUTER_WITHOUT_DEFAULT",
            "DUPLICATE_ID",
            "MALFORMED_ID",
            "CEL_SYNTAX",
            "TEMPLATE_SYNTAX",
            "UNKNOWN_IDENTIFIER",
            "CYCLE_WITHOUT_EXIT",
            "MAX_ATTEMPTS_BELOW_ONE",
            "UNKNOWN_POLICY",
            "APPROVAL_WITHOUT_TIMEOUT",
            "UNKNOWN_STATE_FIELD",
        }

    def test_diagnostics_are_sorted_by_position(self) -> None:
        report = check(self.TEXT)
        positions = [(d.line or 0, d.col or 0) for d in report.diagnostics]
        assert positions == sorted(positions)
        assert all(d.line is not None for d in report.diagnostics)


class TestPartlyInvalidDefinitions:
    def test_a_structurally_invalid_node_does_not_hide_other_problems(self) -> None:
        report = check(
            """\
            name: demo
            start: a
            nodes:
              a: {type: tool, tool: 5, args: {q: "oops +"}, next: b}
              b: {type: tool, tool: t, next: nowhere}
            """
        )
        assert [(d.code, d.path) for d in report.diagnostics] == [
            ("SCHEMA", "/nodes/a/tool"),
            ("CEL_SYNTAX", "/nodes/a/args/q"),
            ("UNKNOWN_TARGET", "/nodes/b/next"),
        ]

    def test_an_invalid_inline_node_keeps_the_paths_of_its_siblings(self) -> None:
        report = check(
            """\
            name: demo
            start: par
            nodes:
              par:
                type: parallel
                branches:
                  one:
                    - {type: bogus}
                    - {type: tool, tool: t, next: missing}
            """
        )
        assert ("UNKNOWN_TARGET", "/nodes/par/branches/one/1/next") in [
            (d.code, d.path) for d in report.diagnostics
        ]

    def test_an_invalid_policy_does_not_make_its_uses_unknown(self) -> None:
        report = check(
            """\
            name: demo
            policies: {retries: {llm: {backoff_rate: 0.5}}}
            start: a
            nodes:
              a: {type: tool, tool: t, retry: llm}
            """
        )
        assert codes(report) == ["SCHEMA"]


class TestLoadWorkflow:
    def test_returns_the_workflow(self) -> None:
        workflow = load_workflow("name: demo\nstart: a\nnodes:\n  a: {type: end}\n")
        assert workflow.start == "a"

    def test_raises_a_definition_error_with_every_diagnostic(self) -> None:
        with pytest.raises(DefinitionError) as caught:
            load_workflow("name: demo\nstart: b\nnodes:\n  a: {type: approval}\n", "flow.yaml")
        diagnostics = caught.value.details["diagnostics"]
        assert [d["code"] for d in diagnostics] == ["UNKNOWN_TARGET", "APPROVAL_WITHOUT_TIMEOUT"]
        assert diagnostics[0] == {
            "code": "UNKNOWN_TARGET",
            "severity": "error",
            "path": "/start",
            "message": diagnostics[0]["message"],
            "line": 2,
            "col": 1,
        }
        assert "flow.yaml:2:1 /start UNKNOWN_TARGET" in caught.value.message

    def test_parse_errors_raise_too(self) -> None:
        with pytest.raises(DefinitionError) as caught:
            load_workflow("name: [unclosed\n")
        assert caught.value.details["diagnostics"][0]["code"] == "PARSE_ERROR"

    def test_load_workflow_file_reads_json(self, tmp_path: Path) -> None:
        path = tmp_path / "flow.json"
        path.write_text('{"name": "demo", "start": "a", "nodes": {"a": {"type": "end"}}}')
        assert load_workflow_file(path).name == "demo"

    def test_load_workflow_file_refuses_non_utf8(self, tmp_path: Path) -> None:
        path = tmp_path / "flow.yaml"
        path.write_bytes(b"name: \xff\n")
        with pytest.raises(DefinitionError, match="not UTF-8"):
            load_workflow_file(path)


class TestValidateWithoutDocument:
    def test_plain_data_gets_paths_but_no_positions(self) -> None:
        report = validate({"name": "demo", "start": "b", "nodes": {"a": {"type": "end"}}})
        (found,) = report.diagnostics
        assert (found.code, found.path, found.line, found.col) == ("UNKNOWN_TARGET", "/start", None, None)
        assert report.format().startswith("<input>:0:0 /start UNKNOWN_TARGET")

    def test_every_code_is_a_documented_code(self) -> None:
        report = check(TestManyProblemsAtOnce.TEXT)
        assert {d.code for d in report.diagnostics} <= {code.value for code in Code}


class TestRobustness:
    """Whatever the data, validation reports diagnostics and never raises."""

    VALUES: tuple[Any, ...] = (
        None,
        5,
        -1,
        "x",
        "state.",
        "{{",
        [],
        {},
        [None],
        {"type": "nope"},
        {"type": "parallel", "branches": {"a": [5]}},
        {"type": "map", "do": "x", "items": 3},
        {"next": 5},
        [{"next": 3}],
    )

    def test_random_mutations_of_the_example_never_raise(self) -> None:
        base = load_document((DEFINITIONS / "refund_triage.yaml").read_text()).data
        paths = list(_paths(base))
        rng = random.Random(20240501)
        for _ in range(300):
            data = copy.deepcopy(base)
            for _ in range(rng.randint(1, 3)):
                *parents, last = rng.choice(paths)
                target = data
                with contextlib.suppress(KeyError, IndexError, TypeError):  # an earlier change
                    for key in parents:
                        target = target[key]
                    target[last] = copy.deepcopy(rng.choice(self.VALUES))
            report = validate(data)
            assert all(d.code in {c.value for c in Code} for d in report.diagnostics)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Any:
    """Every (non-root) path into ``value``, parents before children."""
    if isinstance(value, dict):
        items: list[tuple[Any, Any]] = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return
    for key, child in items:
        yield (*prefix, key)
        yield from _paths(child, (*prefix, key))

"""CEL expressions and Jinja2 templates (trellis.expressions).

The CEL section doubles as the conformance subset Trellis relies on (research/dsl.md §8.5):
whichever CEL library sits behind the adapter must pass it.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from trellis.errors import ExpressionError
from trellis.expressions import (
    MAX_EXPRESSION_LENGTH,
    ExpressionSyntaxError,
    TemplateSyntaxError,
    compile_expression,
    compile_template,
    evaluate_map,
    free_identifiers,
    render_value,
    template_root_identifiers,
)


def cel(source: str, **bindings: Any) -> Any:
    return compile_expression(source).evaluate(bindings)


class TestCelSemantics:
    """The CEL behaviours definitions rely on."""

    def test_int_state_compares_with_double_literal(self) -> None:
        assert cel("state.amount > 100.0", state={"amount": 120}) is True
        assert cel("state.amount > 100.0", state={"amount": 99}) is False

    def test_int_equals_double(self) -> None:
        assert cel("1 == 1.0") is True

    def test_has_tests_presence_without_failing(self) -> None:
        assert cel("has(input.x)", input={"x": None}) is True
        assert cel("has(input.x)", input={}) is False

    def test_in_on_lists_and_map_keys(self) -> None:
        assert cel('"vip" in state.tags', state={"tags": ["vip", "new"]}) is True
        assert cel('"gold" in state.tiers', state={"tiers": {"gold": 1}}) is True
        assert cel('"silver" in state.tiers', state={"tiers": {"gold": 1}}) is False

    def test_size_of_strings_lists_and_maps(self) -> None:
        assert cel("size(state.l) + size(state.m) + size('abc')", state={"l": [1, 2], "m": {"a": 1}}) == 6

    @pytest.mark.parametrize(
        ("source", "expected"),
        [
            ("state.l.exists(x, x > 2)", True),
            ("state.l.all(x, x > 0)", True),
            ("state.l.exists_one(x, x == 2)", True),
            ("state.l.map(x, x * 10)", [10, 20, 30]),
            ("state.l.filter(x, x % 2 == 1)", [1, 3]),
            ("state.l.map(x, x > 1, x * 10)", [20, 30]),
        ],
    )
    def test_macros(self, source: str, expected: Any) -> None:
        assert cel(source, state={"l": [1, 2, 3]}) == expected

    def test_ternary(self) -> None:
        assert cel("state.n > 1 ? 'many' : 'one'", state={"n": 3}) == "many"

    def test_string_functions(self) -> None:
        bindings = {"state": {"s": "refund-123"}}
        expression = "state.s.startsWith('refund') && state.s.contains('-') && state.s.endsWith('3')"
        assert compile_expression(expression).evaluate(bindings) is True
        assert cel("state.s.matches('^r.*[0-9]+$')", **bindings) is True

    def test_null_comparisons(self) -> None:
        source = "error != null ? error.type : 'approval timeout'"
        assert cel(source, error=None) == "approval timeout"
        assert cel(source, error={"type": "HttpError"}) == "HttpError"

    def test_list_and_map_literals(self) -> None:
        assert cel("[state.a, 'x']", state={"a": 1}) == [1, "x"]
        assert cel("{'total': state.a + 1}", state={"a": 1}) == {"total": 2}

    def test_comments_are_allowed(self) -> None:
        assert cel("1 + // one\n 2") == 3


class TestCelResults:
    def test_results_are_plain_python_values(self) -> None:
        value = cel("{'a': [1, 2.5, 'x', true, null]}")
        assert value == {"a": [1, 2.5, "x", True, None]}

    def test_timestamps_become_timezone_aware_datetimes(self) -> None:
        value = cel("timestamp('2024-05-01T10:00:00Z') + duration('1h')")
        assert value == datetime(2024, 5, 1, 11, 0, tzinfo=UTC)
        assert value.tzinfo is not None

    def test_bound_datetimes_are_timestamps(self) -> None:
        start = datetime(2024, 1, 1, tzinfo=UTC)
        assert cel("state.at + duration('30m')", state={"at": start}) == start + timedelta(minutes=30)

    def test_durations_become_seconds(self) -> None:
        assert cel("duration('90s')") == 90.0

    def test_bytes_become_base64_text(self) -> None:
        assert cel("b'hi'") == "aGk="


class TestCelErrors:
    @pytest.mark.parametrize(
        ("source", "bindings", "cause"),
        [
            ("state.missing", {"state": {}}, "no such key"),
            ("nobody", {}, "Undefined variable"),
            ("1 + 'a'", {}, "no such overload"),
            ("state.x + 1.5", {"state": {"x": 1}}, "no such overload"),
            ("1 / 0", {}, "division by zero"),
            ("state.l[5]", {"state": {"l": []}}, "index out of bounds"),
            ("int('x')", {}, "int"),
            ("9223372036854775807 + 1", {}, "overflow"),
        ],
    )
    def test_evaluation_errors_name_the_expression_and_the_cause(
        self, source: str, bindings: dict[str, Any], cause: str
    ) -> None:
        with pytest.raises(ExpressionError) as caught:
            compile_expression(source).evaluate(bindings)
        assert f"`{source}`" in caught.value.message
        assert cause.lower() in caught.value.message.lower()

    def test_unrepresentable_bound_values_are_expression_errors(self) -> None:
        with pytest.raises(ExpressionError, match="not representable"):
            cel("state", state={"x": object()})

    def test_callables_in_bindings_are_not_callable_from_cel(self) -> None:
        with pytest.raises(ExpressionError):
            cel("f()", f=lambda: 1)

    def test_syntax_error_has_position_and_quotes_the_expression(self) -> None:
        with pytest.raises(ExpressionSyntaxError) as caught:
            compile_expression("state.a ! b")
        assert caught.value.position == 8
        assert "`state.a ! b`" in caught.value.message
        assert "mismatched input '!'" in caught.value.message

    def test_syntax_error_position_counts_characters_across_lines(self) -> None:
        with pytest.raises(ExpressionSyntaxError) as caught:
            compile_expression("a &&\n b !")
        assert caught.value.position == 8

    def test_syntax_errors_are_expression_errors(self) -> None:
        with pytest.raises(ExpressionError):
            compile_expression("[1, 2")

    def test_source_longer_than_the_cap_is_refused(self) -> None:
        source = "1 + " * (MAX_EXPRESSION_LENGTH // 4) + "1"
        with pytest.raises(ExpressionError, match="limit is 4096"):
            compile_expression(source)


class TestCelSafety:
    def test_expressions_cannot_mutate_bindings(self) -> None:
        state = {"l": [3, 1, 2], "m": {"a": 1}}
        before = copy.deepcopy(state)
        for source in ("state.l + [4]", "state.l.map(x, x * 2)", "{'b': 2}", "state.m.a + 1"):
            cel(source, state=state)
        assert state == before

    @pytest.mark.parametrize(
        "source", ["state.__class__", "state.__dict__", "state.l.__len__", "state.keys", "state.clear"]
    )
    def test_python_attribute_probes_fail_cleanly(self, source: str) -> None:
        with pytest.raises(ExpressionError):
            cel(source, state={"l": [1]})

    def test_python_method_calls_do_not_exist(self) -> None:
        with pytest.raises(ExpressionError):
            cel("state.l.clear()", state={"l": [1]})


class TestCompileCache:
    def test_same_source_compiles_once(self) -> None:
        assert compile_expression("state.x == 1") is compile_expression("state.x == 1")

    def test_repr_shows_the_source(self) -> None:
        assert repr(compile_expression("state.x")) == "Expression('state.x')"

    def test_compiled_expressions_and_templates_are_immutable(self) -> None:
        with pytest.raises(AttributeError, match="immutable"):
            compile_expression("state.x").source = "input.y"  # type: ignore[misc]
        with pytest.raises(AttributeError, match="immutable"):
            compile_template("{{ x }}").root_identifiers = frozenset()  # type: ignore[misc]


class TestRootIdentifiers:
    @pytest.mark.parametrize(
        ("source", "expected"),
        [
            ("state.ticket.amount > 100.0 && has(input.x)", {"state", "input"}),
            ("state.l.exists(x, x > 1)", {"state"}),
            ("state.l.exists(x, x.items.all(y, y > x.min + limit))", {"state", "limit"}),
            ("[1].exists(x, x > 0) && x > 0", {"x"}),
            ("x.exists(x, x > 0)", {"x"}),
            ("state.l.map(state, state + 1)", {"state"}),
            ("size(input.l) + int(state.n) + state.s.size()", {"input", "state"}),
            ("'state' + \"input\" + r'result' + b'item' + '''it's error'''", set()),
            ("'it\\'s ' + result", {"result"}),
            ("a // b is a comment\n + c", {"a", "c"}),
            ("true && null == in_x && 1 in [1]", {"in_x"}),
            ("1.5e3 + .5 + 0x1F + 2u > item", {"item"}),
            ("{'key': item, index: 1}", {"item", "index"}),
            ("optional.of(state.x)", {"state"}),
            ("result.body.state", {"result"}),
        ],
    )
    def test_free_identifiers(self, source: str, expected: set[str]) -> None:
        assert compile_expression(source).root_identifiers == expected

    def test_tokenizer_survives_unterminated_input(self) -> None:
        assert free_identifiers("a + 'unterminated") == {"a"}


class TestEvaluateMap:
    def test_strings_are_cel_and_everything_else_is_literal(self) -> None:
        cel_map = {
            "total": "state.a + 1",
            "n": 5,
            "flag": False,
            "tags": ["x"],
            "obj": {"k": "v"},
            "none": None,
        }
        assert evaluate_map(cel_map, {"state": {"a": 1}}) == {
            "total": 2,
            "n": 5,
            "flag": False,
            "tags": ["x"],
            "obj": {"k": "v"},
            "none": None,
        }


class TestTemplates:
    def test_renders_with_bindings(self) -> None:
        assert compile_template("Hi {{ state.name }}!").render({"state": {"name": "Ada"}}) == "Hi Ada!"

    def test_missing_variable_is_an_error(self) -> None:
        with pytest.raises(ExpressionError, match="'nope' is undefined"):
            compile_template("{{ nope }}").render({})

    def test_missing_key_is_an_error(self) -> None:
        with pytest.raises(ExpressionError, match=r"no attribute .missing."):
            compile_template("{{ state.missing }}").render({"state": {}})

    @pytest.mark.parametrize(
        "source",
        [
            "{{ state.__class__ }}",
            "{{ state.__class__.__mro__ }}",
            "{{ state.l.append(1) }}",
            "{{ state.clear() }}",
            "{{ ''.__class__.__base__.__subclasses__() }}",
            "{{ state|attr('__class__') }}",
        ],
    )
    def test_sandbox_refuses_unsafe_access(self, source: str) -> None:
        state: dict[str, Any] = {"l": []}
        with pytest.raises(ExpressionError):
            compile_template(source).render({"state": state})
        assert state == {"l": []}

    def test_tojson_emits_json_without_html_escaping(self) -> None:
        rendered = compile_template("{{ state.e | tojson }}").render({"state": {"e": ["<a>", "é", 1, None]}})
        assert rendered == '["<a>", "é", 1, null]'

    def test_syntax_error_has_the_line(self) -> None:
        with pytest.raises(TemplateSyntaxError) as caught:
            compile_template("first\n{% if %}")
        assert caught.value.line == 2
        assert isinstance(caught.value, ExpressionError)

    def test_root_identifiers_exclude_loop_variables_and_globals(self) -> None:
        template = compile_template("{% for x in state.l %}{{ x }}{{ loop.index }}{% endfor %}{{ range(2) }}")
        assert template.root_identifiers == {"state"}

    def test_trailing_newline_is_kept(self) -> None:
        assert compile_template("line\n").render({}) == "line\n"


class TestRenderValue:
    def test_renders_every_string_leaf_and_keeps_other_values(self) -> None:
        body = {"ticket": "{{ state.id }}", "n": 3, "tags": ["{{ state.tag }}", True], "{{ key }}": None}
        rendered = render_value(body, {"state": {"id": "t-1", "tag": "vip"}})
        assert rendered == {"ticket": "t-1", "n": 3, "tags": ["vip", True], "{{ key }}": None}

    def test_root_identifiers_of_a_structure(self) -> None:
        value = {"a": "{{ state.x }}", "b": ["{{ input.y }}", 1], "c": {"d": "{{ item }}"}}
        assert template_root_identifiers(value) == {"state", "input", "item"}

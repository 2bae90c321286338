"""Diagnostics and reports: formatting, serialisation, ordering."""

from __future__ import annotations

from trellis.dsl import Code, Diagnostic, Report


class TestDiagnostic:
    def test_format_is_file_line_col_path_code_message(self) -> None:
        found = Diagnostic("UNKNOWN_TARGET", "error", "/nodes/a/next", "no node `b`", 4, 5)
        assert found.format("flow.yaml") == "flow.yaml:4:5 /nodes/a/next UNKNOWN_TARGET no node `b`"

    def test_unknown_position_formats_as_zero_and_the_root_as_slash(self) -> None:
        found = Diagnostic("SCHEMA", "error", "", "not a mapping")
        assert found.format() == "<input>:0:0 / SCHEMA not a mapping"

    def test_to_dict(self) -> None:
        found = Diagnostic("APPROVAL_WITHOUT_TIMEOUT", "warning", "/nodes/g", "waits forever", 3, 3)
        assert found.to_dict() == {
            "code": "APPROVAL_WITHOUT_TIMEOUT",
            "severity": "warning",
            "path": "/nodes/g",
            "message": "waits forever",
            "line": 3,
            "col": 3,
        }

    def test_codes_are_plain_strings(self) -> None:
        assert Code.UNKNOWN_TARGET == "UNKNOWN_TARGET"
        assert len({code.value for code in Code}) == len(Code)


class TestReport:
    def test_warnings_do_not_make_a_report_fail(self) -> None:
        warning = Diagnostic("APPROVAL_WITHOUT_TIMEOUT", "warning", "/nodes/g", "waits forever")
        report = Report((warning,))
        assert report.ok
        assert report.errors == ()
        assert report.warnings == (warning,)

    def test_errors_make_a_report_fail(self) -> None:
        error = Diagnostic("SCHEMA", "error", "/name", "missing")
        report = Report((error,), filename="flow.yaml")
        assert not report.ok
        assert report.errors == (error,)
        assert report.format() == "flow.yaml:0:0 /name SCHEMA missing"

"""Matchers compare equal to a class of values and say which in their repr."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from trellis.testing import AnyInt, AnyStr, FloatBetween, IsoTimestamp, Matcher

NOW = datetime.now(UTC)

CASES = [
    (AnyStr(), "", True),
    (AnyStr(), "x", True),
    (AnyStr(), 1, False),
    (AnyStr(), b"x", False),
    (AnyStr(), None, False),
    (AnyStr("run_"), "run_1", True),
    (AnyStr("run_"), "node_1", False),
    (AnyStr(pattern=r"[0-9a-f]{4}"), "0a9f", True),
    (AnyStr(pattern=r"[0-9a-f]{4}"), "0a9f0", False),
    (AnyInt(), 0, True),
    (AnyInt(), -5, True),
    (AnyInt(), True, False),
    (AnyInt(), 1.0, False),
    (AnyInt(min=1, max=3), 3, True),
    (AnyInt(min=1, max=3), 0, False),
    (FloatBetween(0.5, 1), 0.5, True),
    (FloatBetween(0.5, 1), 1, True),
    (FloatBetween(0, 1), 1.01, False),
    (FloatBetween(0, 1), False, False),
    (FloatBetween(0, 1), "0.5", False),
    (IsoTimestamp(), NOW.isoformat(), True),
    (IsoTimestamp(), "2025-01-31T12:00:00Z", True),
    (IsoTimestamp(), "2025-01-31", False),
    (IsoTimestamp(), "yesterday", False),
    (IsoTimestamp(), NOW, False),
    (IsoTimestamp(aware=True), "2025-01-31T12:00:00+02:00", True),
    (IsoTimestamp(aware=True), "2025-01-31T12:00:00", False),
    (IsoTimestamp(aware=False), "2025-01-31T12:00:00", True),
]


@pytest.mark.parametrize(("matcher", "value", "expected"), CASES, ids=lambda v: repr(v))
def test_matchers_accept_their_class_of_values_from_either_side(
    matcher: Matcher, value: object, expected: bool
) -> None:
    assert (matcher == value) is expected
    assert (value == matcher) is expected
    assert (matcher != value) is not expected


@pytest.mark.parametrize(
    ("matcher", "text"),
    [
        (AnyStr(), "AnyStr()"),
        (AnyStr("run_", pattern=r"run_\d+"), r"AnyStr('run_', pattern='run_\\d+')"),
        (AnyInt(), "AnyInt()"),
        (AnyInt(min=1), "AnyInt(min=1)"),
        (FloatBetween(0, 1.5), "FloatBetween(0, 1.5)"),
        (IsoTimestamp(aware=True), "IsoTimestamp(aware=True)"),
    ],
)
def test_repr_says_what_is_accepted(matcher: Matcher, text: str) -> None:
    assert repr(matcher) == text


def test_float_between_refuses_an_empty_range() -> None:
    with pytest.raises(ValueError, match="lo <= hi"):
        FloatBetween(2, 1)


def test_whole_event_lists_compare_in_one_assertion() -> None:
    events = [
        {"run_id": "run_7", "seq": 1, "ts": "2025-01-31T12:00:00+00:00", "type": "run.started"},
        {"run_id": "run_7", "seq": 2, "ts": "2025-01-31T12:00:01+00:00", "data": {"ms": 12.5}},
    ]
    run_id = AnyStr("run_")
    assert events == [
        {"run_id": run_id, "seq": 1, "ts": IsoTimestamp(aware=True), "type": "run.started"},
        {"run_id": run_id, "seq": AnyInt(min=2), "ts": IsoTimestamp(), "data": {"ms": FloatBetween(0, 50)}},
    ]


def test_matchers_are_unhashable() -> None:
    with pytest.raises(TypeError):
        hash(AnyStr())

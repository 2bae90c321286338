"""Matchers: values that compare equal to a whole class of values, for asserting event streams.

Compare complete events or transcripts in one assertion, with matchers where the value is not
known in advance (ids, timestamps, durations)::

    assert events == [
        {"run_id": AnyStr(), "seq": 1, "type": "run.started", "ts": IsoTimestamp(), ...},
        {"run_id": AnyStr(), "seq": 2, "type": "node.succeeded", "data": {"ms": FloatBetween(0, 500)}},
    ]

Each matcher's ``repr`` says what it accepts, so a failing assertion's diff stays readable.
Booleans are never accepted as numbers, though Python treats them as ints.
"""

from __future__ import annotations

import re
from datetime import datetime


class Matcher:
    """Base class: subclasses implement :meth:`matches`; ``==`` and ``!=`` follow it.

    Matchers are unhashable (defining ``__eq__`` drops ``__hash__``): one equals many values.
    """

    def matches(self, value: object) -> bool:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return self.matches(other)

    def __ne__(self, other: object) -> bool:
        return not self.matches(other)


class AnyStr(Matcher):
    """Any ``str``; optionally only those starting with ``prefix`` or matching ``pattern`` fully.

    Example::

        assert {"id": "run_8f2c"} == {"id": AnyStr(prefix="run_")}
    """

    def __init__(self, prefix: str = "", *, pattern: str | None = None) -> None:
        self.prefix = prefix
        self.pattern = None if pattern is None else re.compile(pattern)

    def matches(self, value: object) -> bool:
        if not isinstance(value, str) or not value.startswith(self.prefix):
            return False
        return self.pattern is None or self.pattern.fullmatch(value) is not None

    def __repr__(self) -> str:
        args = [repr(self.prefix)] if self.prefix else []
        if self.pattern is not None:
            args.append(f"pattern={self.pattern.pattern!r}")
        return f"AnyStr({', '.join(args)})"


class AnyInt(Matcher):
    """Any ``int`` (not ``bool``), optionally within ``min``..``max`` inclusive.

    Example::

        assert {"seq": 3, "attempt": 1} == {"seq": AnyInt(min=1), "attempt": AnyInt()}
    """

    def __init__(self, *, min: int | None = None, max: int | None = None) -> None:
        self.min = min
        self.max = max

    def matches(self, value: object) -> bool:
        if not isinstance(value, int) or isinstance(value, bool):
            return False
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def __repr__(self) -> str:
        bounds = [f"{name}={v}" for name, v in (("min", self.min), ("max", self.max)) if v is not None]
        return f"AnyInt({', '.join(bounds)})"


class FloatBetween(Matcher):
    """A number (``int`` or ``float``, not ``bool``) with ``lo <= value <= hi``.

    Example::

        assert {"elapsed": 0.25} == {"elapsed": FloatBetween(0.2, 0.5)}
    """

    def __init__(self, lo: float, hi: float) -> None:
        if lo > hi:
            raise ValueError(f"FloatBetween needs lo <= hi, got {lo} > {hi}")
        self.lo = lo
        self.hi = hi

    def matches(self, value: object) -> bool:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
        return self.lo <= value <= self.hi

    def __repr__(self) -> str:
        return f"FloatBetween({self.lo!r}, {self.hi!r})"


class IsoTimestamp(Matcher):
    """A string in ISO 8601 form (as ``datetime.fromisoformat`` reads it, ``Z`` included).

    Args:
        aware: require a UTC offset (``True``), forbid one (``False``), or accept both (``None``).

    Example::

        assert {"ts": "2025-01-31T12:00:00.5+00:00"} == {"ts": IsoTimestamp(aware=True)}
    """

    def __init__(self, *, aware: bool | None = None) -> None:
        self.aware = aware

    def matches(self, value: object) -> bool:
        if not isinstance(value, str) or "T" not in value.upper():
            return False
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return False
        return self.aware is None or (parsed.tzinfo is not None) == self.aware

    def __repr__(self) -> str:
        return "IsoTimestamp()" if self.aware is None else f"IsoTimestamp(aware={self.aware})"

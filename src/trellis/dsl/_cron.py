"""Cron expressions and time zones: checking them, and the ticks they produce.

Backed by `cronsim <https://github.com/cuu508/cronsim>`_ (the engine of Healthchecks.io): small,
dependency-free and typed; it evaluates in the zone of the datetime it is given, so daylight
saving transitions behave as the zone's wall clock says (a skipped 02:30 does not fire, a
repeated one fires once).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError


def check_cron(expression: str) -> str:
    """``expression`` if it is a valid five-field cron expression, else ``ValueError`` saying why."""
    try:
        CronSim(expression, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise ValueError(f"invalid cron expression {expression!r}: {exc}") from None
    return expression


def check_timezone(name: str) -> str:
    """``name`` if it is an IANA time zone this machine knows, else ``ValueError``."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}; use an IANA name such as UTC or Europe/Berlin"
        ) from None
    return name


def ticks_after(expression: str, timezone: str, after: datetime) -> Iterator[datetime]:
    """The ticks of ``expression`` read in ``timezone`` strictly after ``after``, as UTC datetimes."""
    local = after.astimezone(ZoneInfo(timezone))
    for tick in CronSim(expression, local):
        yield tick.astimezone(UTC)

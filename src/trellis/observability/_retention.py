"""Retention: ``trellis gc`` and the scheduled job of ``trellis serve``.

LangGraph never prunes checkpoints, and every run appends events, node states and log lines,
so without retention the database only grows. :func:`collect_garbage` prunes every *finished*
run (succeeded, failed, cancelled) that finished before the horizon:

* its LangGraph checkpoints (every namespace of its thread, through the checkpointer's
  ``adelete_thread``) — first, so a prune cut short is found and redone next time;
* its events except the last one, its node states, its log lines and its commands.

Kept: the run row (input, output, error, timings — what happened, still listed and counted by
the analytics), its final event (a stream of the run still ends at once), and the audit log,
which is the record of who did what and has its own life. A pruned run can no longer show its
state versions, be rolled back, or be retried from where it failed (a retry starts it afresh).
Runs that are queued, running, waiting or paused are never touched, however old.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from langgraph.checkpoint.base import BaseCheckpointSaver

from trellis.store import Store

log = logging.getLogger("trellis.retention")

BATCH: Final = 200
"""Runs looked up per query while pruning."""
DRY_RUN_LIMIT: Final = 1_000_000
"""Most runs a dry run lists."""
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration(text: str | float | int) -> timedelta:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"45s"``, ``"2w"`` (or a number of seconds) → a timedelta.

    Raises:
        ValueError: not one of those forms, or not positive.
    """
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = _DURATION.match(text)
        if match is None:
            raise ValueError(f"{text!r} is not a duration: use a number and a unit, e.g. 30d, 12h, 90m, 45s")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"a retention horizon must be positive, not {text!r}")
    return timedelta(seconds=seconds)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """``[retention]`` in ``trellis.toml``: what ``trellis serve`` prunes, and how often.

    Example::

        [retention]
        older_than = "30d"   # prune runs that finished more than 30 days ago
        interval = "1h"      # how often serve looks; enabled = false turns the job off

    .. versionadded:: 0.1
    """

    older_than: timedelta = timedelta(days=30)
    """Finished runs older than this (by ``finished_at``) are pruned."""
    interval: timedelta = timedelta(hours=1)
    """Time between two passes of the scheduled job."""
    enabled: bool = True

    @classmethod
    def from_table(cls, table: dict[str, Any] | None) -> RetentionPolicy:
        raw = dict(table or {})
        return cls(
            older_than=parse_duration(raw.get("older_than", "30d")),
            interval=parse_duration(raw.get("interval", "1h")),
            enabled=bool(raw.get("enabled", True)),
        )


@dataclass
class GcReport:
    """What one pass pruned (or, dry, would prune)."""

    before: datetime
    """The horizon: runs that finished before it were pruned."""
    dry_run: bool
    runs: list[str] = field(default_factory=list)
    """Ids of the pruned runs."""
    deleted: dict[str, int] = field(
        default_factory=lambda: {"events": 0, "node_states": 0, "logs": 0, "commands": 0}
    )
    checkpoint_threads: int = 0
    """Checkpoint threads deleted (one per run; a dry run counts those it would delete)."""

    def to_dict(self) -> dict[str, Any]:
        """``{before, dry_run, runs, run_ids, deleted: {events, node_states, logs, commands},
        checkpoint_threads}``."""
        return {
            "before": self.before.isoformat(),
            "dry_run": self.dry_run,
            "runs": len(self.runs),
            "run_ids": self.runs,
            "deleted": dict(self.deleted),
            "checkpoint_threads": self.checkpoint_threads,
        }

    def __repr__(self) -> str:
        return f"GcReport(runs={len(self.runs)}, dry_run={self.dry_run}, deleted={self.deleted})"


async def collect_garbage(
    store: Store,
    checkpointer: BaseCheckpointSaver[Any],
    *,
    older_than: timedelta,
    dry_run: bool = False,
    now: datetime | None = None,
) -> GcReport:
    """Prune every finished run that finished more than ``older_than`` ago (see the module doc).

    Args:
        store: the Trellis database.
        checkpointer: LangGraph's saver for the same database (its ``adelete_thread`` is used).
        older_than: the retention horizon.
        dry_run: count what would be deleted, delete nothing.
        now: the current time (tests).

    .. versionadded:: 0.1
    """
    before = (now or datetime.now(UTC)) - older_than
    report = GcReport(before=before, dry_run=dry_run)
    if dry_run:
        report.runs = await store.prunable_runs(before=before, limit=DRY_RUN_LIMIT)
        for start in range(0, len(report.runs), BATCH):
            counts = await store.prunable_counts(report.runs[start : start + BATCH])
            for kind, count in counts.items():
                report.deleted[kind] += count
        report.checkpoint_threads = len(report.runs)
        return report
    while batch := await store.prunable_runs(before=before, limit=BATCH):
        for run_id in batch:
            await checkpointer.adelete_thread(run_id)
            report.checkpoint_threads += 1
            for kind, count in (await store.prune_run_rows(run_id)).items():
                report.deleted[kind] += count
            report.runs.append(run_id)
    return report


async def retention_job(
    store: Store, checkpointer: BaseCheckpointSaver[Any], policy: RetentionPolicy
) -> None:
    """Prune per ``policy`` now and then every ``policy.interval``, until cancelled."""
    while True:
        try:
            report = await collect_garbage(store, checkpointer, older_than=policy.older_than)
            if report.runs:
                log.info(
                    "retention: pruned %d run(s) finished before %s: %s",
                    len(report.runs),
                    report.before.isoformat(),
                    report.deleted,
                )
        except Exception:  # the next pass tries again; a failed prune loses nothing
            log.exception("retention: pruning failed; trying again in %s", policy.interval)
        await asyncio.sleep(policy.interval.total_seconds())

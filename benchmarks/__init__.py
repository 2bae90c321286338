"""Trellis benchmarks: each one measures Trellis and its LangGraph baseline in the same process.

Run them all with ``make bench`` (``uv run python -m benchmarks``); numbers are never
hard-coded, every line compares two measurements taken in the same run, on this machine,
under whatever load it has (the load average is printed first).

* :mod:`benchmarks.compile` — validate + compile a 50-node definition vs building and
  compiling the equivalent ``StateGraph`` by hand.
* :mod:`benchmarks.runtime` — a 20-node no-op run through the Trellis runtime vs raw LangGraph
  on ``AsyncSqliteSaver`` with ``durability="sync"``; and a four-branch fan-out vs its floor.
* :mod:`benchmarks.service` — the service end to end: a 3-node no-op workflow from ``POST
  /v1/runs`` to ``succeeded`` over HTTP (uvicorn + embedded worker, SQLite and PostgreSQL) vs raw
  LangGraph in-process: runs/s at concurrency 1 and 16, first-SSE-event and completion latency,
  and where a run's time goes.
* :mod:`benchmarks.breakdown` — where the runtime's time goes per node (``python -m
  benchmarks.breakdown``; not part of ``make bench``).
"""

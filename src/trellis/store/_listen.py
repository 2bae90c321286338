"""PostgreSQL ``LISTEN``: notifications from other processes, on a dedicated connection.

Used to wake workers when runs are queued, to deliver commands to the process holding a run,
and to fan out events to API processes serving streams. The connection reconnects with
backoff when it drops; notifications sent while it was down are not replayed, which is why
every consumer also polls (slowly) as a fallback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

from trellis.store._pg import libpq_url

log = logging.getLogger(__name__)

RECONNECT_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)


async def notifications(url: URL, channels: Sequence[str]) -> AsyncIterator[tuple[str, str]]:
    """Yield ``(channel, payload)`` forever; reconnects after failures."""
    failures = 0
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(libpq_url(url), autocommit=True)
        except psycopg.OperationalError as exc:
            delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
            failures += 1
            log.warning("LISTEN connection failed (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            continue
        try:
            for channel in channels:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            failures = 0
            yield ("", "")  # listening: anything sent from now on arrives
            async for note in conn.notifies():
                yield (note.channel, note.payload)
        except psycopg.OperationalError as exc:
            log.warning("LISTEN connection lost (%s); reconnecting", exc)
        finally:
            await conn.close()

"""Notifications between the processes that share one SQLite file: ``LISTEN``/``NOTIFY`` on one machine.

SQLite has no way to tell another process that something changed, and SQLite is shared only by
processes on one machine: a server and the CLI commands pointed at its file, or an API process
and ``trellis worker`` processes. They signal each other the way PostgreSQL's processes do with
``NOTIFY`` (wake a worker, announce new events to streams, deliver a command at once), over
Unix datagram sockets:

* a listening process binds a socket in the abstract namespace (no file to clean up; Linux) and
  registers its name as an empty file in a directory beside the database
  (``trellis.db`` → ``trellis.notify/``);
* :meth:`LocalNotifier.send` sends one datagram per payload, without blocking, to every
  registered socket but its own; a registration whose socket is gone (its process died) is
  removed on the way.

Delivery is best effort, as ``NOTIFY``'s is to a listener that is reconnecting: a datagram that
finds the receiver's buffer full is dropped, and the polls and sweeps that stand behind every
notification (queue polling, command sweeps, stream fetches) cover it. On a system without
abstract sockets nothing is sent or received and those polls do the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import secrets
import socket
import sys
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

SUPPORTED: Final = sys.platform.startswith("linux")
"""Abstract Unix sockets are a Linux feature."""
MAX_DATAGRAM: Final = 4096
"""Payloads are short (a run id and a few numbers); a longer one is not sent."""


def notify_dir(database: Path) -> Path:
    """Where the listeners of the SQLite file ``database`` register (``trellis.notify/``)."""
    return database.with_name(f"{database.stem}.notify")


class LocalNotifier:
    """Sends to, and listens for, the other processes on one SQLite file."""

    def __init__(self, database: Path) -> None:
        self.directory = notify_dir(database.resolve())
        self._sender: socket.socket | None = None
        self._own: str | None = None
        self._peers: list[str] = []
        self._seen_mtime: int | None = None

    # -- sending --------------------------------------------------------------------------------

    def peers(self) -> list[str]:
        """The registered listeners other than this process (re-read when the directory changed)."""
        try:
            mtime = self.directory.stat().st_mtime_ns
        except FileNotFoundError:
            return []
        if mtime != self._seen_mtime:
            self._seen_mtime = mtime
            with contextlib.suppress(FileNotFoundError):
                self._peers = [e.name for e in os.scandir(self.directory) if e.name != self._own]
        return self._peers

    def send(self, channel: str, payloads: Iterable[str]) -> None:
        """One datagram per payload on ``channel`` to every other listener; never blocks."""
        peers = self.peers() if SUPPORTED else []
        if not peers:
            return
        if self._sender is None:
            self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sender.setblocking(False)
        messages = [m for p in payloads if len(m := f"{channel}\0{p}".encode()) <= MAX_DATAGRAM]
        for peer in peers:
            for message in messages:
                try:
                    self._sender.sendto(message, _address(peer))
                except (BlockingIOError, InterruptedError):
                    break  # its buffer is full: it will catch up by polling
                except OSError as exc:
                    if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                        self._forget(peer)  # its process is gone
                        break
                    raise

    def _forget(self, peer: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.directory / peer).unlink()
        self._seen_mtime = None

    # -- listening ------------------------------------------------------------------------------

    async def listen(self, channels: Iterable[str]) -> AsyncIterator[tuple[str, str]]:
        """``(channel, payload)`` for every datagram on ``channels``, forever; ``("", "")``
        first, once registered (anything sent from then on arrives)."""
        wanted = frozenset(channels)
        if not SUPPORTED:
            yield ("", "")
            await asyncio.Event().wait()
        name = f"{os.getpid()}-{secrets.token_hex(6)}"
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        receiver.setblocking(False)
        receiver.bind(_address(name))
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / name).touch()
        self._own = name
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def readable() -> None:
            while True:
                try:
                    queue.put_nowait(receiver.recv(MAX_DATAGRAM))
                except (BlockingIOError, InterruptedError):
                    return

        loop.add_reader(receiver.fileno(), readable)
        try:
            yield ("", "")
            while True:
                channel, _, payload = (await queue.get()).decode(errors="replace").partition("\0")
                if channel in wanted:
                    yield (channel, payload)
        finally:
            loop.remove_reader(receiver.fileno())
            receiver.close()
            self._own = None
            with contextlib.suppress(FileNotFoundError):
                (self.directory / name).unlink()

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()
            self._sender = None


def _address(name: str) -> bytes:
    """The abstract socket address of listener ``name`` (unique per process and listener)."""
    return b"\0trellis-notify-" + name.encode()

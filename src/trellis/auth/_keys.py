"""API keys: making them, storing only an HMAC of them, and recognising them on requests.

A key reads ``trl_<id><secret>``: ``trl_``, a 12-hex-digit public id (shown by ``trellis keys
list``, used to find the stored row) and a 43-character random secret (256 bits). The database
keeps ``HMAC-SHA256(salt, key)`` with a per-key random salt, never the key; a presented key is
checked with a constant-time comparison.

:class:`KeyRing` keeps the active keys in memory and reloads them every ``refresh_seconds``, so
authenticating a request costs no database round trip. A key created or revoked by another
process (``trellis keys create|revoke``) takes effect within that delay.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from trellis.auth._roles import ANONYMOUS, Principal, Role
from trellis.errors import WorkflowError

if TYPE_CHECKING:
    from trellis.store import ApiKeyRecord, Store

PREFIX: Final = "trl_"
ID_LENGTH: Final = 12
"""Hex digits of the public id that follows :data:`PREFIX`."""


class Unauthorized(WorkflowError):
    """No API key, or one that is unknown or revoked (HTTP 401)."""

    name = "Unauthorized"
    status = 401


class Forbidden(WorkflowError):
    """A valid key whose role does not grant what the request needs (HTTP 403)."""

    name = "Forbidden"
    status = 403


def hash_key(key: str, salt: str) -> str:
    """``HMAC-SHA256(salt, key)`` in hex."""
    return hmac.new(bytes.fromhex(salt), key.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly created key: ``secret`` is shown once and never stored."""

    record: ApiKeyRecord
    secret: str

    def __repr__(self) -> str:  # the secret must never reach a log
        return f"NewKey(record={self.record!r}, secret='trl_***')"


async def create_key(store: Store, *, name: str, role: Role | str) -> NewKey:
    """Create a key for ``name`` with ``role``; the returned secret is the only copy.

    Raises:
        ValueError: ``role`` is not a :class:`Role` or ``name`` is empty.
        Conflict: an active key already has this name.
    """
    checked = Role(role)
    if not name.strip():
        raise ValueError("an API key needs a non-empty name")
    key_id = secrets.token_hex(ID_LENGTH // 2)
    secret = f"{PREFIX}{key_id}{secrets.token_urlsafe(32)}"
    salt = secrets.token_hex(16)
    record = await store.create_api_key(
        id=key_id, name=name.strip(), role=checked.value, salt=salt, secret_hash=hash_key(secret, salt)
    )
    return NewKey(record=record, secret=secret)


class KeyRing:
    """Authenticates presented keys against the active keys, cached for ``refresh_seconds``.

    With no active key at all the API is open and every caller is :data:`ANONYMOUS`.
    """

    def __init__(self, store: Store, *, refresh_seconds: float = 5.0) -> None:
        self._store = store
        self.refresh_seconds = refresh_seconds
        self._keys: dict[str, ApiKeyRecord] = {}
        self._loaded_at: float | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"KeyRing(keys={len(self._keys)}, refresh_seconds={self.refresh_seconds})"

    def invalidate(self) -> None:
        """Forget the cached keys; the next request reloads them."""
        self._loaded_at = None

    async def active_keys(self) -> dict[str, ApiKeyRecord]:
        """Active keys by id, reloaded when older than ``refresh_seconds``."""
        if self._fresh():
            return self._keys
        async with self._lock:
            if not self._fresh():
                keys = await self._store.list_api_keys()
                self._keys = {k.id: k for k in keys}
                self._loaded_at = time.monotonic()
        return self._keys

    def _fresh(self) -> bool:
        return self._loaded_at is not None and time.monotonic() - self._loaded_at < self.refresh_seconds

    async def open(self) -> bool:
        """True when no key is configured, so anyone may call the API."""
        return not await self.active_keys()

    async def authenticate(self, key: str | None) -> Principal:
        """The caller presenting ``key``.

        Raises:
            Unauthorized: keys are configured and ``key`` is missing, unknown or revoked.
        """
        keys = await self.active_keys()
        if not keys:
            return ANONYMOUS
        if not key:
            raise Unauthorized(
                "this API requires a key: send 'Authorization: Bearer trl_...' or 'X-API-Key: trl_...'"
            )
        record = keys.get(key[len(PREFIX) : len(PREFIX) + ID_LENGTH]) if key.startswith(PREFIX) else None
        # Compare even for an unknown id, so timing does not tell which ids exist.
        salt = record.salt if record is not None else "00" * 16
        expected = record.secret_hash if record is not None else "0" * 64
        if not hmac.compare_digest(hash_key(key, salt), expected) or record is None:
            raise Unauthorized("the API key is not valid (unknown, mistyped or revoked)")
        return Principal(name=record.name, role=Role(record.role), key_id=record.id)

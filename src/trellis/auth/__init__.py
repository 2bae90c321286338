"""Access to the API: roles and their permissions, API keys (stored hashed), callers.

See :mod:`trellis.auth._roles` for the role/permission matrix and :mod:`trellis.auth._keys`
for the key format and how keys are stored and checked.
"""

from trellis.auth._keys import Forbidden, KeyRing, NewKey, Unauthorized, create_key, hash_key
from trellis.auth._roles import ANONYMOUS, GRANTS, Permission, Principal, Role

__all__ = [
    "ANONYMOUS",
    "GRANTS",
    "Forbidden",
    "KeyRing",
    "NewKey",
    "Permission",
    "Principal",
    "Role",
    "Unauthorized",
    "create_key",
    "hash_key",
]

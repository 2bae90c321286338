"""Names of the private state channels the compiler's own nodes use to talk to each other.

Expressions never see them (:func:`trellis.nodes._wrapper.public_state` strips the prefix).
"""

from __future__ import annotations

PRIVATE_PREFIX = "__"
ITEM_KEY = "__item__"
"""The current element inside a map body (bound as ``item``)."""
INDEX_KEY = "__index__"
"""Its position (bound as ``index``)."""
RESULT_KEY = "__trellis_result__"
"""The last ``result`` inside a map body: the item's result."""
FAILURES_KEY = "__trellis_failures__"
"""``{parallel id: {branch: problem | None}}`` — each branch's outcome on the node's latest visit
(``None``: it succeeded), read by the join."""
MAP_KEY = "__trellis_map__"
"""``{map id: {index: {"result": ...} | {"error": problem}}}`` — per-item outcomes."""
RESET = "__reset__"
"""Written by a map node to clear its entry in ``MAP_KEY`` before its items run."""
ERROR_KEY = "__trellis_error__"
"""The problem a ``catch`` handled, bound as ``error`` in the fallback node it routed to."""

"""Parse definition text (YAML, or JSON) into plain data that remembers where everything was.

Parsing never raises: a syntax error becomes a ``PARSE_ERROR`` diagnostic with its line and
column, a repeated mapping key a ``DUPLICATE_KEY`` diagnostic (PyYAML would silently keep the
last one — and under ``nodes:`` that would silently drop a node).

YAML is read with a ``yaml.SafeLoader`` subclass whose implicit types follow YAML 1.2 (the core
schema) rather than PyYAML's YAML 1.1: ``on``/``yes``/``no`` stay strings (``retry.on`` is a
field name), ``1e3`` is a number, ``010`` is ten, and dates stay strings, so the data is plain
JSON. JSON files (``*.json``) are parsed with :mod:`json` and their syntax errors reported with
its line and column; the YAML node tree is still built for positions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from trellis.dsl.diagnostics import Code, Diagnostic
from trellis.dsl.walk import escape_pointer

_REPLACED_TAGS = {
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:timestamp",
}


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` with YAML 1.2 core-schema booleans, integers and floats, and no timestamps."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _REPLACED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    assert isinstance(node, yaml.ScalarNode)
    text = str(loader.construct_scalar(node))
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    if digits.startswith("0x"):
        return sign * int(digits[2:], 16)
    if digits.startswith("0o"):
        return sign * int(digits[2:], 8)
    return sign * int(digits, 10)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


@dataclass(frozen=True, slots=True)
class _Place:
    line: int
    """1-based line of the key (mapping entries) or of the node (list items, the root)."""
    col: int
    value: yaml.Node
    """The value's node, for positions *inside* a scalar."""


@dataclass(frozen=True)
class Document:
    """Parsed definition text: the data, parse problems, and the position of every value."""

    filename: str
    text: str = field(repr=False)
    data: Any
    """Plain Python data (``dict``/``list``/``str``/numbers/``bool``/``None``), or ``None``
    when the text could not be parsed."""
    diagnostics: tuple[Diagnostic, ...] = ()
    """``PARSE_ERROR`` and ``DUPLICATE_KEY`` problems found while parsing."""
    _places: Mapping[str, _Place] = field(default_factory=dict, repr=False)

    @property
    def parsed(self) -> bool:
        """False when the text was not valid YAML/JSON (``data`` is then ``None``)."""
        return not any(d.code == Code.PARSE_ERROR for d in self.diagnostics)

    def position(self, pointer: str) -> tuple[int, int] | None:
        """1-based ``(line, col)`` of the value at ``pointer`` — of its key, for mapping entries.

        A pointer to something absent (a missing key) falls back to its nearest existing
        ancestor. ``None`` when positions are unknown (unparsable text, data not from text).
        """
        place = self._nearest(pointer)
        return None if place is None else (place.line, place.col)

    def locate(self, pointer: str, offset: int) -> tuple[int, int] | None:
        """1-based ``(line, col)`` of character ``offset`` of the string at ``pointer``.

        Exact for plain and quoted scalars on one line (without escapes) and for literal
        block scalars (``|``); otherwise the position where the value starts.
        """
        place = self._places.get(pointer)
        if place is None:
            return self.position(pointer)
        node = place.value
        start = (node.start_mark.line + 1, node.start_mark.column + 1)
        if not isinstance(node, yaml.ScalarNode):
            return start
        if node.style in (None, "'", '"') and node.start_mark.line == node.end_mark.line:
            raw = self.text[node.start_mark.index : node.end_mark.index]
            quoted = node.style is not None
            if (raw[1:-1] if quoted else raw) == node.value and 0 <= offset <= len(node.value):
                return (start[0], start[1] + int(quoted) + offset)
        elif node.style == "|":
            return self._locate_in_block(node, offset) or start
        return start

    def _locate_in_block(self, node: yaml.ScalarNode, offset: int) -> tuple[int, int] | None:
        before = node.value[:offset]
        row, column = before.count("\n"), len(before) - (before.rfind("\n") + 1)
        text_lines = self.text.split("\n")
        first = node.start_mark.line + 1
        content = [line for line in text_lines[first : node.end_mark.line + 1] if line.strip()]
        if not content or first + row >= len(text_lines):
            return None
        indent = len(content[0]) - len(content[0].lstrip(" "))
        expected = node.value.split("\n")[row]
        if text_lines[first + row][indent:] != expected:
            return None
        return (first + row + 1, indent + column + 1)

    def _nearest(self, pointer: str) -> _Place | None:
        while True:
            place = self._places.get(pointer)
            if place is not None or not pointer:
                return place
            pointer = pointer.rsplit("/", 1)[0]


def load_document(text: str, filename: str = "<input>") -> Document:
    """Parse YAML or JSON text. Never raises: problems are in ``Document.diagnostics``.

    Args:
        text: the definition source.
        filename: shown in messages; a name ending in ``.json`` selects strict JSON parsing.

    Example:
        >>> doc = load_document("name: demo\\nstart: a\\n")
        >>> doc.data, doc.position("/start")
        ({'name': 'demo', 'start': 'a'}, (2, 1))
    """
    if filename.lower().endswith(".json"):
        return _load_json(text, filename)
    return _load_yaml(text, filename)


def _load_json(text: str, filename: str) -> Document:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        problem = Diagnostic(
            Code.PARSE_ERROR.value, "error", "", f"invalid JSON: {exc.msg}", exc.lineno, exc.colno
        )
        return Document(filename, text, None, (problem,))
    # JSON whitespace may contain tabs, which YAML refuses outside strings (where JSON allows
    # none); a same-length space keeps every position.
    tree = _load_yaml(text.replace("\t", " "), filename)
    if not tree.parsed:
        return Document(filename, text, data)
    return Document(filename, text, data, tree.diagnostics, tree._places)


def _load_yaml(text: str, filename: str) -> Document:
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return Document(filename, text, None)
        places: dict[str, _Place] = {}
        duplicates: list[Diagnostic] = []
        _index(root, "", (root.start_mark.line + 1, root.start_mark.column + 1), places, duplicates, set())
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        return Document(filename, text, None, (_parse_error(exc),))
    except yaml.YAMLError as exc:
        problem = Diagnostic(Code.PARSE_ERROR.value, "error", "", f"invalid YAML: {exc}")
        return Document(filename, text, None, (problem,))
    finally:
        loader.dispose()
    return Document(filename, text, data, tuple(duplicates), places)


def _parse_error(exc: yaml.MarkedYAMLError) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    message = f"invalid YAML: {exc.problem or exc.context or 'cannot parse'}"
    if exc.context and exc.problem and exc.context_mark is not None:
        message += f" ({exc.context} started on line {exc.context_mark.line + 1})"
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
    return Diagnostic(Code.PARSE_ERROR.value, "error", "", message, line, col)


def _index(
    node: yaml.Node,
    pointer: str,
    where: tuple[int, int],
    places: dict[str, _Place],
    duplicates: list[Diagnostic],
    seen: set[int],
) -> None:
    """Record the position of ``node`` and its children, and every repeated mapping key."""
    places[pointer] = _Place(where[0], where[1], node)
    if id(node) in seen:  # an alias to a collection already indexed: keep it linear
        return
    if isinstance(node, yaml.MappingNode):
        seen.add(id(node))
        first_seen: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key_line = key_node.start_mark.line + 1
            identity = (key_node.tag, key_node.value)
            child = f"{pointer}/{escape_pointer(key_node.value)}"
            if identity in first_seen:
                duplicates.append(
                    Diagnostic(
                        Code.DUPLICATE_KEY.value,
                        "error",
                        child,
                        f"duplicate key `{key_node.value}` (first on line {first_seen[identity]}); "
                        "YAML would silently keep only the last one",
                        key_line,
                        key_node.start_mark.column + 1,
                    )
                )
            else:
                first_seen[identity] = key_line
            # The data keeps the last value (PyYAML does), so positions follow the last one too.
            _index(value_node, child, (key_line, key_node.start_mark.column + 1), places, duplicates, seen)
    elif isinstance(node, yaml.SequenceNode):
        seen.add(id(node))
        for i, item in enumerate(node.value):
            item_where = (item.start_mark.line + 1, item.start_mark.column + 1)
            _index(item, f"{pointer}/{i}", item_where, places, duplicates, seen)

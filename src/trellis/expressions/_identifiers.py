"""The free top-level identifiers a CEL expression reads, found with a small tokenizer.

The CEL library we bind exposes no syntax tree, only a flat list of every identifier (macro
variables included). The validator needs the *free* ones — ``state`` and ``input`` in
``state.l.exists(x, x > input.min)`` but not ``x`` — to report names that are not bound where
the expression runs. This module lexes the (already compiled, hence well-formed) source and
tracks the scopes that comprehension macros open:

* string and bytes literals (quoted, raw, triple-quoted) and ``//`` comments are skipped;
* an identifier after a member-access dot (``a.b``) is a field, not a variable;
* an identifier followed by ``(`` is a function (``size(x)``, ``has(x.y)``);
* in ``<receiver>.<macro>(v, ...)`` the variable ``v`` is bound inside the parentheses only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Comprehension macros of CEL whose first argument declares an iteration variable.
MACROS = frozenset({"all", "exists", "exists_one", "existsOne", "map", "filter"})

#: Words that look like identifiers but are literals or operators.
KEYWORDS = frozenset({"true", "false", "null", "in"})

#: Library namespaces used as ``namespace.function(...)``, never variables.
NAMESPACES = frozenset({"optional"})

_STRING_START = re.compile(r"(?:[rR][bB]?|[bB][rR]?)?(\"\"\"|'''|\"|')")
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+[uU]?|(?:\d+\.\d+|\.\d+)(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+[uU]?")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TWO_CHAR_OPERATORS = frozenset({"&&", "||", "==", "!=", "<=", ">="})
_OPERAND_END = frozenset({"ident", "number", "string", "quoted"})


@dataclass(frozen=True, slots=True)
class Token:
    """One lexical token: ``kind`` is ident, number, string, quoted (a backtick name) or punct."""

    kind: str
    text: str
    position: int


def tokenize(source: str) -> list[Token]:
    """Split CEL source into tokens, dropping whitespace and comments.

    The source is assumed to have compiled; on malformed input the result is best effort
    (an unterminated string runs to the end), never an exception.
    """
    tokens: list[Token] = []
    i, n = 0, len(source)
    while i < n:
        char = source[i]
        if char.isspace():
            i += 1
        elif source.startswith("//", i):
            newline = source.find("\n", i)
            i = n if newline < 0 else newline + 1
        elif (string := _STRING_START.match(source, i)) is not None:
            end = _string_end(source, string.end(), string.group(1), "r" in string.group(0).lower())
            tokens.append(Token("string", source[i:end], i))
            i = end
        elif char == "`":
            close = source.find("`", i + 1)
            end = n if close < 0 else close + 1
            tokens.append(Token("quoted", source[i:end], i))
            i = end
        elif (number := _NUMBER.match(source, i)) is not None and (char != "." or _starts_float(tokens)):
            tokens.append(Token("number", number.group(0), i))
            i = number.end()
        elif (ident := _IDENT.match(source, i)) is not None:
            tokens.append(Token("ident", ident.group(0), i))
            i = ident.end()
        elif source[i : i + 2] in _TWO_CHAR_OPERATORS:
            tokens.append(Token("punct", source[i : i + 2], i))
            i += 2
        else:
            tokens.append(Token("punct", char, i))
            i += 1
    return tokens


def free_identifiers(source: str) -> frozenset[str]:
    """Identifiers ``source`` reads from its bindings (not fields, functions or macro variables).

    Example:
        >>> sorted(free_identifiers("state.l.exists(x, x > input.min) && has(result.y)"))
        ['input', 'result', 'state']
    """
    tokens = tokenize(source)
    free: set[str] = set()
    scopes: list[frozenset[str]] = []
    declarations: set[int] = set()
    for k, token in enumerate(tokens):
        if token.kind == "punct":
            if token.text in "([{":
                bound = _macro_variable(tokens, k)
                if bound is not None:
                    declarations.add(k + 1)
                scopes.append(frozenset() if bound is None else frozenset({bound}))
            elif token.text in ")]}" and scopes:
                scopes.pop()
            continue
        if token.kind != "ident" or k in declarations or token.text in KEYWORDS:
            continue
        following = tokens[k + 1].text if k + 1 < len(tokens) and tokens[k + 1].kind == "punct" else ""
        if _is_member(tokens, k) or following in ("(", "{"):
            continue  # a field, a function or method, or a message type name
        if token.text in NAMESPACES and following == ".":
            continue
        if any(token.text in scope for scope in scopes):
            continue
        free.add(token.text)
    return frozenset(free)


def _string_end(source: str, start: int, quote: str, raw: bool) -> int:
    """Index just past the closing ``quote`` of a literal whose body starts at ``start``."""
    i, n = start, len(source)
    while i < n:
        if not raw and source[i] == "\\":
            i += 2
        elif source.startswith(quote, i):
            return i + len(quote)
        else:
            i += 1
    return n


def _starts_float(tokens: list[Token]) -> bool:
    """Whether a ``.`` followed by a digit starts a literal like ``.5`` (not a member access)."""
    return not tokens or not _ends_operand(tokens[-1])


def _ends_operand(token: Token) -> bool:
    return token.kind in _OPERAND_END or token.text in (")", "]", "}")


def _is_member(tokens: list[Token], k: int) -> bool:
    """Whether the identifier at ``k`` follows a member-access dot (``x.name``)."""
    if k == 0 or tokens[k - 1].text != "." or tokens[k - 1].kind != "punct":
        return False
    # A leading dot (``.name``, root-qualified) follows an operator or nothing.
    return k >= 2 and _ends_operand(tokens[k - 2])


def _macro_variable(tokens: list[Token], k: int) -> str | None:
    """The variable declared by ``.macro(v, ...`` when ``tokens[k]`` is that ``(``."""
    if tokens[k].text != "(" or k < 2 or k + 2 >= len(tokens):
        return None
    name, dot, variable, comma = tokens[k - 1], tokens[k - 2], tokens[k + 1], tokens[k + 2]
    is_macro = name.kind == "ident" and name.text in MACROS and (dot.kind, dot.text) == ("punct", ".")
    declares = variable.kind == "ident" and (comma.kind, comma.text) == ("punct", ",")
    return variable.text if is_macro and declares else None

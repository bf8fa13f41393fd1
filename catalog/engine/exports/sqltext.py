"""SQL text read as the server reads it: a row filter that must stay one
condition, a column's constant default, a generation expression that must
stay inside the loader's parentheses."""

import re
from typing import Any


def filter_problem(text: str, sqlite: bool = False) -> str:
    """Why a row filter cannot stand as one condition between the WHERE ( and
    ) the export puts around it, or "" when it can.

    The filter is SQL text pasted between those parentheses, so a ")" of its
    own could close them: "id < 10) OR (true" is valid SQL, and selects every
    row. Read as the server reads it, outside quoted text and identifiers
    every ")" must close a "(" of the filter's own and every "(" must be
    closed; and nothing may change where quoted text or the statement ends as
    this reading would not see it: no ";", no comment, no dollar quote, no
    E'…' string (its backslashes escape quotes). The exports set
    standard_conforming_strings, so plain '…' strings follow the same rules
    here and on the server."""
    quotes = "'\"`[" if sqlite else "'\""
    depth, position = 0, 0
    opened_at: list[int] = []
    while position < len(text):
        char = text[position]
        if char in quotes:
            if char == "'" and not sqlite and escape_string_prefix(text, position):
                return (
                    f"the E'…' string at character {position} is not accepted here; "
                    "write it in standard quotes ('it''s')"
                )
            close = text.find("]", position + 1) + 1 if char == "[" else quoted_end(text, position)
            if not close:
                return f"the quote at character {position + 1} is never closed"
            position = close
            continue
        if char == "(":
            depth += 1
            opened_at.append(position)
        elif char == ")":
            if depth == 0:
                return (
                    f"the ')' at character {position + 1} closes a parenthesis the filter did not open, "
                    "which would take the condition out of the export's own"
                )
            depth -= 1
            opened_at.pop()
        elif char == ";":
            return "it holds a ';': a filter is one condition, not statements"
        elif text.startswith(("--", "/*"), position):
            return "it holds a comment (-- or /*), which could hide the rest of the query"
        elif char == "$" and not sqlite:
            return "it holds a '$': dollar quoting is not accepted in a filter"
        position += 1
    if depth:
        return f"the '(' at character {opened_at[-1] + 1} is never closed"
    return ""


def escape_string_prefix(text: str, quote_at: int) -> bool:
    """Whether the quote at `quote_at` opens an E'…' string: the word right
    before it is E (not the end of a longer word such as date'2026-01-01')."""
    start = quote_at
    while start and (text[start - 1].isalnum() or text[start - 1] in "_$"):
        start -= 1
    return text[start:quote_at].lower() == "e"


# A constant default as pg_get_expr() writes it: a literal, possibly in
# parentheses and cast ('-1'::integer, ('5'::text)::integer). The loader
# accepts nothing else, so an archive cannot put an expression into CREATE
# TABLE; each cast's type is also checked with to_regtype() there.
CONSTANT_LITERAL = re.compile(
    r"NULL|TRUE|FALSE|[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|'(?:[^']|'')*'", re.IGNORECASE
)


def parse_constant(text: Any) -> tuple[str, list[str]] | None:
    """(literal, [cast type names, innermost first]) of a constant default,
    or None when the text is anything else."""

    def operand(position: int) -> tuple[str, list[str], int] | None:
        if text.startswith("(", position):
            inner = operand(position + 1)
            if inner is None or not text.startswith(")", inner[2]):
                return None
            literal, casts, position = inner[0], inner[1], inner[2] + 1
        else:
            match = CONSTANT_LITERAL.match(text, position)
            if match is None:
                return None
            literal, casts, position = match.group(), [], match.end()
        while text.startswith("::", position):
            end = type_name_end(text, position + 2)
            if end is None:
                return None
            casts.append(text[position + 2 : end].strip())
            position = end
        return literal, casts, position

    if not isinstance(text, str) or len(text) > 10_000:
        return None
    parsed = operand(0)
    if parsed is None or parsed[2] != len(text):
        return None
    return parsed[0], parsed[1]


def type_name_end(text: str, start: int) -> int | None:
    """Where a type name after "::" ends: at the next "::", at a ")" it did
    not open, or at the end; None if it holds anything no type name has."""
    depth, position = 0, start
    while position < len(text):
        char = text[position]
        if char == '"':
            close = quoted_end(text, position)
            if close is None:
                return None
            position = close
            continue
        if text.startswith("::", position) and depth == 0:
            break
        if char == "(":
            depth += 1
        elif char == ")":
            if depth == 0:
                break
            depth -= 1
        elif not (char.isalnum() or char in "_$ .,[]"):
            return None
        position += 1
    if depth or not text[start:position].strip():
        return None
    return position


def quoted_end(text: str, start: int) -> int | None:
    """The position after a '…' or "…" that starts at `start` (the quote
    doubled inside it), or None if it does not end."""
    quote, position = text[start], start + 1
    while True:
        close = text.find(quote, position)
        if close == -1:
            return None
        if text.startswith(quote * 2, close):
            position = close + 2
            continue
        return close + 1


def is_balanced_expression(text: Any) -> bool:
    """Whether a generation expression can go between the loader's own
    parentheses in GENERATED ALWAYS AS (…) and stay inside them: its
    parentheses balance outside quotes, and it has no statement separator,
    comment, dollar quote or escaped string (E'…', whose quotes follow other
    rules). pg_get_expr() writes none of those with standard_conforming_strings
    on. The statement is also sent on its own (prepared), never with another."""
    if not isinstance(text, str) or not text.strip() or len(text) > 100_000:
        return False
    depth, position = 0, 0
    while position < len(text):
        char = text[position]
        if char in "'\"":
            if char == "'" and position and (text[position - 1].isalnum() or text[position - 1] in "_&$"):
                return False  # E'…', U&'…', B'…' and the like
            close = quoted_end(text, position)
            if close is None:
                return False
            position = close
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                return False
        elif char in ";\\$" or text.startswith("--", position) or text.startswith("/*", position):
            return False
        position += 1
    return depth == 0

"""Value codecs: a SQLite value written as the text, JSON value or SQL
literal an export holds, and the CSV, JSON Lines and SQL members' values read
back (by the SQLite loader, which cannot hand them to PostgreSQL to parse)."""

import json
import math
import re
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from catalog.engine.errors import CorruptionError
from catalog.engine.exports.archive import Column

# A value as SQLite hands it over (or takes it), and one a JSON member holds.
SqliteValue = int | float | str | bytes | None
JsonValue = bool | int | float | str | list[Any] | dict[str, Any] | None


class LineReader(Protocol):
    def lines(self) -> Iterator[bytes]: ...


def sqlite_text(value: int | float | str | bytes) -> str:
    """A SQLite value as the text PostgreSQL reads back into its column."""
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    return str(value)


def csv_field(value: SqliteValue) -> str:
    # NULL is the unquoted empty field; every value is quoted, so "" is an empty string.
    if value is None:
        return ""
    return '"' + sqlite_text(value).replace('"', '""') + '"'


def json_value(value: SqliteValue) -> int | float | str | None:
    if value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return sqlite_text(value)


def sql_literal(value: SqliteValue) -> str:
    """What quote_nullable() would write for the value's text."""
    if value is None:
        return "NULL"
    text = sqlite_text(value).replace("'", "''")
    if "\\" in text:
        return "E'" + text.replace("\\", "\\\\") + "'"
    return "'" + text + "'"


# A statement's VALUES list as written by quote_nullable(): NULL, '…' (a
# quote doubled) or E'…' (a quote doubled, a backslash doubled). Anything
# else in an SQL member is refused before it reaches the server.
LITERAL = r"(?:NULL|'[^']*(?:''[^']*)*'|E'[^'\\]*(?:(?:\\\\|'')[^'\\]*)*')"
VALUES_LIST = re.compile(rf"{LITERAL}(?:, {LITERAL})*\);", re.DOTALL)


def insert_statements(reader: LineReader, prefix: str, qualified: str) -> Iterator[str]:
    """The SQL member's statements, each checked to be `prefix` followed by a
    VALUES list of literals (CorruptionError otherwise)."""
    statement = ""
    for line in reader.lines():
        statement += line.decode() if not statement else "\n" + line.decode()
        if not statement.endswith(");") or statement.count("'", len(prefix)) % 2:
            continue  # a line break inside a literal
        if not statement.startswith(prefix) or not VALUES_LIST.fullmatch(statement, len(prefix)):
            raise CorruptionError(f"The SQL member for {qualified} has a statement that is not one of its INSERTs")
        yield statement
        statement = ""
    if statement.strip():
        raise CorruptionError(f"The SQL member for {qualified} ends in the middle of a statement")


CSV_FIELD = re.compile(r'"((?:[^"]|"")*)"|([^,"\n]*)')
QUOTED = re.compile(r"''|\\\\")


def sqlite_value(value: JsonValue, column: Column) -> SqliteValue:
    """The export's text (or JSON value) as the value SQLite stores."""
    if isinstance(value, str):
        target = column.get("create_as")
        if target == "bytea" and value.startswith("\\x"):
            return bytes.fromhex(value[2:])
        if target == "double precision" and value in ("NaN", "Infinity", "-Infinity"):
            return float(value.replace("Infinity", "inf"))
    elif isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return value


def csv_records(lines: Iterable[bytes], width: int, qualified: str) -> Iterator[list[str | None]]:
    """Rows of a CSV member as written for SQLite sources: the header line
    first, NULL an unquoted empty field, every other value quoted (so that ""
    is an empty string; Python's csv module cannot tell the two apart)."""
    record: str | None = None
    header = True
    for line in lines:
        text = line.decode()
        record = text if record is None else record + "\n" + text
        if record.count('"') % 2:
            continue  # a line break inside a quoted value
        fields: list[str | None] = []
        position = 0
        while True:
            match = CSV_FIELD.match(record, position)
            assert match is not None, "the pattern matches an empty field too"
            quoted, bare = match.groups()
            fields.append(quoted.replace('""', '"') if quoted is not None else (bare or None))
            position = match.end()
            if position == len(record):
                break
            if record[position] != ",":
                raise CorruptionError(f"The CSV member for {qualified} has a malformed row")
            position += 1
        record = None
        if header:
            header = False
            continue
        yield fields
    if record is not None:
        raise CorruptionError(f"The CSV member for {qualified} ends inside a quoted value")


def jsonl_documents(lines: Iterable[bytes], qualified: str) -> Iterator[dict[str, Any]]:
    for line in lines:
        try:
            document = json.loads(line)
        except ValueError as exc:
            raise CorruptionError(f"The JSON Lines member for {qualified} has a line that is not JSON") from exc
        if not isinstance(document, dict):
            raise CorruptionError(f"The JSON Lines member for {qualified} has a line that is not an object")
        yield document


def sql_values(values_list: str) -> list[str | None]:
    """The values of a checked VALUES list ("'a', NULL, E'b\\\\c');")."""
    values: list[str | None] = []
    for match in re.finditer(LITERAL, values_list):
        literal = match.group()
        if literal == "NULL":
            values.append(None)
        else:
            escaped = literal.startswith("E")
            inner = literal[2:-1] if escaped else literal[1:-1]
            values.append(QUOTED.sub(lambda m: m.group()[0], inner) if escaped else inner.replace("''", "'"))
    return values

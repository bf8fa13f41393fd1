"""Counting the rows of pg_dump's SQL as it passes: a plain-format dump, or
what `pg_restore --data-only --file=-` writes out of an archive.

pg_dump writes a table's rows as a COPY section: `COPY schema.table (...)
FROM stdin;`, one line per row (a newline inside a value is written as \\n,
so a raw newline always ends a row), then a line `\\.`. Inside a section the
rows are counted in C over whole chunks; outside, the lines are read one by
one, which only happens for the schema.

What else the counter notes, for the import's checks (catalog/engine/imports.py):
rows written as INSERT statements (pg_dump --inserts), whose count it does
not know; `\\connect` and CREATE DATABASE (pg_dump --create), which would
send a restore into the dump's own database; and a stream that ends inside
a section, which is a dump cut short.
"""

import re

# `COPY "Inventory"."Stock Item" (id, name) FROM stdin;`: pg_dump names every table with its schema.
NAME = rb'"(?:[^"]|"")+"|[^\s."]+'
COPY_LINE = re.compile(rb"COPY (?P<schema>" + NAME + rb")\.(?P<table>" + NAME + rb")(?: .*)? FROM stdin;")
END_OF_DATA = b"\\."


def unquote(name: bytes) -> str:
    text = name.decode("utf-8", errors="replace")
    if text.startswith('"'):
        return text[1:-1].replace('""', '"')
    return text


class CopyCounter:
    """feed() the SQL in chunks, then finish(); `counts` is {"schema.table": rows}."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.sections = 0
        self.inserts = False  # rows as INSERT statements: not counted
        self.connects = False  # \connect or CREATE DATABASE
        self.cut_short = False  # ended inside a COPY section
        self._table: str | None = None  # inside this table's COPY section
        self._pending = b""  # a line not ended yet

    def feed(self, data: bytes) -> None:
        buffer = self._pending + data if self._pending else data
        pos = 0
        while pos < len(buffer):
            if self._table is not None:
                end = self._end_of_section(buffer, pos)
                if end < 0:
                    # Every whole line so far is a row; the last, unfinished one may be "\." still.
                    last = buffer.rfind(b"\n", pos)
                    if last >= 0:
                        self.counts[self._table] += buffer.count(b"\n", pos, last + 1)
                        pos = last + 1
                    break
                self.counts[self._table] += buffer.count(b"\n", pos, end)
                self._table = None
                pos = end + len(END_OF_DATA) + 1
            else:
                newline = buffer.find(b"\n", pos)
                if newline < 0:
                    break
                self._line(buffer[pos:newline])
                pos = newline + 1
        self._pending = buffer[pos:]

    def finish(self) -> dict[str, int]:
        rest, self._pending = self._pending, b""
        if self._table is not None and rest == END_OF_DATA:
            self._table = None
        elif self._table is None and rest:
            self._line(rest)
        self.cut_short = self._table is not None
        return self.counts

    def _end_of_section(self, buffer: bytes, pos: int) -> int:
        """Where the line `\\.` that ends the section starts, or -1 when it is not in `buffer` yet."""
        if buffer.startswith(END_OF_DATA + b"\n", pos):
            return pos
        found = buffer.find(b"\n" + END_OF_DATA + b"\n", pos)
        return found + 1 if found >= 0 else -1

    def _line(self, line: bytes) -> None:
        if line.startswith(b"COPY ") and (match := COPY_LINE.fullmatch(line)):
            self._table = f"{unquote(match['schema'])}.{unquote(match['table'])}"
            self.counts.setdefault(self._table, 0)
            self.sections += 1
        elif line.startswith(b"INSERT INTO "):
            self.inserts = True
        elif line.startswith((b"\\connect ", b"\\c ", b"CREATE DATABASE ")):
            self.connects = True

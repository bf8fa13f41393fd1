"""CSV files a spreadsheet opens as data, never as formulas.

A cell that starts with =, +, -, @, a tab or a carriage return is a formula
to Excel, LibreOffice and Google Sheets ("CSV injection"): a user name typed
at the sign-in form, or a source named =HYPERLINK(…), would run when an
auditor opens the export. Every CSV Strongroom writes for people (the audit
export, the compliance report) goes through `writer`, which puts a ' in front
of such a cell, and in front of a cell that already starts with ', so that
`original_cell` can always take it off again (how the audit export's hashes
are re-verified, see README "Audit trail").

Not for the data of table exports (catalog/engine/exports/): those files are
the rows themselves, read back by COPY, and must stay exact."""

import csv
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, Protocol

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
ESCAPE = "'"


def safe_cell(value: object) -> object:
    """The value as written to a cell: numbers as they are (-5 is a number,
    not a formula), any other text with a ' in front when a spreadsheet would
    take it for a formula, or when it starts with ' itself."""
    if value is None or isinstance(value, (bool, int, float, Decimal)):
        return value
    text = str(value)
    return ESCAPE + text if text.startswith((*FORMULA_STARTS, ESCAPE)) else text


def original_cell(text: str) -> str:
    """The value a cell read back from one of these files stood for."""
    return text[len(ESCAPE) :] if text.startswith(ESCAPE) else text


class TextOut(Protocol):
    """Where csv.writer writes: a file, a StringIO, or a streaming response's pseudo-buffer."""

    def write(self, text: str, /) -> object: ...


class SafeWriter:
    """csv.writer whose every cell goes through safe_cell."""

    def __init__(self, out: TextOut, **options: Any) -> None:
        self._writer = csv.writer(out, **options)

    def writerow(self, row: Iterable[object]) -> Any:
        return self._writer.writerow([safe_cell(value) for value in row])

    def writerows(self, rows: Iterable[Iterable[object]]) -> None:
        for row in rows:
            self.writerow(row)


def writer(out: TextOut, **options: Any) -> SafeWriter:
    return SafeWriter(out, **options)

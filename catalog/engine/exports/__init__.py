"""Selective exports: chosen tables of a PostgreSQL database (or of a SQLite
file) as JSON Lines, CSV or SQL INSERT statements in one tar archive, and
loading them back. The archive's format, readable without Strongroom, is
documented in archive.py.

  archive.py        the archive's format: members, manifest, session, TableSpec
  schema.py         a PostgreSQL source's tables, columns and row filters
  sqlite_source.py  the same for a SQLite source, and its rows
  sqltext.py        SQL text read as the server would (filters, defaults,
                    generation expressions)
  values.py         value codecs: SQLite values written in the export's
                    formats, and the formats' values read back
  writer.py         ExportDump, which streams the archive
  loader.py         ExportLoader and load_export, into PostgreSQL
  sqlite_loader.py  load_export_sqlite, into a new SQLite file
"""

from catalog.engine.exports.archive import EXPORT_FORMATS, MANIFEST_MEMBER, TableSpec
from catalog.engine.exports.loader import load_export
from catalog.engine.exports.schema import list_tables, match_tables, validate_where
from catalog.engine.exports.sqlite_loader import load_export_sqlite
from catalog.engine.exports.writer import ExportDump

__all__ = [
    "EXPORT_FORMATS",
    "MANIFEST_MEMBER",
    "ExportDump",
    "TableSpec",
    "list_tables",
    "load_export",
    "load_export_sqlite",
    "match_tables",
    "validate_where",
]

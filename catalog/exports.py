"""Export plans: which tables a plan exports, checked against the live schema.

The engine (catalog.engine.exports) writes and reads the archives; this
module answers the catalog's questions about them: which tables a source has
(for the table picker), what a plan's choice comes to at a run, and whether a
choice typed into the plan form is one a run can carry out. A row filter is
proved by the database itself (validate_where), so a wrong one is refused
with PostgreSQL's own words when the plan is saved, not at 3 a.m.
"""

import io
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.conf import settings
from django.http import QueryDict

from catalog.engine import exports as engine
from catalog.engine import mariadb
from catalog.engine.errors import EngineError, SourceError
from catalog.engine.exports.archive import Conninfo, LiveTable
from catalog.engine.files import make_private_dirs
from catalog.engine.pipeline import ChunkFile
from catalog.models import BackupPlan, Source

EMPTY_SET_ROWS = 3  # blank label/pattern rows offered in the form, so a set can be added without script


def export_conninfo(source: Source) -> Conninfo:
    """What the export engine connects with: a SQLite source is its file's path."""
    return source.sqlite_path if source.engine == "sqlite" else source.conninfo()


def live_tables(source: Source) -> list[LiveTable]:
    """The source's tables, columns and row estimates, read from its catalog
    (SQLite tables are in schema "main", a MariaDB database's in its name)."""
    if source.engine == "mariadb":
        return mariadb.live_tables(source.conninfo())
    return engine.list_tables(export_conninfo(source))


def qualified(table: Mapping[str, Any]) -> str:
    return f"{table['schema']}.{table['name']}"


def resolve_specs(plan: BackupPlan, tables: Sequence[Mapping[str, Any]] | None = None) -> list[engine.TableSpec]:
    """The TableSpecs a run of `plan` exports now. A table picked by name that
    no longer exists fails the run (its data would silently be missing); a
    named set that matches nothing today is simply empty."""
    tables = live_tables(plan.source) if tables is None else tables
    known = {qualified(t) for t in tables}
    gone = sorted(qualified(t) for t in plan.export_tables if qualified(t) not in known)
    if gone:
        raise SourceError(
            f"The source no longer has the table(s) {', '.join(gone)} that plan {plan} exports; edit the plan."
        )
    specs = plan.table_specs(tables)
    if not specs:
        raise SourceError(f"Plan {plan} picks no table and none of its named sets matches a table of the source.")
    return specs


def load_into(
    plain_chunks: Iterable[bytes], params: Mapping[str, Any], tables: Iterable[str] | None = None
) -> dict[str, int]:
    """Loads a decrypted, decompressed export stream into the database `params`
    names with the engine's load_export; returns {table: rows loaded}. The
    stream is read to its very end, so that its SHA-256 and final segment are
    checked even if the archive's reader stopped at the end-of-archive marker."""
    reader = ChunkFile(plain_chunks)
    loaded = engine.load_export(io.BufferedReader(reader, CHUNK_SIZE), params, tables=tables or None)
    reader.drain()
    return loaded


def load_into_sqlite(plain_chunks: Iterable[bytes], path: str, tables: Iterable[str] | None = None) -> dict[str, int]:
    """load_into for a SQLite source's export: into the (new) SQLite file at `path`."""
    reader = ChunkFile(plain_chunks)
    loaded = engine.load_export_sqlite(io.BufferedReader(reader, CHUNK_SIZE), path, tables=tables or None)
    reader.drain()
    return loaded


CHUNK_SIZE = 1 << 20


# --- the plan form's choice ---------------------------------------------------------


def selection_from(data: QueryDict) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(tables, sets) as the plan stores them, from the picker's inputs in a
    POST or an htmx GET: export_table=<schema.name>, where:<schema.name>=...,
    and set_label / set_pattern pairs (blank pairs are ignored)."""
    tables: list[dict[str, str]] = []
    for name in dict.fromkeys(data.getlist("export_table")):
        schema, _, table = name.partition(".")
        tables.append({"schema": schema, "name": table, "where": data.get(f"where:{name}", "").strip()})
    sets: list[dict[str, str]] = []
    # A posted form, maybe by hand: a missing half pairs with nothing, as before.
    for label, pattern in zip(data.getlist("set_label"), data.getlist("set_pattern"), strict=False):
        label, pattern = label.strip(), pattern.strip()
        if label or pattern:
            sets.append({"label": label or pattern, "pattern": pattern})
    return tables, sets


def check_selection(
    source: Source,
    tables: Sequence[Mapping[str, str]],
    sets: Sequence[Mapping[str, str]],
    live: Iterable[Mapping[str, Any]],
    filters: bool = True,
) -> dict[str, str]:
    """{key: message} of what is wrong with a choice: a table key ("schema.name")
    for its filter, "sets" and "all" for the rest. Every WHERE is run by the
    source with LIMIT 0, so a wrong one comes back in PostgreSQL's words.
    `filters`: whether the format takes row filters at all (a MariaDB dump does not)."""
    errors: dict[str, str] = {}
    known = {qualified(t) for t in live}
    unknown = [qualified(t) for t in tables if qualified(t) not in known]
    if unknown:
        errors["all"] = f"The source has no table {', '.join(unknown)}."
    if not tables and not sets:
        errors["all"] = "Pick at least one table or add a named set: an export of nothing protects nothing."
    if any(not s["pattern"] for s in sets):
        errors["sets"] = "Give each named set a pattern, such as public.audit_*."
    # The plan keeps its choice as JSON, and PostgreSQL cannot store a NUL character in it.
    if any("\x00" in s["label"] + s["pattern"] for s in sets):
        errors["sets"] = "A named set's label or pattern cannot hold a NUL character."
    for table in tables:
        if table["where"] and not filters:
            errors[qualified(table)] = (
                "A MariaDB backup dumps whole tables (mariadb-dump has no row filter per table): leave it empty, "
                "or make an export plan for filtered rows."
            )
        elif "\x00" in table["where"]:
            errors[qualified(table)] = "A row filter cannot hold a NUL character."
        elif table["where"] and qualified(table) in known:
            try:
                engine.validate_where(
                    export_conninfo(source), engine.TableSpec(table["schema"], table["name"], table["where"])
                )
            except EngineError as exc:
                errors[qualified(table)] = str(exc)
    return errors


def picker(
    source: Source | None,
    tables: Iterable[Mapping[str, Any]] = (),
    sets: Iterable[Mapping[str, Any]] = (),
    errors: dict[str, str] | None = None,
    live: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """What the table picker shows: the source's tables grouped by schema (a
    partitioned table once, by its parent's name, which exports every
    partition's rows), the ones picked ticked with their filters, and each
    named set with the tables it matches today. `live` is list_tables() when the caller already read it."""
    errors = errors or {}
    if source is None:
        return {"message": "Choose a source to see its tables."}
    if live is None:
        try:
            live = live_tables(source)
        except EngineError as exc:
            return {"message": f"Cannot list the tables of {source}: {exc}"}
    picked = {qualified(t): t for t in tables}
    schemas: dict[str, list[dict[str, Any]]] = {}
    for table in sorted(live, key=lambda t: (t["schema"], t["name"])):
        name = qualified(table)
        schemas.setdefault(table["schema"], []).append(
            {
                "qualified": name,
                "name": table["name"],
                "rows_estimate": table.get("rows_estimate"),
                # A partitioned parent stands for its partitions, which are not listed.
                "partitions": table.get("partitions"),
                "columns": ", ".join(column["name"] for column in table.get("columns", [])),
                "checked": name in picked,
                "where": picked.get(name, {}).get("where", ""),
                "error": errors.get(name, ""),
            }
        )
    # A picked table that is gone stays on the list, ticked and flagged: left
    # out silently, the next save would drop it from the plan unnoticed.
    for name, table in picked.items():
        if not any(row["qualified"] == name for rows in schemas.values() for row in rows):
            schemas.setdefault(table["schema"], []).append(
                {
                    "qualified": name,
                    "name": table["name"],
                    "rows_estimate": None,
                    "columns": "",
                    "checked": True,
                    "where": table.get("where", ""),
                    "missing": True,
                    "error": errors.get(name)
                    or "Not in this source (dropped, or picked from another source): untick it to save the plan.",
                }
            )
    set_rows = [{**s, "matches": engine.match_tables(live, s["pattern"]) if s["pattern"] else []} for s in sets]
    set_rows += [{"label": "", "pattern": "", "matches": []}] * EMPTY_SET_ROWS
    # A MariaDB dump takes whole tables (and none ticked is the whole database).
    filters = source.engine != "mariadb"
    return {"schemas": sorted(schemas.items()), "sets": set_rows, "errors": errors, "filters": filters}


def spool_dir() -> str:
    """Where the export engine may keep a table's member until its size is known."""
    return make_private_dirs(os.path.join(settings.DATA_DIR, "tmp"))

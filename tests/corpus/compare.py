"""Snapshots of a whole database, and the differences between two of them.

A snapshot must be taken by a superuser (or a role with BYPASSRLS that can
read every table and large object): row-level security would otherwise hide
rows, and pg_dump would miss objects.
"""

import collections
import dataclasses
import difflib
import os
import re
import subprocess

import psycopg
from psycopg import sql

from tests.harness.sample_db import libpq_env

USER_RELATIONS = """
SELECT c.oid, n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm', 'S')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
ORDER BY 2, 3
"""

COLUMNS = """
SELECT a.attname,
       coalesce(nullif(t.typbasetype, 0), t.oid) = 'pg_catalog.oid'::regtype AS holds_oid,
       coalesce(a.attnum = ANY (i.indkey), false) AS in_key
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

DATABASE = """
SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype, datlocprovider::text,
       daticulocale, datconnlimit, datacl::text[], shobj_description(oid, 'pg_database')
FROM pg_database WHERE datname = current_database()
"""
DATABASE_FIELDS = (
    "owner",
    "encoding",
    "collate",
    "ctype",
    "locale provider",
    "ICU locale",
    "connection limit",
    "privileges",
    "comment",
)

DATABASE_SETTINGS = """
SELECT coalesce(r.rolname, 'every role'), unnest(s.setconfig)
FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole
WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
"""

# Roles this database depends on: owners, grantees, policy roles, roles with
# settings in it. The bootstrap superuser (oid 10) exists in every cluster.
ROLES = """
WITH db AS (SELECT oid FROM pg_database WHERE datname = current_database()),
referenced AS (
    SELECT s.refobjid AS role FROM pg_shdepend s, db
    WHERE s.refclassid = 'pg_authid'::regclass
      AND (s.dbid = db.oid OR (s.dbid = 0 AND s.classid = 'pg_database'::regclass AND s.objid = db.oid))
    UNION SELECT setrole FROM pg_db_role_setting, db WHERE setdatabase = db.oid AND setrole <> 0
    UNION SELECT datdba FROM pg_database, db WHERE pg_database.oid = db.oid
)
SELECT r.rolname, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin, r.rolreplication,
       r.rolbypassrls, r.rolconnlimit, r.rolvaliduntil::text, r.rolconfig, shobj_description(r.oid, 'pg_authid'),
       ARRAY(SELECT g.rolname || CASE WHEN m.admin_option THEN ' with admin option' ELSE '' END
             FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid ORDER BY 1)
FROM pg_roles r JOIN referenced ON referenced.role = r.oid
WHERE r.oid <> 10
"""
ROLE_FIELDS = (
    "superuser",
    "inherit",
    "create role",
    "create database",
    "login",
    "replication",
    "bypass RLS",
    "connection limit",
    "valid until",
    "settings",
    "comment",
    "member of",
)

LARGE_OBJECTS = """
SELECT m.oid, pg_get_userbyid(m.lomowner), m.lomacl::text[], obj_description(m.oid, 'pg_largeobject'),
       md5(content.bytes), octet_length(content.bytes)
FROM pg_largeobject_metadata m, LATERAL (SELECT lo_get(m.oid) AS bytes) content
"""

# Output that depends on the session, fixed so that two snapshots agree.
STABLE_OUTPUT = """
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, MDY';
SET IntervalStyle = 'postgres';
SET extra_float_digits = 1;
SET bytea_output = 'hex';
SET lc_monetary = 'C';
SET search_path = pg_catalog;
"""

SHOWN_PER_KIND = 10
SHOWN_SCHEMA_LINES = 80


@dataclasses.dataclass
class TableChanges:
    """Keys, as ROW(primary key)::text, e.g. '(2024-01-01 00:00:00+00)'.
    For a table without a primary key the whole rows stand in for keys and
    nothing is ever 'updated'."""

    deleted: list = dataclasses.field(default_factory=list)
    updated: list = dataclasses.field(default_factory=list)
    inserted: list = dataclasses.field(default_factory=list)

    def sort(self):
        self.deleted.sort()
        self.updated.sort()
        self.inserted.sort()
        return self


def set_stable_output(conn):
    conn.execute(STABLE_OUTPUT)


def strongroom_name(schema, table):
    """How Strongroom names a table: unquoted parts joined by a dot."""
    return f"{schema}.{table}"


def row_expressions(conn, relation_oid, alias):
    """SQL for a row's key and its text. Columns holding large-object oids
    show the object's content hash instead, so rows compare equal when a
    restore gives the same object a new oid."""
    key_columns, shown = [], []
    for name, holds_oid, in_key in conn.execute(COLUMNS, [relation_oid]).fetchall():
        column = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(name))
        if in_key:
            key_columns.append(column)
        if holds_oid:
            column = sql.SQL(
                "CASE WHEN EXISTS (SELECT FROM pg_largeobject_metadata m WHERE m.oid = {c})"
                " THEN 'large object md5 ' || md5(lo_get({c})) ELSE {c}::text END"
            ).format(c=column)
        shown.append(column)
    row = sql.SQL("ROW({})::text").format(sql.SQL(", ").join(shown))
    key = sql.SQL("ROW({})::text").format(sql.SQL(", ").join(key_columns)) if key_columns else None
    return key, row


def read_rows(conn, relation_oid, schema, table):
    """{key text: row text} for a table with a primary key, else the sorted row texts."""
    key, row = row_expressions(conn, relation_oid, "corpus_row")
    source = sql.SQL("FROM ONLY {} corpus_row").format(sql.Identifier(schema, table))
    if key is None:
        return sorted(text for (text,) in conn.execute(sql.SQL("SELECT {} ").format(row) + source))
    return dict(conn.execute(sql.SQL("SELECT {}, {} ").format(key, row) + source).fetchall())


def schema_dump(conninfo):
    """pg_dump --schema-only with owners and grants, minus what differs
    between two identical databases: the per-run \\restrict token, tool
    versions, and the database's own name."""
    out = subprocess.run(
        ["pg_dump", "--schema-only", conninfo["dbname"]],
        env={**os.environ, **libpq_env(conninfo)},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    name = re.compile(rf"\b{re.escape(conninfo['dbname'])}\b")
    return [
        name.sub("<database>", line)
        for line in out.splitlines()
        if not line.startswith(("\\restrict", "\\unrestrict", "-- Dumped from", "-- Dumped by"))
    ]


def snapshot(conninfo):
    """Everything a restore must bring back, as plain data (see diff())."""
    result = {"schema": schema_dump(conninfo), "tables": {}, "materialized views": {}, "sequences": {}}
    with psycopg.connect(**conninfo) as conn:
        set_stable_output(conn)
        database = conn.execute(DATABASE).fetchone()
        result["database"] = dict(zip(DATABASE_FIELDS, database, strict=True))
        result["database"]["privileges"] = sorted(database[7]) if database[7] is not None else None
        settings = conn.execute(DATABASE_SETTINGS).fetchall()
        result["database"]["settings"] = sorted(f"{role}: {setting}" for role, setting in settings)
        result["roles"] = {
            name: dict(zip(ROLE_FIELDS, fields, strict=True)) for name, *fields in conn.execute(ROLES).fetchall()
        }
        references = collections.defaultdict(list)
        for relation_oid, schema, name, kind in conn.execute(USER_RELATIONS).fetchall():
            qualified = strongroom_name(schema, name)
            if kind == "S":
                result["sequences"][qualified] = conn.execute(
                    sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(schema, name))
                ).fetchone()
                continue
            section = "tables" if kind == "r" else "materialized views"
            result[section][qualified] = read_rows(conn, relation_oid, schema, name)
            for label, oid in large_object_references(conn, relation_oid, schema, name):
                references[oid].append(f"{qualified}.{label}")
        result["large objects"] = describe_large_objects(conn, references)
    return result


def large_object_references(conn, relation_oid, schema, table):
    """(column and row key, oid) for every non-NULL oid column value."""
    key, _ = row_expressions(conn, relation_oid, "corpus_row")
    key = key or sql.SQL("'(no key)'")
    for name, holds_oid, _ in conn.execute(COLUMNS, [relation_oid]).fetchall():
        if holds_oid:
            query = sql.SQL(
                "SELECT {key}, corpus_row.{column} FROM ONLY {table} corpus_row WHERE corpus_row.{column} IS NOT NULL"
            ).format(key=key, column=sql.Identifier(name), table=sql.Identifier(schema, table))
            for row_key, oid in conn.execute(query):
                yield f"{name} at {row_key}", oid


def describe_large_objects(conn, references):
    """{label: description}: labelled by the rows that reference the object,
    or by its content when nothing does, so that oids never matter."""
    described = {}
    for oid, owner, acl, comment, digest, length in conn.execute(LARGE_OBJECTS).fetchall():
        label = "; ".join(sorted(references.get(oid, []))) or f"unreferenced md5 {digest}"
        while label in described:
            label += " (again)"
        described[label] = (
            f"{length} bytes md5 {digest}, owner {owner}, "
            f"privileges {sorted(acl) if acl else None}, comment {comment!r}"
        )
    return described


def row_changes(before, after):
    """{table: TableChanges} between two snapshots, by primary key."""
    changes = {}
    for table in sorted(before["tables"].keys() & after["tables"].keys()):
        old, new = before["tables"][table], after["tables"][table]
        if isinstance(old, dict) and isinstance(new, dict):
            found = TableChanges(
                deleted=[key for key in old if key not in new],
                updated=[key for key in old if key in new and old[key] != new[key]],
                inserted=[key for key in new if key not in old],
            )
        else:
            old_rows, new_rows = collections.Counter(rows_of(old)), collections.Counter(rows_of(new))
            found = TableChanges(
                deleted=list((old_rows - new_rows).elements()), inserted=list((new_rows - old_rows).elements())
            )
        if found.deleted or found.updated or found.inserted:
            changes[table] = found.sort()
    return changes


def rows_of(table_contents):
    return list(table_contents.values()) if isinstance(table_contents, dict) else table_contents


def diff(before, after):
    """Human-readable differences between two snapshots; [] when identical."""
    lines = []
    schema = list(difflib.unified_diff(before["schema"], after["schema"], "before", "after", n=1, lineterm=""))
    lines += [f"schema: {line}" for line in schema[2 : SHOWN_SCHEMA_LINES + 2]]
    if len(schema) > SHOWN_SCHEMA_LINES + 2:
        lines.append(f"schema: ... and {len(schema) - SHOWN_SCHEMA_LINES - 2} more lines of the dump differ")
    lines += diff_mappings("database", before["database"], after["database"])
    for role in sorted(before["roles"].keys() | after["roles"].keys()):
        lines += diff_mappings(f"role {role}", before["roles"].get(role), after["roles"].get(role))
    lines += diff_mappings("sequence", before["sequences"], after["sequences"])
    lines += diff_mappings("large object", before["large objects"], after["large objects"])
    for section in ("tables", "materialized views"):
        lines += diff_relations(section, before[section], after[section])
    return lines


def diff_mappings(what, before, after):
    if before is None or after is None:
        return [] if before == after else [f"{what}: {'missing after' if after is None else 'only after'}"]
    lines = []
    for key in sorted(before.keys() | after.keys()):
        if key not in after:
            lines.append(f"{what} {key}: missing after, was {before[key]!r}")
        elif key not in before:
            lines.append(f"{what} {key}: only after: {after[key]!r}")
        elif before[key] != after[key]:
            lines.append(f"{what} {key}: {before[key]!r} before, {after[key]!r} after")
    return lines


def diff_relations(section, before, after):
    singular = section.rstrip("s").replace("views", "view")
    lines = [f"{singular} {name}: missing after" for name in sorted(before.keys() - after.keys())]
    lines += [f"{singular} {name}: only after" for name in sorted(after.keys() - before.keys())]
    changes = row_changes({"tables": before}, {"tables": after})
    for name, found in changes.items():
        old, new = before[name], after[name]
        lines += shown(f"{singular} {name}: row missing after:", found.deleted, old)
        lines += shown(f"{singular} {name}: row only after:", found.inserted, new)
        for key in found.updated[:SHOWN_PER_KIND]:
            lines.append(f"{singular} {name}: row {key} changed: {old[key]} before, {new[key]} after")
        if len(found.updated) > SHOWN_PER_KIND:
            lines.append(f"{singular} {name}: ... and {len(found.updated) - SHOWN_PER_KIND} more rows changed")
    return lines


def shown(prefix, keys, contents):
    lines = [f"{prefix} {contents[key] if isinstance(contents, dict) else key}" for key in keys[:SHOWN_PER_KIND]]
    if len(keys) > SHOWN_PER_KIND:
        lines.append(f"{prefix} ... and {len(keys) - SHOWN_PER_KIND} more")
    return lines

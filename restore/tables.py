"""SQL against the target's tables, free of Django: compare them with the
backup, add the rows they lack, or replace them, in one transaction.

The backup's rows come from the scratch database the backup was restored
into. They are first copied into a temporary table in the target's own
session, so that every comparison happens inside PostgreSQL, between typed
values: a timestamptz, boolean, bytea, interval or numeric key matches by
the type's own equality, never by its text in some other session. A
temporary table changes nothing in the target and goes with the session.

A chosen table the target no longer has (dropped by mistake, the usual
reason to restore one table) is made again from the backup's definition,
in the same transaction, and then filled like any other.

A partitioned table is read and written through its parent (rows are routed
to their partitions); an ordinary table through ONLY itself, so that the
rows of tables inheriting from it are not counted, copied or emptied twice.
"""

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, TypedDict

import psycopg
from psycopg import sql

from catalog.engine import restorers
from catalog.engine.dumpers import ConnParams, one
from catalog.errors import Refused

INCOMING = sql.Identifier("strongroom_incoming")

# Both sessions write values the same way, whatever the database's defaults.
SESSION_SETTINGS = (
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO, MDY'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 3",
    "SET bytea_output = 'hex'",
)


def prepare_session(conn: psycopg.Connection[Any]) -> None:
    for statement in SESSION_SETTINGS:
        conn.execute(statement)


def split_name(table: str) -> tuple[str, str]:
    schema, _, name = table.partition(".")
    return (schema, name) if name else ("public", schema)


def ident(table: str) -> sql.Identifier:
    return sql.Identifier(*split_name(table))


def regclass(conn: psycopg.Connection[Any], table: str) -> int | None:
    return one(conn, "SELECT to_regclass(%s)::oid", [ident(table).as_string(conn)])


def relation(conn: psycopg.Connection[Any], table: str) -> sql.Composable:
    """The table as a FROM item: through its parent for a partitioned table,
    ONLY itself otherwise."""
    # No row when the table is missing here (regclass None): a TypeError, not a refusal in words (reported).
    kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = %s", [regclass(conn, table)]).fetchone()[0]  # type: ignore[index]
    return ident(table) if kind == "p" else sql.SQL("ONLY {}").format(ident(table))


def table_exists(conn: psycopg.Connection[Any], table: str) -> bool:
    return regclass(conn, table) is not None


def partition_tree(conn: psycopg.Connection[Any], table: str) -> list[str]:
    """The table and, when it is partitioned, all its partitions, as "schema.name"."""
    rows = conn.execute(
        """SELECT n.nspname || '.' || c.relname FROM pg_partition_tree(%s::regclass) AS t
           JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind IN ('r', 'p') ORDER BY t.level""",
        [ident(table).as_string(conn)],
    ).fetchall()
    return [table] + [name for (name,) in rows if name != table]


def create_missing_tables(
    backup: ConnParams,
    backup_conn: psycopg.Connection[Any],
    target_conn: psycopg.Connection[Any],
    tables: Sequence[str],
    keep_owners: bool,
    pg_dump: str = "pg_dump",
) -> list[str]:
    """Makes the chosen tables the target lacks, with their partitions, as
    the backup defines them (empty); in the target's current transaction.
    Returns the tables it made."""
    missing = [table for table in tables if not table_exists(target_conn, table)]
    if missing:
        with_partitions = [name for table in missing for name in partition_tree(backup_conn, table)]
        target_conn.execute(restorers.table_definitions(backup, with_partitions, keep_owners, pg_dump))
    return missing


def count_rows(conn: psycopg.Connection[Any], table: str) -> int:
    return one(conn, sql.SQL("SELECT count(*) FROM {}").format(relation(conn, table)))


def count_as_recorded(conn: psycopg.Connection[Any], table: str) -> int:
    """Rows as a backup records them (dumpers.COUNT_TABLES): with the rows of
    tables inheriting from it."""
    return one(conn, sql.SQL("SELECT count(*) FROM {}").format(ident(table)))


def primary_key(conn: psycopg.Connection[Any], table: str) -> list[str]:
    rows = conn.execute(
        """SELECT a.attname FROM pg_index i
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
           WHERE i.indrelid = %s AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)""",
        [regclass(conn, table)],
    ).fetchall()
    return [name for (name,) in rows]


def stored_columns(conn: psycopg.Connection[Any], table: str) -> list[str]:
    """The columns a row is written with: generated columns are computed by
    the table itself and cannot be given."""
    rows = conn.execute(
        """SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped
           AND attgenerated = '' ORDER BY attnum""",
        [regclass(conn, table)],
    ).fetchall()
    return [name for (name,) in rows]


def columns_to_copy(
    backup_conn: psycopg.Connection[Any], target_conn: psycopg.Connection[Any], table: str
) -> list[str]:
    """The target's writable columns that the backup also has, in the
    target's order. A column the target gained since is left to its default."""
    in_backup = set(stored_columns(backup_conn, table))
    return [c for c in stored_columns(target_conn, table) if c in in_backup]


def names(columns: Sequence[str], prefix: str | None = None) -> sql.Composed:
    if prefix is None:
        return sql.SQL(", ").join(map(sql.Identifier, columns))
    return sql.SQL(", ").join(sql.Identifier(prefix, c) for c in columns)


def copy_rows(
    source_conn: psycopg.Connection[Any],
    target_conn: psycopg.Connection[Any],
    select: sql.Composable,
    target: sql.Composable,
    columns: Sequence[str],
) -> None:
    """Streams rows from one database into another with COPY, chunk by chunk."""
    copy_out = sql.SQL("COPY ({}) TO STDOUT").format(select)
    copy_in = sql.SQL("COPY {} ({}) FROM STDIN").format(target, names(columns))
    with source_conn.cursor().copy(copy_out) as reader, target_conn.cursor().copy(copy_in) as writer:
        for data in reader:
            writer.write(data)


def stage_backup_rows(
    backup_conn: psycopg.Connection[Any], target_conn: psycopg.Connection[Any], table: str, columns: Sequence[str]
) -> None:
    """The backup's rows of `table`, in a temporary table of the target's
    session typed like the target's columns."""
    target_conn.execute(sql.SQL("DROP TABLE IF EXISTS pg_temp.{}").format(INCOMING))
    target_conn.execute(
        sql.SQL("CREATE TEMP TABLE {} AS SELECT {} FROM {} LIMIT 0").format(
            INCOMING, names(columns), relation(target_conn, table)
        )
    )
    select = sql.SQL("SELECT {} FROM {}").format(names(columns), relation(backup_conn, table))
    copy_rows(backup_conn, target_conn, select, INCOMING, columns)


def key_match(key: Sequence[str], left: str, right: str) -> sql.Composed:
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier(left, k), sql.Identifier(right, k)) for k in key
    )


def only_in_incoming(conn: psycopg.Connection[Any], table: str, key: Sequence[str]) -> sql.Composed:
    """A WHERE condition: the staged row's key is not in the target."""
    return sql.SQL("NOT EXISTS (SELECT 1 FROM {} AS t WHERE {})").format(
        relation(conn, table), key_match(key, "t", "i")
    )


def matching_key(
    backup_conn: psycopg.Connection[Any], target_conn: psycopg.Connection[Any], table: str, columns: Sequence[str]
) -> list[str]:
    """The primary key rows are matched by, all of it among the `columns`
    copied from the backup; [] for a table without one."""
    key = primary_key(target_conn, table) or primary_key(backup_conn, table)
    if not key:
        return []
    missing = set(key) - set(columns)
    if missing:
        raise Refused(
            f"{table}: the backup lacks the key column(s) {', '.join(sorted(missing))}, "
            "so its rows cannot be matched with the database's"
        )
    return key


# --- preview ---------------------------------------------------------------------


def compare_table(
    backup_conn: psycopg.Connection[Any], target_conn: psycopg.Connection[Any], table: str
) -> dict[str, object]:
    """What differs between the backup's and the target's copy of a table:
    rows only in one of them, and rows with the same key whose values differ."""
    report = {"table": table, "in_backup": count_rows(backup_conn, table)}
    if not table_exists(target_conn, table):
        report.update(in_target=0, missing_in_target=True, only_in_backup=report["in_backup"])
        return report
    report["in_target"] = count_rows(target_conn, table)
    columns = columns_to_copy(backup_conn, target_conn, table)
    key = matching_key(backup_conn, target_conn, table, columns)
    if not key:
        report["note"] = "no primary key: counts only"
        return report
    stage_backup_rows(backup_conn, target_conn, table, columns)
    rel = relation(target_conn, table)
    only_in_backup = sql.SQL("SELECT count(*) FROM {} AS i WHERE {}").format(
        INCOMING, only_in_incoming(target_conn, table, key)
    )
    only_in_target = sql.SQL("SELECT count(*) FROM {} AS t WHERE NOT EXISTS (SELECT 1 FROM {} AS i WHERE {})").format(
        rel, INCOMING, key_match(key, "i", "t")
    )
    # By text, in this one session: every type has one (json and xml have no equality).
    differs = (
        sql.SQL(" OR ").join(
            sql.SQL("{}::text IS DISTINCT FROM {}::text").format(sql.Identifier("i", c), sql.Identifier("t", c))
            for c in columns
            if c not in key
        )
        if len(columns) > len(key)
        else sql.SQL("false")
    )
    differ = sql.SQL("SELECT count(*) FROM {} AS i JOIN {} AS t ON {} WHERE {}").format(
        INCOMING, rel, key_match(key, "i", "t"), differs
    )
    report.update(
        key=key,
        only_in_backup=one(target_conn, only_in_backup),
        only_in_target=one(target_conn, only_in_target),
        differ=one(target_conn, differ),
    )
    target_conn.execute(sql.SQL("DROP TABLE pg_temp.{}").format(INCOMING))
    return report


# --- merge -----------------------------------------------------------------------


def merge_tables(
    backup_conn: psycopg.Connection[Any], target_conn: psycopg.Connection[Any], tables: Sequence[str]
) -> dict[str, int]:
    """In one transaction of the target: insert the backup's rows whose
    primary key the target lacks, parents before the tables that refer to
    them; rows the target has are kept as they are. Returns the rows
    PostgreSQL inserted per table."""
    inserted = {}
    with target_conn.transaction():
        ordered = referenced_first(target_conn, tables)
        with user_triggers_disabled(target_conn, ordered):
            for table in ordered:
                inserted[table] = merge_table(backup_conn, target_conn, table)
        sync_sequences(backup_conn, target_conn, tables, only_forward=True)
    return inserted


def merge_table(backup_conn: psycopg.Connection[Any], target_conn: psycopg.Connection[Any], table: str) -> int:
    columns = columns_to_copy(backup_conn, target_conn, table)
    key = matching_key(backup_conn, target_conn, table, columns)
    if not key:
        raise Refused(f"{table} has no primary key, so rows cannot be matched for a merge")
    stage_backup_rows(backup_conn, target_conn, table, columns)
    lacking = only_in_incoming(target_conn, table, key)
    missing = one(target_conn, sql.SQL("SELECT count(*) FROM {} AS i WHERE {}").format(INCOMING, lacking))
    # OVERRIDING SYSTEM VALUE: an identity column GENERATED ALWAYS takes the backup's value.
    insert = sql.SQL("INSERT INTO {} AS t ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} AS i WHERE {}").format(
        ident(table), names(columns), names(columns, "i"), INCOMING, lacking
    )
    inserted = target_conn.execute(insert).rowcount
    target_conn.execute(sql.SQL("DROP TABLE pg_temp.{}").format(INCOMING))
    if inserted != missing:
        raise Refused(f"{table}: {missing} rows were missing but PostgreSQL inserted {inserted}; nothing was changed")
    return inserted


# --- replace ---------------------------------------------------------------------


def replace_tables(
    backup_conn: psycopg.Connection[Any], target_conn: psycopg.Connection[Any], tables: Sequence[str]
) -> dict[str, int]:
    """In one transaction of the target: empty the tables and fill them from
    the backup. Foreign keys that point at them are dropped first and added
    back after, which checks them again; if rows elsewhere would be left
    pointing at nothing, the whole change is refused and rolled back.
    Returns rows written per table."""
    written = {}
    with target_conn.transaction():
        pointing_in = foreign_keys_into(target_conn, tables)
        for fk in pointing_in:
            target_conn.execute(
                sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(fk["table"], sql.Identifier(fk["name"]))
            )
        with user_triggers_disabled(target_conn, tables):
            target_conn.execute(
                sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(relation(target_conn, t) for t in tables))
            )
            for table in referenced_first(target_conn, tables):
                columns = columns_to_copy(backup_conn, target_conn, table)
                select = sql.SQL("SELECT {} FROM {}").format(names(columns), relation(backup_conn, table))
                copy_rows(backup_conn, target_conn, select, ident(table), columns)
                written[table] = count_rows(target_conn, table)
        for fk in pointing_in:
            refuse_orphans(target_conn, fk)
            target_conn.execute(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                    fk["table"], sql.Identifier(fk["name"]), sql.SQL(fk["definition"])
                )
            )
        sync_sequences(backup_conn, target_conn, tables)
    return written


class ForeignKey(TypedDict):
    """A foreign key that points at a replaced table, as foreign_keys_into finds it."""

    table: sql.SQL  # the referring table, as SQL
    label: str
    name: str
    definition: str
    columns: list[str]
    refers_to: int  # the oid of the table it points at
    referenced: list[str]


def foreign_keys_into(conn: psycopg.Connection[Any], tables: Sequence[str]) -> list[ForeignKey]:
    """The foreign keys (top-level: a partitioned table's, not its
    partitions' copies) that refer to any of `tables` or their partitions."""
    oids = [regclass(conn, t) for t in tables]
    rows = conn.execute(
        """WITH RECURSIVE chosen AS (
               SELECT t.oid AS relid FROM unnest(%s::oid[]) AS t(oid)
               UNION SELECT p.relid FROM unnest(%s::oid[]) AS t(oid), pg_partition_tree(t.oid) p),
           pointing(oid, parent) AS (
               SELECT c.oid, c.conparentid FROM pg_constraint c
               WHERE c.contype = 'f' AND c.confrelid IN (SELECT relid FROM chosen)
               UNION
               SELECT c.oid, c.conparentid FROM pg_constraint c JOIN pointing p ON c.oid = p.parent)
           SELECT DISTINCT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid), c.conrelid, c.conkey,
                  c.confrelid, c.confkey
           FROM pointing p JOIN pg_constraint c ON c.oid = p.oid WHERE c.conparentid = 0 ORDER BY 1, 2""",
        [oids, oids],
    ).fetchall()
    return [
        {
            "table": sql.SQL(qualified),
            "label": qualified,
            "name": name,
            "definition": definition,
            "columns": column_names(conn, relid, keys),
            "refers_to": confrelid,
            "referenced": column_names(conn, confrelid, fkeys),
        }
        for qualified, name, definition, relid, keys, confrelid, fkeys in rows
    ]


def column_names(conn: psycopg.Connection[Any], relid: int, numbers: Sequence[int]) -> list[str]:
    return [
        one(conn, "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum = %s", [relid, n]) for n in numbers
    ]


def refuse_orphans(conn: psycopg.Connection[Any], fk: ForeignKey) -> None:
    """Rows of the referring table whose key (all of it given, as MATCH
    SIMPLE checks) matches no row of the replaced table."""
    given = sql.SQL(" AND ").join(sql.SQL("r.{} IS NOT NULL").format(sql.Identifier(c)) for c in fk["columns"])
    matched = sql.SQL(" AND ").join(
        sql.SQL("p.{} = r.{}").format(sql.Identifier(p), sql.Identifier(c))
        for p, c in zip(fk["referenced"], fk["columns"], strict=True)
    )
    referenced = one(conn, "SELECT %s::regclass::text", [fk["refers_to"]])
    orphans = one(
        conn,
        sql.SQL("SELECT count(*) FROM {} AS r WHERE {} AND NOT EXISTS (SELECT 1 FROM {} AS p WHERE {})").format(
            fk["table"], given, sql.SQL(referenced), matched
        ),
    )
    if orphans:
        raise Refused(
            f"Replacing {referenced} would leave {orphans} row(s) of {fk['label']} pointing at nothing "
            f"(foreign key {fk['name']}); nothing was changed. Restore {fk['label']} with it, or merge instead"
        )


# --- what every change needs -------------------------------------------------------


def referenced_first(conn: psycopg.Connection[Any], tables: Sequence[str]) -> list[str]:
    """`tables` ordered so that a table comes after those it refers to (a
    cycle keeps the order it was given)."""
    oids = {regclass(conn, t): t for t in tables}
    refers: dict[str, set[str]] = {t: set() for t in tables}
    for relid, confrelid in conn.execute(
        """SELECT coalesce((SELECT p.relid::oid FROM pg_partition_ancestors(c.conrelid) p
                                WHERE p.relid = ANY(%s::oid[]) LIMIT 1), c.conrelid),
                      coalesce((SELECT p.relid::oid FROM pg_partition_ancestors(c.confrelid) p
                                WHERE p.relid = ANY(%s::oid[]) LIMIT 1), c.confrelid)
               FROM pg_constraint c WHERE c.contype = 'f' AND c.conparentid = 0""",
        [list(oids), list(oids)],
    ):
        if relid in oids and confrelid in oids and relid != confrelid:
            refers[oids[relid]].add(oids[confrelid])
    ordered: list[str] = []
    placed: set[str] = set()
    while len(ordered) < len(tables):
        ready = [t for t in tables if t not in placed and refers[t] <= placed]
        for table in ready or [next(t for t in tables if t not in placed)]:
            ordered.append(table)
            placed.add(table)
    return ordered


@contextlib.contextmanager
def user_triggers_disabled(conn: psycopg.Connection[Any], tables: Sequence[str]) -> Iterator[None]:
    """Rows coming back from a backup are as they were: triggers that would
    rewrite them (updated_at, audit rows) stay off while they are written,
    and each is turned back to exactly its previous state, all inside the
    caller's transaction. Foreign-key checks are not triggers of this kind
    and stay on."""
    triggers = conn.execute(
        """SELECT t.tgrelid::regclass::text, t.tgname, t.tgenabled FROM pg_trigger t
           WHERE NOT t.tgisinternal AND t.tgenabled <> 'D'
             AND t.tgrelid IN (SELECT r.oid FROM unnest(%s::oid[]) AS r(oid)
                               UNION SELECT p.relid FROM unnest(%s::oid[]) AS r(oid), pg_partition_tree(r.oid) p)
           ORDER BY t.tgparentid <> 0, 1, 2""",
        [[regclass(conn, t) for t in tables]] * 2,
    ).fetchall()
    for table, name, _ in triggers:
        conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(sql.SQL(table), sql.Identifier(name)))
    yield
    how = {"O": "", "A": "ALWAYS ", "R": "REPLICA "}
    for table, name, enabled in triggers:
        conn.execute(
            sql.SQL("ALTER TABLE {} ENABLE {}TRIGGER {}").format(
                sql.SQL(table), sql.SQL(how[enabled]), sql.Identifier(name)
            )
        )


# The sequences that feed a table (and its partitions): those it owns
# (serial and identity columns), and those its column defaults call
# nextval() on without owning them, which other tables may share.
FEEDING_SEQUENCES = """
WITH tree AS (SELECT %(table)s::oid AS relid UNION SELECT relid FROM pg_partition_tree(%(table)s))
SELECT n.nspname, s.relname, bool_or(owned)
FROM (
  SELECT d.objid AS seq, true AS owned FROM pg_depend d
  WHERE d.classid = 'pg_class'::regclass AND d.refobjid IN (SELECT relid FROM tree) AND d.deptype IN ('a', 'i')
  UNION ALL
  SELECT d.refobjid, false FROM pg_attrdef ad
  JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass
  WHERE ad.adrelid IN (SELECT relid FROM tree)
) f JOIN pg_class s ON s.oid = f.seq AND s.relkind = 'S' JOIN pg_namespace n ON n.oid = s.relnamespace
GROUP BY 1, 2
"""


def sync_sequences(
    backup_conn: psycopg.Connection[Any],
    target_conn: psycopg.Connection[Any],
    tables: Sequence[str],
    only_forward: bool = False,
) -> None:
    """Sets the sequences that feed the tables to the backup's values, so
    that new rows do not collide. One the table owns takes the backup's value
    exactly (or, when merging, whichever is further); one its defaults merely
    use may feed other tables too, so it only ever moves forward."""
    for table in tables:
        feeding = backup_conn.execute(FEEDING_SEQUENCES, {"table": regclass(backup_conn, table)}).fetchall()
        for schema, name, owned in feeding:
            seq = sql.Identifier(schema, name)
            row = backup_conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(seq)).fetchone()
            assert row is not None  # a sequence always has its one row
            last, called = row
            if only_forward or not owned:
                current = one(target_conn, sql.SQL("SELECT last_value FROM {}").format(seq))
                if current >= last:
                    continue
            target_conn.execute("SELECT setval(%s::regclass, %s, %s)", [seq.as_string(target_conn), last, called])

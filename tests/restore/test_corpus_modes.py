"""The restore modes tests/restore/test_corpus_restores.py leaves out, over
the corpus of awkward schemas (tests/corpus, issue 19): onto another server
that never had the corpus roles, a whole-database replace, chosen tables
replaced, and an export in each format previewed, merged and loaded into a
new database. What comes back is compared with the original by pg_dump
--schema-only with owners and grants, the sorted rows of every table,
sequences, materialized views and large objects."""

import collections
import uuid

import psycopg
import pytest
from psycopg import sql

from catalog import backup_runs, services
from catalog.engine import exports
from catalog.models import Backup, RestoreServer
from tests.corpus import create_corpus, damage, diff, drop_corpus_roles, snapshot
from tests.corpus.compare import set_stable_output
from tests.factories import local_destination, make_plan, pg_source
from tests.harness import pg
from tests.support import restore_now

pytestmark = pytest.mark.django_db(transaction=True)

SIZE = "small"


@pytest.fixture
def corpus(pg_database, pg_server):
    built = create_corpus(pg_database, size=SIZE)
    yield built
    drop_corpus_roles(pg_server, built)


@pytest.fixture
def backup(corpus, tmp_path):
    plan = make_plan(pg_source(corpus.conninfo), [local_destination(tmp_path / "disk")], verify_new_backups=False)
    backup = backup_runs.run_backup(backup_runs.create_backup("test", plan).pk)
    assert backup.status == Backup.SUCCEEDED, backup.error
    return backup


def outermost(corpus, table):
    """The table a restore is asked for: a partition's topmost partitioned
    parent, any other table itself."""
    parent_of = {child: parent for parent, children in corpus.partitions.items() for child in children}
    while table in parent_of:
        table = parent_of[table]
    return table


def leaves(corpus, table):
    """The tables holding `table`'s rows in a snapshot: its leaf partitions,
    or itself."""
    return corpus.leaf_partitions(table) or [table]


def with_tables(snap, tables):
    """A copy of a snapshot whose "tables" section has `tables` swapped in."""
    return {**snap, "tables": {**snap["tables"], **tables}}


# --- another server -------------------------------------------------------------------


def roles_on(server, names):
    with psycopg.connect(**server, dbname="postgres") as conn:
        return {name for (name,) in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", [list(names)])}


def test_another_server_that_never_had_the_roles_gets_everything_back_with_them(corpus, backup, password_server):
    original = snapshot(corpus.conninfo)
    pg.drop_database(corpus.conninfo["dbname"])
    drop_corpus_roles(pg.ensure_server(), corpus)  # the source and its roles are gone
    other = password_server
    standby = RestoreServer(name="Standby", host=other["host"], port=other["port"], user=other["user"])
    services.save_restore_server("test", standby, secrets={"password": other["password"]})
    name = f"sr_corpus_{uuid.uuid4().hex[:8]}"
    assert roles_on(other, corpus.roles.values()) == set()

    try:
        job = restore_now(backup, target="new", database=name, restore_server=standby, create_missing_roles=True)

        assert job.status == "succeeded", job.summary
        assert job.restore_server == standby
        assert set(job.report["roles_created"]) == set(corpus.roles.values())
        # Schema with owners and grants, rows, sequences, large objects, the
        # database's own properties and the roles' attributes and memberships.
        assert diff(original, snapshot({**other, "dbname": name})) == []
        assert roles_on(other, corpus.roles.values()) == set(corpus.roles.values())
    finally:
        with psycopg.connect(**other, dbname="postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        drop_corpus_roles(other, corpus)


# --- the whole database replaced ----------------------------------------------------------


def test_a_whole_replace_brings_back_the_backup_and_keeps_the_damaged_database_as_it_was(corpus, backup):
    original = snapshot(corpus.conninfo)
    damage(corpus.conninfo)
    damaged = snapshot(corpus.conninfo)
    name = corpus.conninfo["dbname"]
    application = psycopg.connect(**corpus.conninfo, application_name="corpus-app", autocommit=True)

    try:
        job = restore_now(
            backup, target="existing", database=name, mode="full", confirmed_name=name, terminate_connections=True
        )
    finally:
        application.close()

    kept = job.report.get("previous_database_kept_as")
    try:
        assert job.status == "succeeded", job.summary
        assert kept == f"{name}_before_restore_{job.pk}"
        assert any("corpus-app" in session for session in job.report["sessions_ended"])
        assert job.safety_backup.status == Backup.SUCCEEDED and job.safety_backup.pinned
        assert diff(original, snapshot(corpus.conninfo)) == []
        assert diff(damaged, snapshot({**corpus.conninfo, "dbname": kept})) == []
    finally:
        if kept:
            pg.drop_database(kept)


# --- chosen tables replaced ------------------------------------------------------------


def test_chosen_tables_replaced_come_back_as_backed_up_and_nothing_else_changes(corpus, backup):
    original = snapshot(corpus.conninfo)
    changes = damage(corpus.conninfo)
    damaged = snapshot(corpus.conninfo)
    name = corpus.conninfo["dbname"]
    chosen = sorted({outermost(corpus, table) for table in changes})
    assert {"metrics.reading", "Sales.invoice"} <= set(chosen)  # chosen by the parent, as a DBA would

    job = restore_now(backup, target="existing", database=name, mode="full", tables=chosen, confirmed_name=name)

    assert job.status == "succeeded", job.summary
    restored = {leaf: original["tables"][leaf] for table in chosen for leaf in leaves(corpus, table)}
    # Every chosen table as backed up; every other table, the schema, the
    # sequences and the large objects as they were just before.
    assert diff(with_tables(damaged, restored), snapshot(corpus.conninfo)) == []
    assert job.report["written"] == {
        table: sum(len(original["tables"][leaf]) for leaf in leaves(corpus, table)) for table in chosen
    }
    assert job.safety_backup.status == Backup.SUCCEEDED


# --- exports --------------------------------------------------------------------------


def exportable(corpus):
    """{qualified name: table} as the export offers them: partitioned parents
    by their own name, no partitions."""
    return {f"{t['schema']}.{t['name']}": t for t in exports.list_tables(corpus.conninfo)}


def raw_rows(conninfo, table):
    """The sorted row texts of `table` (FROM ONLY), large-object oids as they
    are: for tables whose objects an export does not carry."""
    schema, name = table.split(".", 1)
    with psycopg.connect(**conninfo) as conn:
        set_stable_output(conn)
        query = sql.SQL("SELECT ROW(t.*)::text FROM ONLY {} t").format(sql.Identifier(schema, name))
        return sorted(text for (text,) in conn.execute(query))


def rows_through(corpus, snap, table):
    """A table's rows as an export reads them: a partitioned parent's are its
    leaf partitions' together."""
    parts = [snap["tables"][leaf] for leaf in leaves(corpus, table)]
    if all(isinstance(part, dict) for part in parts):
        return {key: row for part in parts for key, row in part.items()}
    return sorted(row for part in parts for row in (part.values() if isinstance(part, dict) else part))


def export_previews_merges_and_loads_exactly(corpus, tmp_path, fmt, tables):
    """Exports `tables` in `fmt`, damages the corpus, then proves the
    preview (exactly the damage), the merge (exactly the deleted rows back,
    nothing else changed) and a new database (the rows at export time)."""
    plan = make_plan(
        pg_source(corpus.conninfo),
        [local_destination(tmp_path / "exports")],
        name="Export",
        format=fmt,
        verify_new_backups=False,
        export_tables=[
            {"schema": schema, "name": name, "where": ""} for schema, name in (table.split(".", 1) for table in tables)
        ],
    )
    export = backup_runs.run_backup(backup_runs.create_backup("test", plan).pk)
    assert export.status == Backup.SUCCEEDED, export.error
    exported = sorted(export.restorable_tables())
    assert exported == sorted(tables)
    original = snapshot(corpus.conninfo)
    changes = {t: c for t, c in damage(corpus.conninfo).items() if outermost(corpus, t) in exported}
    damaged = snapshot(corpus.conninfo)
    name = corpus.conninfo["dbname"]
    made = collections.defaultdict(lambda: [0, 0, 0])  # per table as exported: deleted, inserted, updated
    for table, change in changes.items():
        counts = made[outermost(corpus, table)]
        counts[0] += len(change.deleted)
        counts[1] += len(change.inserted)
        counts[2] += len(change.updated)
    keyed = [t for t in exported if t in corpus.primary_keys]

    # Preview: exactly the damage, table by table (a partitioned table's
    # summed over its partitions), and nothing changed.
    preview = restore_now(export, target="existing", database=name, mode="preview")

    assert preview.status == "succeeded", preview.summary
    reported = {t["table"]: t for t in preview.report["tables"]}
    assert sorted(reported) == exported
    found = {t: (reported[t]["only_in_backup"], reported[t]["only_in_target"], reported[t]["differ"]) for t in keyed}
    assert found == {t: tuple(made.get(t, (0, 0, 0))) for t in keyed}
    for table in set(exported) - set(keyed):  # no primary key: counts only
        assert (reported[table]["in_backup"], reported[table]["in_target"]) == (
            len(rows_through(corpus, original, table)),
            len(rows_through(corpus, damaged, table)),
        ), table
    assert diff(damaged, snapshot(corpus.conninfo)) == []

    # Merge (every table with a key): exactly the deleted rows come back;
    # rows inserted or updated since stay as they are; schema, sequences and
    # large objects untouched.
    merge = restore_now(export, target="existing", database=name, mode="merge", tables=keyed, confirmed_name=name)

    assert merge.status == "succeeded", merge.summary
    assert merge.report["inserted"] == {t: made.get(t, (0, 0, 0))[0] for t in keyed}
    merged = {
        table: {**damaged["tables"][table], **{key: original["tables"][table][key] for key in change.deleted}}
        for table, change in changes.items()
    }
    assert diff(with_tables(damaged, merged), snapshot(corpus.conninfo)) == []

    # A new database: every exported table, with the rows it had at export
    # time (rows only: an export keeps types, keys, identity and generated
    # columns as far as a database without the source's schema can).
    new_name = f"sr_export_{uuid.uuid4().hex[:8]}"
    try:
        load = restore_now(export, target="new", database=new_name)

        assert load.status == "succeeded", load.summary
        new_db = {**corpus.conninfo, "dbname": new_name}
        loaded = snapshot(new_db)["tables"]
        assert sorted(loaded) == exported
        with_objects = {column.rsplit(".", 1)[0] for column in corpus.large_object_columns}
        for table in exported:
            if table in with_objects:  # the export holds the oids, not the objects
                assert raw_rows(new_db, table) == raw_rows(corpus.conninfo, table), table
            else:
                assert loaded[table] == rows_through(corpus, original, table), table
    finally:
        pg.drop_database(new_name)


@pytest.mark.parametrize("fmt", ["csv", "sql", "jsonl"])
def test_an_export_previews_exactly_the_damage_merges_back_exactly_the_deleted_rows_and_loads_as_exported(
    fmt, corpus, tmp_path
):
    offered = exportable(corpus)
    assert {"metrics.reading", "Sales.invoice"} <= set(offered) and "metrics.reading_2024" not in offered
    # JSON Lines included with the tables of composite columns (and arrays of
    # them), which it once wrote as JSON objects that could not be read back.
    export_previews_merges_and_loads_exactly(corpus, tmp_path, fmt, sorted(offered))

"""The corpus on the real server: it builds, a snapshot sees what pg_dump and
pg_restore keep and lose, the damage report matches the differences, and
it restores onto another cluster once its roles are made there."""

import os
import re
import subprocess
import uuid

import psycopg
import pytest

from tests.corpus import (
    corpus_globals_sql,
    create_corpus,
    damage,
    diff,
    drop_corpus_roles,
    row_changes,
    snapshot,
)
from tests.harness import pg
from tests.harness.sample_db import libpq_env

DATABASE_STATEMENT = re.compile(
    r"^(ALTER DATABASE |COMMENT ON DATABASE |(GRANT|REVOKE) .* ON DATABASE |ALTER ROLE .* IN DATABASE )"
)


@pytest.fixture(scope="module")
def corpus(pg_server):
    name = f"corpus_{uuid.uuid4().hex[:10]}"
    made = create_corpus(pg.create_database(name), size="small")
    yield made
    pg.drop_database(name)
    drop_corpus_roles(pg_server, made)


@pytest.fixture(scope="module")
def original(corpus):
    return snapshot(corpus.conninfo)


@pytest.fixture(scope="module")
def archive(corpus, tmp_path_factory):
    """pg_dump -Fc of the corpus, owners and privileges included."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.dump"
    run(["pg_dump", "-Fc", "-f", str(path), corpus.conninfo["dbname"]], corpus.conninfo)
    return path


@pytest.fixture
def scratch_database(pg_server):
    name = f"corpus_copy_{uuid.uuid4().hex[:10]}"
    yield pg.create_database(name)
    pg.drop_database(name)


@pytest.fixture
def corpus_copy(pg_server, corpus):
    """A copy of the corpus made with CREATE DATABASE ... TEMPLATE (its rows
    and objects; the database's own properties stay behind)."""
    copy = {**pg_server, "dbname": f"corpus_copy_{uuid.uuid4().hex[:10]}"}
    with psycopg.connect(**pg_server, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{copy["dbname"]}" TEMPLATE "{corpus.conninfo["dbname"]}"')
    yield copy
    pg.drop_database(copy["dbname"])


def run(argv, conninfo):
    return subprocess.run(argv, env={**os.environ, **libpq_env(conninfo)}, check=True, capture_output=True, text=True)


def test_it_builds_every_kind_of_awkward_object(corpus, original):
    assert corpus.skipped == []
    assert {"Sales.OrderLine", "Sales.Order", "Sales.Gift Card", "public.type_zoo"} <= set(corpus.tables)
    assert corpus.leaf_partitions("metrics.reading") == [
        "metrics.reading_2023",
        "metrics.reading_2024",
        "metrics.reading_2025_even",
        "metrics.reading_2025_odd",
        "metrics.reading_later",
    ]
    assert corpus.partitions["Sales.invoice"] == [
        "Sales.invoice_americas",
        "Sales.invoice_elsewhere",
        "Sales.invoice_europe",
    ]
    assert corpus.inheritance_children == {"inventory.location": ["inventory.store", "inventory.warehouse"]}
    for key_type, table in [
        ("timestamp with time zone", "audit.event_log"),
        ("boolean", "public.flag_default"),
        ("bytea", "inventory.blob_index"),
        ("interval", "public.retention_tier"),
        ("numeric", "public.exchange_rate"),
        ("uuid", "Sales.shipment"),
        ("date", "Sales.price_list"),
        ("citext", "public.username"),
    ]:
        assert table in corpus.tables_keyed_by(key_type)
    assert all(corpus.row_counts[leaf] > 0 for leaf in corpus.leaf_partitions("metrics.reading"))
    assert corpus.row_counts["Sales.OrderLine"] > 3000
    assert corpus.large_object_columns == ["inventory.product_manual.manual", "inventory.product_manual.scanned_copy"]
    assert len(original["large objects"]) == 15  # 11 manuals (two rows share one), 3 scans, 1 orphan
    assert original["sequences"]["public.ticket_countdown"] == (9400, False)
    assert original["sequences"]["Sales.invoice_number"] == (1001 + 7 * 599, True)
    assert sorted(original["roles"]) == sorted(corpus.roles.values())
    assert original["database"]["owner"] == corpus.roles["owner"]
    assert diff(original, snapshot(corpus.conninfo)) == []


def test_it_comes_back_from_pg_restore_except_the_database_properties(corpus, original, archive, scratch_database):
    run(["pg_restore", "--exit-on-error", "--dbname", scratch_database["dbname"], str(archive)], scratch_database)

    roles = corpus.roles
    settings = sorted(
        [
            f"{roles['reader']}: statement_timeout=42s",
            'every role: search_path="$user", public, "Sales"',
            "every role: strongroom_corpus.flavour=awkward",
            "every role: work_mem=12MB",
        ]
    )
    privileges = sorted(
        [
            f"{roles['owner']}=CTc/{roles['owner']}",
            f"{roles['reader']}=Tc/{roles['owner']}",
            f"{roles['writer']}=c*/{roles['owner']}",
        ]
    )
    assert diff(original, snapshot(scratch_database)) == [
        "database comment: 'Strongroom restore corpus: every awkward thing at once' before, None after",
        f"database owner: '{roles['owner']}' before, 'postgres' after",
        f"database privileges: {privileges!r} before, None after",
        f"database settings: {settings!r} before, [] after",
    ]

    # What pg_restore --create would have said about the database itself.
    script = run(["pg_restore", "--create", "--file", "-", str(archive)], corpus.conninfo).stdout
    source_name = re.compile(rf"\b{corpus.conninfo['dbname']}\b")
    with psycopg.connect(**scratch_database, autocommit=True) as conn:
        for line in script.splitlines():
            if DATABASE_STATEMENT.match(line):
                conn.execute(source_name.sub(scratch_database["dbname"], line))
    assert diff(original, snapshot(scratch_database)) == []


def test_it_reports_the_damage_that_diff_shows(corpus_copy):
    before = snapshot(corpus_copy)

    report = damage(corpus_copy)

    after = snapshot(corpus_copy)
    assert row_changes(before, after) == report
    assert "(infinity)" in report["audit.event_log"].deleted
    assert {r'("\\x")', r'("\\x00")'} <= set(report["inventory.blob_index"].deleted)  # empty, one NUL
    assert {"(1.50)", "(NaN)"} <= set(report["public.exchange_rate"].deleted)
    assert report["public.flag_default"].deleted == ["(f)"]
    assert report["public.flag_default"].updated == ["(t)"]
    assert '("1 mon")' in report["public.retention_tier"].deleted
    assert '("tab\there")' in report["public.tag"].deleted
    assert report["Sales.customer"].inserted == ["(1000000)"]
    readings = [table for table in report if table.startswith("metrics.reading")]
    assert "metrics.reading" not in readings and len(readings) >= 3  # reported by partition
    assert "metrics.reading_later" in readings  # the default partition got the 2031 row

    lines = diff(before, after)
    assert lines and all(line.startswith("table ") for line in lines)
    assert {line.split(":")[0] for line in lines} == {f"table {table}" for table in report}
    assert any(line.startswith("table public.flag_default: row missing after: (f,") for line in lines)


def test_it_restores_onto_another_cluster_once_the_roles_are_made_there(pg_server, corpus, original, archive):
    cluster = pg.Cluster()
    try:
        with psycopg.connect(**cluster.server, dbname="postgres", autocommit=True) as conn:
            conn.execute(corpus_globals_sql(pg_server, corpus))
        run(["pg_restore", "--create", "--exit-on-error", "--dbname", "postgres", str(archive)], cluster.server)

        restored = snapshot({**cluster.server, "dbname": corpus.conninfo["dbname"]})

        assert diff(original, restored) == []
    finally:
        cluster.stop()


def test_it_ignores_large_object_oids_but_sees_what_a_careless_restore_loses(corpus, corpus_copy):
    before = snapshot(corpus_copy)
    with psycopg.connect(**corpus_copy, autocommit=True) as conn:
        conn.execute("""WITH moved AS (SELECT scanned_copy AS old FROM inventory.product_manual WHERE product_id = 115)
                        UPDATE inventory.product_manual SET scanned_copy = lo_from_bytea(0, lo_get(old))
                        FROM moved WHERE product_id = 115 RETURNING lo_unlink(old)""")
    assert diff(before, snapshot(corpus_copy)) == []

    reader, writer = corpus.roles["reader"], corpus.roles["writer"]
    with psycopg.connect(**corpus_copy, autocommit=True) as conn:
        conn.execute(f'REVOKE UPDATE (notes) ON "Sales".customer FROM {writer}')
        conn.execute("ALTER TABLE public.tenant_note NO FORCE ROW LEVEL SECURITY")
        conn.execute("SELECT setval('public.ticket_countdown', 9400, true)")
        conn.execute(f"""SELECT lo_from_bytea(0, 'stray');
                         ALTER LARGE OBJECT {unreferenced_large_object(conn)} OWNER TO {reader}""")
        conn.execute("""UPDATE "Sales"."Order" SET total = total + 1 WHERE id = 2;
                        REFRESH MATERIALIZED VIEW "Sales".customer_revenue""")

    lines = diff(before, snapshot(corpus_copy))
    assert f'schema: -GRANT UPDATE(notes) ON TABLE "Sales".customer TO {writer};' in lines
    assert "schema: -ALTER TABLE ONLY public.tenant_note FORCE ROW LEVEL SECURITY;" in lines
    assert "sequence public.ticket_countdown: (9400, False) before, (9400, True) after" in lines
    assert any(line.startswith("large object unreferenced md5 ") and f"owner {reader}" in line for line in lines)
    assert (
        "large object unreferenced md5 26c13a46b2188ad7f01d83e2bfe25a77: only after: "
        "'5 bytes md5 26c13a46b2188ad7f01d83e2bfe25a77, owner postgres, privileges None, comment None'" in lines
    )
    assert any(line.startswith("table Sales.Order: row (2) changed: ") for line in lines)
    assert any(line.startswith("materialized view Sales.customer_revenue: row only after: (3,") for line in lines)


def unreferenced_large_object(conn):
    return conn.execute("""
        SELECT oid FROM pg_largeobject_metadata m
        WHERE NOT EXISTS (SELECT FROM inventory.product_manual p WHERE m.oid IN (p.manual, p.scanned_copy))
        ORDER BY oid LIMIT 1""").fetchone()[0]

"""Preview, merge and replace of chosen tables on keys of every awkward type,
time-partitioned tables, generated and identity columns, triggers, and
tables other tables point at: what comes back is what was backed up, and
the counts are what PostgreSQL did."""

import psycopg
import pytest

from catalog import backup_runs
from catalog.models import Backup
from tests.factories import local_destination, make_plan, pg_source
from tests.harness.sample_db import table_fingerprints
from tests.support import execute_sql, restore_now

pytestmark = pytest.mark.django_db(transaction=True)

SCHEMA = r"""
CREATE TABLE events (id bigint, at timestamptz, kind text NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01 00:00+00') TO ('2026-01-01 00:00+00');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01 00:00+00') TO ('2027-01-01 00:00+00');
CREATE TABLE flags (k boolean PRIMARY KEY, v text);
CREATE TABLE blobs (k bytea PRIMARY KEY, v text);
CREATE TABLE spans (k interval PRIMARY KEY, v text);
CREATE TABLE amounts (k numeric(20, 6) PRIMARY KEY, v text);
CREATE TABLE moments (k timestamptz PRIMARY KEY, v text);
CREATE TABLE customers (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL,
                        name_upper text GENERATED ALWAYS AS (upper(name)) STORED, updated_at timestamptz);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers, total numeric(10, 2),
                     parent_id bigint REFERENCES orders ON DELETE CASCADE, updated_at timestamptz);
-- As in pagila: the foreign keys are the partitions' own, not the parent's.
CREATE TABLE warehouses (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE shipments (id bigint, at timestamptz, warehouse_id int NOT NULL, PRIMARY KEY (id, at))
    PARTITION BY RANGE (at);
CREATE TABLE shipments_2025 PARTITION OF shipments FOR VALUES FROM ('2025-01-01 00:00+00') TO ('2026-01-01 00:00+00');
CREATE TABLE shipments_2026 PARTITION OF shipments FOR VALUES FROM ('2026-01-01 00:00+00') TO ('2027-01-01 00:00+00');
ALTER TABLE shipments_2025 ADD FOREIGN KEY (warehouse_id) REFERENCES warehouses;
ALTER TABLE shipments_2026 ADD FOREIGN KEY (warehouse_id) REFERENCES warehouses;
-- As in pagila: a sequence the table's default uses without owning it.
CREATE SEQUENCE ticket_numbers;
CREATE TABLE tickets (id int PRIMARY KEY DEFAULT nextval('ticket_numbers'), subject text);
CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql
    AS $$ BEGIN NEW.updated_at := clock_timestamp(); RETURN NEW; END $$;
CREATE TRIGGER customers_stamp BEFORE INSERT OR UPDATE ON customers FOR EACH ROW EXECUTE FUNCTION stamp();
CREATE TRIGGER orders_stamp BEFORE INSERT OR UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION stamp();
ALTER TABLE orders DISABLE TRIGGER orders_stamp;  -- stays disabled after a restore, as it was
ALTER DATABASE {db} SET TimeZone TO 'Asia/Kathmandu';  -- the target's sessions write times their own way
"""

DATA = r"""
INSERT INTO events SELECT g, TIMESTAMPTZ '2025-06-01 10:00:00.123456+00' + g * INTERVAL '37 minutes 1.5 seconds',
    'k' || (g % 7)
    FROM generate_series(1, 20000) g;
INSERT INTO flags VALUES (true, 'yes'), (false, 'no');
INSERT INTO blobs SELECT decode(md5(g::text) || '00', 'hex'), 'b' || g FROM generate_series(1, 50) g;
INSERT INTO blobs VALUES ('\x00'::bytea, 'nul'), ('\x'::bytea, 'empty');
INSERT INTO spans SELECT make_interval(months => g % 3, days => g, secs => g / 7.0), 's' || g
    FROM generate_series(1, 50) g;
INSERT INTO amounts SELECT g / 7.0, 'a' || g FROM generate_series(1, 50) g;
INSERT INTO amounts VALUES ('NaN', 'not a number');
INSERT INTO moments SELECT TIMESTAMPTZ '2026-03-29 00:59:59.999999+00' + g * INTERVAL '1 second', 'm' || g
    FROM generate_series(0, 40) g;
INSERT INTO moments VALUES ('infinity', 'future'), ('-infinity', 'past');
INSERT INTO customers (name) SELECT 'customer ' || g FROM generate_series(1, 200) g;
INSERT INTO orders (customer_id, total) SELECT 1 + g % 200, g * 1.25 FROM generate_series(1, 1000) g;
UPDATE orders SET parent_id = id - 1 WHERE id % 5 <> 1;
INSERT INTO tickets (subject) SELECT 'ticket ' || g FROM generate_series(1, 30) g;
INSERT INTO warehouses SELECT g, 'warehouse ' || g FROM generate_series(1, 50) g;
INSERT INTO shipments SELECT g, TIMESTAMPTZ '2025-11-01 00:00+00' + g * INTERVAL '3 hours', 1 + g % 50
    FROM generate_series(1, 1000) g;
"""

KEYED = ["public.events", "public.flags", "public.blobs", "public.spans", "public.amounts", "public.moments"]
REMOVE = r"""
DELETE FROM events WHERE id % 10 = 3;  -- 2,000 rows, across both partitions
DELETE FROM flags WHERE k;
DELETE FROM blobs WHERE v IN ('b7', 'b8', 'nul', 'empty');
DELETE FROM spans WHERE v IN ('s3', 's40');
DELETE FROM amounts WHERE v IN ('a1', 'a49', 'not a number');
DELETE FROM moments WHERE v IN ('m1', 'm2', 'future', 'past');
"""
REMOVED = {
    "public.events": 2000,
    "public.flags": 1,
    "public.blobs": 4,
    "public.spans": 2,
    "public.amounts": 3,
    "public.moments": 4,
}


@pytest.fixture
def source_db(pg_database):
    execute_sql(pg_database, SCHEMA.replace("{db}", pg_database["dbname"]))
    execute_sql(pg_database, DATA)
    return pg_database


@pytest.fixture
def backup(source_db, tmp_path):
    plan = make_plan(pg_source(source_db), [local_destination(tmp_path / "disk")], verify_new_backups=False)
    backup = backup_runs.run_backup(backup_runs.create_backup("test", plan).pk)
    assert backup.status == Backup.SUCCEEDED, backup.error
    return backup


def into_source(backup, source_db, mode, tables):
    name = source_db["dbname"]
    return restore_now(backup, target="existing", database=name, mode=mode, tables=tables, confirmed_name=name)


def test_it_merges_back_exactly_the_deleted_rows_whatever_the_key_type(source_db, backup):
    at_backup = table_fingerprints(source_db)
    execute_sql(source_db, REMOVE)

    job = into_source(backup, source_db, "merge", KEYED)

    assert job.status == "succeeded", job.summary
    assert job.report["inserted"] == REMOVED
    assert job.summary == f"Inserted {sum(REMOVED.values())} missing rows; existing rows were left as they were."
    assert table_fingerprints(source_db) == at_backup


def test_a_preview_reports_exactly_the_changes_made_and_changes_nothing(source_db, backup):
    execute_sql(source_db, REMOVE)
    execute_sql(
        source_db,
        "UPDATE events SET kind = 'edited' WHERE id IN (1, 2, 4); UPDATE moments SET v = 'x' WHERE v = 'm5';"
        "INSERT INTO events VALUES (99999, '2026-05-05', 'new'); INSERT INTO spans VALUES ('1 year', 'new')",
    )
    before = table_fingerprints(source_db)

    job = into_source(backup, source_db, "preview", KEYED)

    assert job.status == "succeeded", job.summary
    found = {t["table"]: (t["only_in_backup"], t["only_in_target"], t["differ"]) for t in job.report["tables"]}
    assert found == {
        "public.events": (2000, 1, 3),
        "public.flags": (1, 0, 0),
        "public.blobs": (4, 0, 0),
        "public.spans": (2, 1, 0),
        "public.amounts": (3, 0, 0),
        "public.moments": (4, 0, 1),
    }
    assert table_fingerprints(source_db) == before


def test_a_merge_keeps_generated_identity_and_trigger_columns_as_they_were(source_db, backup):
    at_backup = table_fingerprints(source_db)
    execute_sql(source_db, "DELETE FROM orders WHERE customer_id IN (3, 4); DELETE FROM customers WHERE id IN (3, 4)")
    deleted_orders = at_backup["public.orders"][0] - table_fingerprints(source_db)["public.orders"][0]

    job = into_source(backup, source_db, "merge", ["public.orders", "public.customers"])

    assert job.status == "succeeded", job.summary
    assert job.report["inserted"] == {"public.customers": 2, "public.orders": deleted_orders}
    assert table_fingerprints(source_db) == at_backup  # updated_at as backed up, the stamp trigger stayed out
    with psycopg.connect(**source_db) as conn:
        assert conn.execute(
            "SELECT tgname, tgenabled FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1"
        ).fetchall() == [("customers_stamp", "O"), ("orders_stamp", "D")]
        # The identity column goes on from where it was: no collision with the rows that came back.
        assert conn.execute("INSERT INTO customers (name) VALUES ('new') RETURNING id").fetchone() == (201,)


def test_it_replaces_a_table_other_tables_point_at_and_keeps_their_foreign_keys(source_db, backup):
    execute_sql(source_db, "UPDATE customers SET name = 'renamed' WHERE id <= 20")
    with psycopg.connect(**source_db) as conn:
        orders_before = table_fingerprints(source_db)["public.orders"]
        constraints = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid), convalidated FROM pg_constraint WHERE contype = 'f' ORDER BY 1"
        ).fetchall()

    job = into_source(backup, source_db, "full", ["public.customers"])

    assert job.status == "succeeded", job.summary
    with psycopg.connect(**source_db) as conn:
        assert conn.execute("SELECT count(*) FROM customers WHERE name = 'renamed'").fetchone() == (0,)
        assert (
            conn.execute(
                "SELECT conname, pg_get_constraintdef(oid), convalidated FROM pg_constraint "
                "WHERE contype = 'f' ORDER BY 1"
            ).fetchall()
            == constraints
        )
    assert table_fingerprints(source_db)["public.orders"] == orders_before


def test_a_replace_that_would_orphan_rows_is_refused_naming_the_constraint(source_db, backup):
    execute_sql(
        source_db,
        "INSERT INTO customers (name) VALUES ('late'), ('later');"
        "INSERT INTO orders (customer_id, total) SELECT id, 1 FROM customers WHERE name LIKE 'late%'",
    )
    before = table_fingerprints(source_db)

    job = into_source(backup, source_db, "full", ["public.customers"])

    assert job.status == "failed"
    assert "2 row(s) of orders pointing at nothing (foreign key orders_customer_id_fkey)" in job.summary
    assert table_fingerprints(source_db) == before
    assert not job.safety_backup.pinned  # nothing changed: no way back is needed


def test_related_tables_and_a_partitioned_parent_are_replaced_together(source_db, backup):
    at_backup = table_fingerprints(source_db)
    execute_sql(
        source_db,
        "INSERT INTO customers (name) VALUES ('late');"
        "INSERT INTO orders (customer_id, total, parent_id) SELECT max(id), 1, 7 FROM customers;"
        "DELETE FROM orders WHERE id BETWEEN 100 AND 200; DELETE FROM events WHERE id < 500;"
        "INSERT INTO events VALUES (99999, '2026-05-05', 'new')",
    )

    job = into_source(backup, source_db, "full", ["public.customers", "public.events", "public.orders"])

    assert job.status == "succeeded", job.summary
    assert job.report["written"] == {"public.customers": 200, "public.events": 20000, "public.orders": 1000}
    now = table_fingerprints(source_db)
    assert {t: now[t] for t in now if not t.startswith("sequence public.customers")} == {
        t: at_backup[t] for t in at_backup if not t.startswith("sequence public.customers")
    }


def test_a_merge_puts_back_parents_before_the_partitions_whose_own_foreign_keys_point_at_them(source_db, backup):
    at_backup = table_fingerprints(source_db)
    execute_sql(
        source_db, "DELETE FROM shipments WHERE warehouse_id IN (7, 8); DELETE FROM warehouses WHERE id IN (7, 8)"
    )

    job = into_source(backup, source_db, "merge", ["public.shipments", "public.warehouses"])

    assert job.status == "succeeded", job.summary
    assert job.report["inserted"] == {"public.warehouses": 2, "public.shipments": 40}
    assert table_fingerprints(source_db) == at_backup


def test_a_merge_the_database_refuses_changes_nothing_and_unpins_its_safety_backup(source_db, backup):
    execute_sql(source_db, "DELETE FROM shipments WHERE warehouse_id = 9; DELETE FROM warehouses WHERE id = 9")
    before = table_fingerprints(source_db)

    job = into_source(backup, source_db, "merge", ["public.shipments"])  # their warehouse is not merged with them

    assert job.status == "failed" and "shipments_2025_warehouse_id_fkey" in job.summary
    assert table_fingerprints(source_db) == before
    assert not job.safety_backup.pinned


def test_a_replace_moves_a_sequence_the_table_uses_without_owning_it_forward_to_the_backups(source_db, backup):
    at_backup = table_fingerprints(source_db)
    execute_sql(source_db, "TRUNCATE tickets; SELECT setval('ticket_numbers', 1, false)")

    job = into_source(backup, source_db, "full", ["public.tickets"])

    assert job.status == "succeeded", job.summary
    assert table_fingerprints(source_db) == at_backup
    with psycopg.connect(**source_db) as conn:
        assert conn.execute("INSERT INTO tickets (subject) VALUES ('new') RETURNING id").fetchone() == (31,)


def test_a_replace_makes_a_dropped_table_again_with_its_keys_indexes_trigger_and_rows(source_db, backup):
    at_backup = table_fingerprints(source_db)
    with psycopg.connect(**source_db) as conn:
        definition_before = table_definition(conn, "orders")
    execute_sql(source_db, "DROP TABLE orders")  # the usual accident: its sequence goes with it

    job = into_source(backup, source_db, "full", ["public.orders"])

    assert job.status == "succeeded", job.summary
    assert job.report["created"] == ["public.orders"]
    assert "public.orders was missing and made again" in job.summary
    assert table_fingerprints(source_db) == at_backup  # the rows, and the identity sequence where it was
    with psycopg.connect(**source_db) as conn:
        assert table_definition(conn, "orders") == definition_before
        # The sequence goes on from the backup's value, and the foreign key to customers holds.
        assert conn.execute("INSERT INTO orders (customer_id, total) VALUES (1, 1) RETURNING id").fetchone() == (1001,)
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("INSERT INTO orders (customer_id, total) VALUES (999999, 1)")


def test_a_merge_makes_a_dropped_partitioned_table_again_with_its_partitions(source_db, backup):
    at_backup = table_fingerprints(source_db)
    execute_sql(source_db, "DROP TABLE shipments")

    job = into_source(backup, source_db, "merge", ["public.shipments"])

    assert job.status == "succeeded", job.summary
    assert job.report["created"] == ["public.shipments"]
    assert job.report["inserted"] == {"public.shipments": 1000}
    assert table_fingerprints(source_db) == at_backup
    with psycopg.connect(**source_db) as conn:
        partitions = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'shipments'::regclass ORDER BY 1"
        ).fetchall()
        assert partitions == [("shipments_2025",), ("shipments_2026",)]
        assert conn.execute(
            "SELECT count(*) FROM pg_constraint WHERE conname LIKE 'shipments_20%_fkey'"
        ).fetchone() == (2,)


def test_a_dropped_table_the_backup_cannot_make_again_changes_nothing(source_db, backup):
    # Its foreign key points at a table that is gone as well and not chosen: the whole change is rolled back.
    execute_sql(source_db, "DROP TABLE shipments; DROP TABLE warehouses")
    before = table_fingerprints(source_db)

    job = into_source(backup, source_db, "full", ["public.shipments"])

    assert job.status == "failed" and "warehouses" in job.summary
    assert table_fingerprints(source_db) == before
    assert not job.safety_backup.pinned


def table_definition(conn, table):
    """Columns, constraints, indexes and triggers of a table, as the catalogs describe them."""
    columns = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod), attnotnull, attidentity, attgenerated "
        "FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        [table],
    ).fetchall()
    constraints = conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass ORDER BY 1",
        [table],
    ).fetchall()
    indexes = conn.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s ORDER BY 1", [table]).fetchall()
    triggers = conn.execute(
        "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal ORDER BY 1",
        [table],
    ).fetchall()
    return columns, constraints, indexes, triggers

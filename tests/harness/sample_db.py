"""Databases with awkward content, and ways to compare two of them exactly."""

import contextlib
import os
import subprocess
import uuid

import psycopg

TRICKY_SCHEMA = r"""
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE SCHEMA "Inventory";
CREATE SEQUENCE order_numbers START 1000;
CREATE TABLE "Inventory"."StockItem" (
    id serial PRIMARY KEY,
    "SKU" text NOT NULL UNIQUE,
    payload jsonb,
    tags text[],
    photo bytea,
    feeling mood,
    note text,
    updated_at timestamptz
);
CREATE TABLE measurements (id bigint, taken date NOT NULL, value numeric(12, 3)) PARTITION BY RANGE (taken);
CREATE TABLE measurements_2025 PARTITION OF measurements FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE measurements_2026 PARTITION OF measurements FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE big_ledger (id bigint PRIMARY KEY, account text, amount numeric(14, 2), memo text);
CREATE VIEW "Inventory".happy_items AS SELECT id, "SKU" FROM "Inventory"."StockItem" WHERE feeling = 'happy';
CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at := '2026-01-01 00:00:00+00'; RETURN NEW; END $$;
CREATE TRIGGER stock_touch BEFORE INSERT OR UPDATE ON "Inventory"."StockItem"
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
"""

TRICKY_DATA = r"""
INSERT INTO "Inventory"."StockItem" ("SKU", payload, tags, photo, feeling, note) VALUES
  ('A-1', '{"size": [1, 2], "nested": {"ok": true}}', ARRAY['red', 'blue'], '\x00ff10'::bytea,
    'happy', 'مرحبا بالعالم'),
  ('b-2', '{"emoji": "🎉🔥"}', ARRAY['with,comma', 'with"quote'], '\xdeadbeef'::bytea, 'sad', E'line1\nline2\ttab'),
  ('C-3', NULL, '{}', NULL, NULL, 'NULL');
SELECT nextval('order_numbers') FROM generate_series(1, 3);
INSERT INTO measurements SELECT g, DATE '2025-06-01' + (g % 400), g * 1.5 FROM generate_series(1, 2000) g;
INSERT INTO big_ledger SELECT g, 'acct-' || (g % 97), (g % 10000) / 100.0, md5(g::text)
    FROM generate_series(1, {big_rows}) g;
"""


def create_tricky_database(conninfo, big_rows=200_000):
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        conn.execute(TRICKY_SCHEMA)
        conn.execute(TRICKY_DATA.replace("{big_rows}", str(big_rows)))
        conn.execute("ANALYZE")


@contextlib.contextmanager
def throwaway_tricky_database(prefix, big_rows):
    """A new database on the tests' server filled by create_tricky_database,
    dropped afterwards: for module-scoped sources that several tests read."""
    from tests.harness import pg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    conninfo = pg.create_database(name)
    try:
        create_tricky_database(conninfo, big_rows=big_rows)
        yield conninfo
    finally:
        pg.drop_database(name)


def libpq_env(conninfo):
    env = {"PGHOST": conninfo["host"], "PGPORT": str(conninfo["port"]), "PGUSER": conninfo["user"]}
    if conninfo.get("password"):
        env["PGPASSWORD"] = conninfo["password"]
    return env


def schema_dump(conninfo):
    """pg_dump --schema-only, without the per-run \\restrict tokens."""
    out = subprocess.run(
        ["pg_dump", "--schema-only", "--no-owner", conninfo["dbname"]],
        env={**os.environ, **libpq_env(conninfo)},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [line for line in out.splitlines() if not line.startswith(("\\restrict", "\\unrestrict"))]


def table_fingerprints(conninfo):
    """{table: (row count, md5 of all rows in a stable order)} for user tables,
    plus the sequences' last values."""
    result = {}
    with psycopg.connect(**conninfo) as conn:
        tables = conn.execute(
            """SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1"""
        ).fetchall()
        for (table,) in tables:
            count, digest = conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t"
            ).fetchone()
            result[table] = (count, digest)
        sequences = "SELECT quote_ident(schemaname) || '.' || quote_ident(sequencename) FROM pg_sequences ORDER BY 1"
        for (seq,) in conn.execute(sequences).fetchall():
            result[f"sequence {seq}"] = conn.execute(f"SELECT last_value, is_called FROM {seq}").fetchone()
    return result


def pg_restore(path, conninfo):
    subprocess.run(
        ["pg_restore", "--no-owner", "--exit-on-error", "--dbname", conninfo["dbname"], path],
        env={**os.environ, **libpq_env(conninfo)},
        check=True,
        capture_output=True,
    )

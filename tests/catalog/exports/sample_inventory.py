"""A small inventory database for the export-plan tests: customers and
orders picked by name (orders with a row filter), audit tables picked by a
named set, and settings left out."""

import psycopg

SCHEMA = r"""
CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL, email text, active boolean NOT NULL,
                        joined timestamptz NOT NULL, notes jsonb);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id integer NOT NULL, total numeric(12, 2) NOT NULL,
                     tags text[], placed_at timestamptz NOT NULL);
CREATE TABLE audit_logins (id integer PRIMARY KEY, who text NOT NULL, at timestamptz NOT NULL);
CREATE TABLE audit_changes (id integer PRIMARY KEY, what text, payload bytea);
CREATE TABLE settings (key text PRIMARY KEY, value text);
"""

DATA = r"""
INSERT INTO customers SELECT g, 'Customer ' || g, CASE WHEN g % 5 = 0 THEN NULL ELSE 'c' || g || '@example.org' END,
    g % 3 <> 0, TIMESTAMPTZ '2025-01-01 00:00:00+00' + g * INTERVAL '1 hour',
    CASE WHEN g % 4 = 0 THEN '{"vip": true, "نص": "مرحبا"}'::jsonb END
    FROM generate_series(1, 120) g;
INSERT INTO orders SELECT g, 1 + g % 120, (g % 200) + 0.25, ARRAY['a', 'b,' || g],
    TIMESTAMPTZ '2025-06-01 12:00:00+02' + g * INTERVAL '1 minute'
    FROM generate_series(1, 500) g;
INSERT INTO audit_logins SELECT g, 'user' || (g % 7), TIMESTAMPTZ '2026-01-01 00:00:00+00' + g * INTERVAL '1 second'
    FROM generate_series(1, 40) g;
INSERT INTO audit_changes VALUES (1, 'created', '\x00ff'), (2, '', NULL), (3, NULL, '\xdeadbeef');
INSERT INTO settings VALUES ('theme', 'dark'), ('secret_setting', 'not exported');
"""

EXPORTED_ORDERS = "total > 150"  # the row filter the tests give orders


def create_inventory(conninfo):
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute(DATA)
        conn.execute("ANALYZE")


def scalar(conninfo, query):
    with psycopg.connect(**conninfo) as conn:
        return conn.execute(query).fetchone()[0]


def rows_of(conninfo, table, where="TRUE"):
    """Every row of a table as text, in a stable order: equal lists mean equal data."""
    with psycopg.connect(**conninfo) as conn:
        return conn.execute(f"SELECT t::text FROM {table} AS t WHERE {where} ORDER BY 1").fetchall()

"""Known damage to a corpus database: rows deleted, updated and inserted in
tables whose keys are hard to match (timestamptz with infinities, bytea
with NUL bytes, numeric with NaN and trailing zeros, boolean, interval,
odd text, text + date, uuid), in partitioned tables through their parent,
and in a table with a generated column and an identity column.

Only rows nothing else references are deleted, no key is changed, and no
sequence is advanced, so the report is the whole damage: no cascade,
trigger or sequence changes anything beyond it. (price_list's trigger does
rewrite updated_at in the rows it reports as updated or inserted.)
"""

import dataclasses

import psycopg
from psycopg import sql

from tests.corpus.compare import TableChanges, row_expressions, set_stable_output, strongroom_name


@dataclasses.dataclass
class Harm:
    """What to do to one table: WHERE clauses for the rows to delete and to
    update, the SET clause for the update, and VALUES to insert (for the
    columns named in `insert_columns`)."""

    table: str
    delete_where: str = ""
    update_set: str = ""
    update_where: str = ""
    insert_columns: str = ""
    insert_values: str = ""
    overriding_identity: bool = False


HARMS = [
    Harm(
        "audit.event_log",
        delete_where="""occurred_at IN ('infinity', '2024-03-31 01:59:59.999999+00')
            OR occurred_at IN (SELECT occurred_at FROM audit.event_log WHERE actor = 'cron'
                               ORDER BY occurred_at LIMIT 5)""",
        update_set="action = action || ' (edited)'",
        update_where="""occurred_at = '-infinity'
            OR occurred_at IN (SELECT occurred_at FROM audit.event_log WHERE actor = 'bob'
                               ORDER BY occurred_at LIMIT 3)""",
        insert_columns="occurred_at, actor, action",
        insert_values="('2024-01-01 00:00:00.5+00', 'intruder', 'login'), "
        "('2099-12-31 23:59:59.999999+00', 'intruder', 'logout')",
    ),
    Harm(
        "inventory.blob_index",
        delete_where=r"""digest IN ('\x', '\x00')
            OR digest IN (SELECT digest FROM inventory.blob_index WHERE size_bytes > 4096
                          ORDER BY digest LIMIT 3)""",
        update_set="path = path || ' (moved)'",
        update_where=r"digest = '\x0000'",
        insert_columns="digest, size_bytes, path",
        insert_values=r"('\x000000', 3, 'three NUL bytes'), ('\xdeadbeef00', 5, 'dead beef')",
    ),
    Harm(
        "public.exchange_rate",
        delete_where="""rate IN ('NaN', 1.5)
            OR rate IN (SELECT rate FROM public.exchange_rate WHERE pair = 'EUR/USD' ORDER BY rate LIMIT 3)""",
        update_set="pair = pair || ' (revised)'",
        update_where="rate = 0 OR rate BETWEEN 1e29 AND 1e30",
        insert_columns="rate, pair",
        insert_values="(2.500, 'new, trailing zeros'), (-1, 'new, negative')",
    ),
    Harm(
        "public.flag_default",
        delete_where="NOT enabled",
        update_set="meaning = upper(meaning)",
        update_where="enabled",
    ),
    Harm(
        "public.retention_tier",
        delete_where="keep_for IN ('1 mon', '0.000001 seconds')",
        update_set="label = label || ' (renamed)'",
        update_where="keep_for = '-3 days'",
        insert_columns="keep_for, label",
        insert_values="('2 days', 'new'), ('1 year', 'new too')",
    ),
    Harm(
        "public.tag",
        delete_where=r"label IN (E'tab\there', '', '🎉 party', E'\\N', 'NULL', E'e\u0301')",
        update_set="description = description || ' (edited)'",
        update_where=r"label IN (E'new\nline', E'mixed \u200fעברית\u200e ltr', 'é')",
        insert_columns="label, description",
        insert_values=r"(E'fresh\ttag', 'new'), ('ünïcödé', 'new too')",
    ),
    Harm(
        "Sales.price_list",
        delete_where=r"""(sku, valid_from) IN (('', '0044-03-15 BC'), (E'odd\tsku', '2024-02-29'))
            OR (sku, valid_from) IN (SELECT sku, valid_from FROM "Sales".price_list WHERE valid_from = 'infinity'
                                     ORDER BY sku LIMIT 3)""",
        update_set="price = price + 1",
        update_where="""sku = 'ÆØÅ "quoted" sku'
            OR (sku, valid_from) IN (SELECT sku, valid_from FROM "Sales".price_list WHERE valid_from = '-infinity'
                                     ORDER BY sku LIMIT 2)""",
        insert_columns="sku, valid_from, price",
        insert_values="('SKU-00002', '2025-01-01', 12.3456), ('SKU-00002', '1999-12-31', 0.0001)",
    ),
    Harm(
        "Sales.OrderLine",
        delete_where="""(order_id, line_no) IN (
            SELECT l.order_id, l.line_no FROM "Sales"."OrderLine" l
            WHERE NOT EXISTS (SELECT FROM "Sales".shipment s WHERE s.order_id = l.order_id AND s.line_no = l.line_no)
            ORDER BY l.order_id, l.line_no LIMIT 6)""",
        update_set="quantity = quantity + 1",
        update_where="order_id IN (4, 5) AND line_no = 1",
        insert_columns="order_id, line_no, product_sku, quantity, unit_price",
        insert_values="(1, 99, 'SKU-00001', 7, 1.2345)",
    ),
    Harm(
        "metrics.reading",
        delete_where="""(sensor_id, taken_at) IN (
            SELECT r.sensor_id, r.taken_at FROM metrics.reading r
            WHERE NOT EXISTS (SELECT FROM metrics.reading_annotation a
                              WHERE a.sensor_id = r.sensor_id AND a.taken_at = r.taken_at)
            ORDER BY md5(r.sensor_id || ' ' || r.taken_at) LIMIT 12)""",
        update_set="value = -value",
        update_where="""sensor_id = 7 AND value > 0 AND value <> 'NaN'
            AND taken_at >= '2025-01-01' AND taken_at < '2025-02-01'""",
        insert_columns="sensor_id, taken_at, value, quality",
        insert_values="(1, '2025-06-15 12:00:00.000001+00', 42, 5), (2, '2025-06-15 12:00:00+00', 43, 5), "
        "(3, '2031-01-01 00:00:00+00', 'NaN', 0)",
    ),
    Harm(
        "Sales.invoice",
        delete_where="""(region, number) IN (SELECT region, number FROM "Sales".invoice WHERE number % 3 = 0
                                             ORDER BY number LIMIT 8)""",
        update_set="amount = amount + 1::money",
        update_where="number IN (1015, 1022)",
    ),
    Harm(
        "Sales.customer",
        update_set="display_name = display_name || ' (renamed)', notes = NULL",
        update_where="id IN (2, 3, 10)",
        insert_columns="id, email, display_name, created_at",
        insert_values="(1000000, 'new@example.org', 'Newcomer', '2025-01-01 00:00:00+00')",
        overriding_identity=True,
    ),
    Harm(
        "public.session_cache",
        delete_where="token IN (SELECT token FROM public.session_cache ORDER BY token LIMIT 3)",
        insert_columns="token, payload, expires_at",
        insert_values="('00000000-0000-0000-0000-000000000001', '{}', 'infinity')",
    ),
    Harm(
        "public.type_zoo",
        delete_where="id IN (4, 101, 102)",
        update_set=r"plain = E'changed\t\\', raw = raw || '\x00'",
        update_where="id IN (2, 3)",
    ),
]


def damage(conninfo, harms=HARMS):
    """Applies the harms in one transaction; returns {table: TableChanges}
    with the keys (as ROW(primary key)::text, like snapshot()) the database
    reported through RETURNING. Rows changed through a partitioned table are
    reported under the partition that holds them."""
    changes = {}
    with psycopg.connect(**conninfo) as conn:
        set_stable_output(conn)
        names = {}
        for harm in harms:
            schema, table = harm.table.split(".", 1)
            target = sql.Identifier(schema, table)
            relation_oid = conn.execute("SELECT %s::regclass::oid", [target.as_string(conn)]).fetchone()[0]
            key, _ = row_expressions(conn, relation_oid, "damaged")
            returning = sql.SQL(" RETURNING damaged.tableoid, {}").format(key)
            statements = []
            if harm.delete_where:
                statements.append(
                    ("deleted", sql.SQL("DELETE FROM {} damaged WHERE ").format(target) + sql.SQL(harm.delete_where))
                )
            if harm.update_set:
                statements.append(
                    (
                        "updated",
                        sql.SQL("UPDATE {} damaged SET ").format(target)
                        + sql.SQL(harm.update_set)
                        + sql.SQL(" WHERE ")
                        + sql.SQL(harm.update_where),
                    )
                )
            if harm.insert_values:
                overriding = sql.SQL(" OVERRIDING SYSTEM VALUE" if harm.overriding_identity else "")
                statements.append(
                    (
                        "inserted",
                        sql.SQL("INSERT INTO {} AS damaged ({}){} VALUES ").format(
                            target, sql.SQL(harm.insert_columns), overriding
                        )
                        + sql.SQL(harm.insert_values),
                    )
                )
            for kind, statement in statements:
                for holder, row_key in conn.execute(statement + returning).fetchall():
                    if holder not in names:
                        names[holder] = strongroom_name(
                            *conn.execute(
                                "SELECT n.nspname, c.relname FROM pg_class c"
                                " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s",
                                [holder],
                            ).fetchone()
                        )
                    getattr(changes.setdefault(names[holder], TableChanges()), kind).append(row_key)
    return {table: found.sort() for table, found in sorted(changes.items())}

"""Making the corpus in a database, describing it, and removing its roles."""

import dataclasses
import os
import re
import secrets
import subprocess

import psycopg
from psycopg import sql

from tests.corpus import schemas
from tests.corpus.compare import set_stable_output, strongroom_name
from tests.harness.sample_db import libpq_env

# Customers per size; orders are twice as many, order lines about six times,
# readings five times, so "small" gives a few thousand rows in the big tables.
SIZES = {"tiny": 120, "small": 600, "medium": 5_000, "large": 50_000}

PLACEHOLDER = re.compile(r"\{(owner|reader|writer|database|email_base|customers)\}")

RELATIONS = """
SELECT c.oid, n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm', 'S')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
ORDER BY 2, 3
"""
INHERITANCE = """
SELECT parent.nspname, p.relname, child.nspname, c.relname, c.relispartition
FROM pg_inherits i
JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace parent ON parent.oid = p.relnamespace
JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace child ON child.oid = c.relnamespace
WHERE p.relkind IN ('r', 'p')
ORDER BY 1, 2, 3, 4
"""
PRIMARY_KEY_TYPES = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
WHERE i.indrelid = %s AND i.indisprimary
ORDER BY array_position(i.indkey::int2[], a.attnum)
"""
OID_COLUMNS = """
SELECT n.nspname, c.relname, a.attname FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE a.atttypid = 'oid'::regtype AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
ORDER BY 1, 2, 3
"""

# Large objects get owners, grants and comments once their oids exist.
DRESS_LARGE_OBJECTS = r"""
DO $$
DECLARE
    manual record;
BEGIN
    FOR manual IN
        SELECT DISTINCT m.manual AS oid, p.n::integer AS n FROM inventory.product_manual m
        JOIN (SELECT product_id, row_number() OVER (ORDER BY product_id) AS n FROM inventory.product_manual) p
          ON p.product_id = m.product_id
    LOOP
        EXECUTE format('ALTER LARGE OBJECT %s OWNER TO %I', manual.oid,
                       CASE WHEN manual.n % 5 = 0 THEN '{writer}' ELSE '{owner}' END);
        IF manual.n % 2 = 0 THEN
            EXECUTE format('GRANT SELECT ON LARGE OBJECT %s TO %I', manual.oid, '{reader}');
        END IF;
        IF manual.n % 3 = 0 THEN
            EXECUTE format('GRANT SELECT, UPDATE ON LARGE OBJECT %s TO %I', manual.oid, '{writer}');
            EXECUTE format('COMMENT ON LARGE OBJECT %s IS %L', manual.oid,
                           'Manual no. ' || manual.n || E', \\ and '' kept');
        END IF;
    END LOOP;
END $$;
"""


@dataclasses.dataclass
class Corpus:
    """What create_corpus made. Table names are Strongroom's: unquoted
    schema and table joined by a dot ("Sales.OrderLine", "Sales.Gift Card")."""

    conninfo: dict
    size: str
    role_prefix: str
    roles: dict  # {"owner": name, "reader": name, "writer": name}
    tables: list  # every table, partitioned parents and inheritance parents included
    partitions: dict  # partitioned table -> its direct partitions (a partition may be partitioned again)
    inheritance_children: dict  # INHERITS parent -> its children
    primary_keys: dict  # table -> [(column, type as format_type shows it)]
    row_counts: dict  # table with storage -> rows in it alone (FROM ONLY)
    sequences: list
    materialized_views: list
    large_object_columns: list  # "schema.table.column" holding large-object oids
    skipped: list  # parts left out because this server lacks what they need

    def leaf_partitions(self, table):
        """Every partition under `table` that holds rows itself."""
        leaves = []
        for child in self.partitions.get(table, []):
            leaves += self.leaf_partitions(child) if child in self.partitions else [child]
        return leaves

    def tables_keyed_by(self, type_name):
        """Tables whose primary key has a column of this type, e.g. 'bytea'."""
        return sorted(t for t, columns in self.primary_keys.items() if any(ty == type_name for _, ty in columns))


def fill(template, values):
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def create_corpus(conninfo, size="small", role_prefix=None):
    """Fills the empty database `conninfo` (psycopg keywords, a superuser)
    with the corpus and returns its Corpus. New NOLOGIN roles named
    <role_prefix>owner/reader/writer are made (prefix random by default);
    remove them with drop_corpus_roles()."""
    role_prefix = role_prefix or f"corpus_{secrets.token_hex(4)}_"
    roles = {kind: f"{role_prefix}{kind}" for kind in ("owner", "reader", "writer")}
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        if conn.execute(RELATIONS).fetchone():
            raise ValueError(f"database {conninfo['dbname']} is not empty")
        available = {name for (name,) in conn.execute("SELECT name FROM pg_available_extensions")}
        has_icu = conn.execute("SELECT EXISTS (SELECT FROM pg_collation WHERE collprovider = 'i')").fetchone()[0]
        values = {
            **roles,
            "database": sql.Identifier(conninfo["dbname"]).as_string(conn),
            "email_base": "public.citext" if "citext" in available else "text",
            "customers": str(SIZES[size]),
        }
        conn.execute(fill(schemas.ROLES, values))
    try:
        fill_database(conninfo, values, available, has_icu)
    except BaseException:
        # Roles are cluster-wide: a half-made corpus must not leave them behind.
        drop_roles({k: v for k, v in conninfo.items() if k != "dbname"}, roles.values())
        raise

    skipped = []
    if "citext" not in available:
        skipped.append("citext: emails are plain text and public.username is not made")
    if "pg_trgm" not in available:
        skipped.append("pg_trgm: no trigram index on inventory.product")
    if not has_icu:
        skipped.append("ICU: natural_sort is a copy of the C collation")
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        conn.execute("ANALYZE")
        return describe(conn, conninfo, size, role_prefix, roles, skipped)


def fill_database(conninfo, values, available, has_icu):
    # Autocommit, so that each transaction() below commits on its own.
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        set_stable_output(conn)
        # Unqualified operators on citext values must find citext's own, in
        # public, as the application's sessions would.
        conn.execute("SET search_path = public")
        with conn.transaction():
            if "citext" in available:
                conn.execute(schemas.EXTENSION_CITEXT)
            if "pg_trgm" in available:
                conn.execute(schemas.EXTENSION_PG_TRGM)
            conn.execute(schemas.COLLATION_ICU if has_icu else schemas.COLLATION_LIBC)
            conn.execute(schemas.ENUM)
        with conn.transaction():
            conn.execute(fill(schemas.SCHEMA, values))
            conn.execute(fill(schemas.DATA, values))
            conn.execute(fill(schemas.DATA_CONTINUED, values))
            if "citext" in available:
                conn.execute(schemas.CITEXT_TABLES)
            if "pg_trgm" in available:
                conn.execute(schemas.PG_TRGM_INDEX)
            conn.execute(fill(DRESS_LARGE_OBJECTS, values))
            conn.execute(fill(schemas.AFTER_DATA, values))
            conn.execute(fill(schemas.DATABASE_PROPERTIES, values))


def describe(conn, conninfo, size, role_prefix, roles, skipped):
    corpus = Corpus(
        conninfo=dict(conninfo),
        size=size,
        role_prefix=role_prefix,
        roles=roles,
        tables=[],
        partitions={},
        inheritance_children={},
        primary_keys={},
        row_counts={},
        sequences=[],
        materialized_views=[],
        large_object_columns=[],
        skipped=skipped,
    )
    for relation_oid, schema, name, kind in conn.execute(RELATIONS).fetchall():
        qualified = strongroom_name(schema, name)
        if kind == "S":
            corpus.sequences.append(qualified)
            continue
        if kind == "m":
            corpus.materialized_views.append(qualified)
            continue
        corpus.tables.append(qualified)
        key = conn.execute(PRIMARY_KEY_TYPES, [relation_oid]).fetchall()
        if key:
            corpus.primary_keys[qualified] = key
        if kind == "r":
            count = sql.SQL("SELECT count(*) FROM ONLY {}").format(sql.Identifier(schema, name))
            corpus.row_counts[qualified] = conn.execute(count).fetchone()[0]
    for parent_schema, parent, child_schema, child, is_partition in conn.execute(INHERITANCE).fetchall():
        family = corpus.partitions if is_partition else corpus.inheritance_children
        family.setdefault(strongroom_name(parent_schema, parent), []).append(strongroom_name(child_schema, child))
    corpus.large_object_columns = [f"{s}.{t}.{c}" for s, t, c in conn.execute(OID_COLUMNS).fetchall()]
    return corpus


def drop_corpus_roles(server, corpus):
    """Removes the corpus roles from the cluster at `server` (psycopg
    keywords without dbname): whatever they own in any database is handed
    to the connecting user, their grants are revoked, then they are dropped."""
    drop_roles(server, corpus.roles.values())


def drop_roles(server, roles):
    with psycopg.connect(**server, dbname="postgres", autocommit=True) as conn:
        existing = [
            name for (name,) in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY (%s)", [list(roles)])
        ]
        if not existing:
            return
        databases = [
            name
            for (name,) in conn.execute(
                """SELECT DISTINCT d.datname FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid
               WHERE s.refclassid = 'pg_authid'::regclass AND d.datallowconn
                 AND s.refobjid IN (SELECT oid FROM pg_roles WHERE rolname = ANY (%s))""",
                [existing],
            )
        ]
    role_list = sql.SQL(", ").join(map(sql.Identifier, existing))
    # postgres last: REASSIGN OWNED there also hands over databases they own.
    for database in [d for d in databases if d != "postgres"] + ["postgres"]:
        try:
            with psycopg.connect(**server, dbname=database, autocommit=True) as conn:
                conn.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(role_list))
                # One role at a time: PostgreSQL 15 fails ("could not find tuple
                # for default ACL") when one DROP OWNED names both the owner of
                # a default ACL and a role it grants to.
                for role in existing:
                    conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        except psycopg.OperationalError:
            continue  # dropped meanwhile by its own test: nothing left to hand over
    with psycopg.connect(**server, dbname="postgres", autocommit=True) as conn:
        for role in existing:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def corpus_globals_sql(server, corpus):
    """The corpus roles as pg_dumpall --globals-only --no-role-passwords
    writes them (attributes, memberships, settings, comments), for making
    them on another cluster before restoring there."""
    out = subprocess.run(
        ["pg_dumpall", "--globals-only", "--no-role-passwords", "--no-tablespaces"],
        env={**os.environ, **libpq_env(server)},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return "\n".join(line for line in out.splitlines() if corpus.role_prefix in line) + "\n"

"""A corpus of realistic, awkward PostgreSQL schemas owned by the tests, and
exact before/after comparisons, for proving every restore mode (issue 19,
"Restores that come back exact").

API
---
create_corpus(conninfo, size="small", role_prefix=None) -> Corpus
    Fills an existing empty database (psycopg keywords, a superuser) and
    makes three NOLOGIN roles <prefix>owner/reader/writer (prefix
    "corpus_<8 hex>_" by default, so parallel runs on one server do not
    collide). Sizes: tiny, small (600 customers: about 3,600 order lines and
    3,000 readings), medium, large (SIZES in build.py). Takes about a second
    at "small". Deterministic: two corpora of one size hold the same rows.
Corpus
    conninfo, size, role_prefix, roles {"owner"|"reader"|"writer": name};
    tables (Strongroom's names: unquoted schema and table joined by a dot,
    "Sales.OrderLine", "Sales.Gift Card", "public.tag"; partitioned and
    inheritance parents included); partitions {parent: direct partitions}
    and leaf_partitions(parent); inheritance_children {parent: children};
    primary_keys {table: [(column, type)]} and tables_keyed_by(type), e.g.
    "timestamp with time zone", "bytea", "numeric", "boolean", "interval";
    row_counts {table: rows in it alone}; sequences; materialized_views;
    large_object_columns ["inventory.product_manual.manual", ...];
    skipped (parts this server could not have; empty here).
drop_corpus_roles(server, corpus)
    REASSIGN OWNED + DROP OWNED in every database that depends on the roles
    (found through pg_shdepend), then DROP ROLE. Drop test databases first
    when you can; it copes either way.
corpus_globals_sql(server, corpus) -> str
    The roles as `pg_dumpall --globals-only --no-role-passwords` writes
    them, filtered to the corpus: run it on another cluster before
    restoring there. (Its GRANT ... GRANTED BY names the source's bootstrap
    superuser, "postgres" here and in pg.Cluster.)
snapshot(conninfo) -> dict
    Taken as a superuser (RLS would hide rows otherwise). Sections:
    "schema": pg_dump --schema-only lines with owners and ACLs, without
    \\restrict/\\unrestrict, the "Dumped from/by" versions, and with the
    database's own name replaced by <database>; "database": owner,
    encoding, collation, locale provider, connection limit, privileges
    (datacl items sorted, None = default), comment, settings (from
    pg_db_role_setting, "every role: work_mem=12MB" or "<role>: ..."),
    "roles": attributes, role-wide settings, comment and memberships of the
    roles the database depends on (the bootstrap superuser left out);
    "tables" and "materialized views": {name: {ROW(primary key)::text:
    row text}} or, without a primary key, the sorted row texts; every
    relation with storage is read FROM ONLY, so each partition and each
    inheritance child is compared on its own; "sequences": {name:
    (last_value, is_called)}; "large objects": {label: size, md5, owner,
    privileges, comment}, labelled by the rows that reference the object
    ("inventory.product_manual.manual at (120)") or by content when none
    does. Columns holding large-object oids show the object's md5 in the
    row text, so a restore may give large objects new oids. Output settings
    are fixed (UTC, ISO dates, hex bytea, extra_float_digits 1,
    lc_monetary C). The whole of "small" takes about 0.4 s.
diff(before, after) -> list[str]
    Readable differences, [] when identical: "schema: -GRANT ...",
    "database owner: 'a' before, 'b' after", "sequence X: ...",
    "table Sales.OrderLine: row missing after: (...)", "... row only after:
    ...", "... row (4,1) changed: ... before, ... after" (ten per kind per
    table, then a count). Compare parts by blanking a section in both.
row_changes(before, after) -> {table: TableChanges}
    Keys deleted / updated / inserted per table between two snapshots.
damage(conninfo, harms=HARMS) -> {table: TableChanges}
    Deletes, updates and inserts rows in 13 tables (keys of timestamptz
    with ±infinity, bytea with NUL bytes and the empty bytea, numeric NaN
    and 1.50, boolean, interval, odd text, text + date, uuid, a composite
    FK child with a generated column, identity ALWAYS, two partitioned
    tables through their parents) and reports what RETURNING said, keyed as
    in snapshots; partitioned tables are reported per partition. No
    cascade, sequence or other table is touched, so
    row_changes(before, after) == damage(...) (test_corpus checks it).

What is in it
-------------
Schemas public, "Sales" (mixed case, owned by the owner role), inventory
(owner), audit, metrics, extensions (pg_trgm). Partitioning by RANGE on
timestamptz (key in the primary key) with a HASH sub-partitioned year, a
DEFAULT partition, an attached table with its own CHECK, indexes on the
parent; LIST partitioning with a DEFAULT; INHERITS parent with rows of its
own and two children. FK chain customer -> "Order" -> "OrderLine" ->
shipment (composite FK), a cycle team <-> employee (one side DEFERRABLE
INITIALLY DEFERRED), self-references, ON DELETE CASCADE / SET NULL, ON
UPDATE CASCADE, an FK to a partitioned table, an exclusion constraint, a
NOT VALID check that an old row breaks. Generated STORED columns (one via
a SQL function, one tsvector), identity ALWAYS and BY DEFAULT (with START
and INCREMENT), serial/bigserial, standalone sequences (increment 7 with
CYCLE, increment -3 with is_called false). Domains with CHECK, an enum
with labels added out of order, composite types, tstzrange, int4range,
numrange, daterange, a custom float range, int4multirange, arrays
(multi-dimensional, of composites, with NULLs and quotes), json with
duplicate keys, jsonb, bytea with NUL bytes, text with tabs, CR LF,
backslashes, quotes, \\N and \\., emoji, RTL and combining characters,
NULL beside '', ±infinity dates and timestamps, BC dates, NaN and
±Infinity in numeric, real and double, -0, denormals, interval extremes,
uuid, inet/cidr/macaddr/macaddr8, money, bit/varbit, timetz, xml,
tsvector/tsquery, point, pg_lsn, char padding. Primary keys of timestamptz,
boolean, bytea, interval, numeric, uuid, double precision, citext, text +
date and odd text. 15 large objects (NUL bytes, an empty one, one shared by
two rows, one unreferenced) with owners, grants and comments. A
materialized view WITH DATA with a unique index, plain views, a
security_barrier view, a CHECK OPTION view. plpgsql and SQL functions
(BEGIN ATOMIC, SECURITY DEFINER with SET search_path), a procedure,
triggers (one rewrites updated_at, created after the data). RLS with
policies on "Order", ENABLE + FORCE on tenant_note. An ICU collation with
numeric ordering on two columns. citext and pg_trgm (GIN trigram index).
Comments on schemas, tables, columns, functions, types, a sequence, a
policy, a trigger, large objects, the database and a role. Owners other
than the connecting user, role membership with ADMIN OPTION, table and
column GRANTs to several roles, ALTER DEFAULT PRIVILEGES (with and without
IN SCHEMA), REVOKE CONNECT/TEMP ON DATABASE FROM PUBLIC with grants to the
roles (one WITH GRANT OPTION), ALTER DATABASE ... SET (work_mem,
search_path, a custom setting), ALTER ROLE ... IN DATABASE ... SET, ALTER
ROLE ... SET, an UNLOGGED table, fillfactor, SET STORAGE, SET STATISTICS,
CLUSTER ON, REPLICA IDENTITY FULL.

What pg_dump -Fc / pg_restore keep (measured by test_corpus.py)
----------------------------------------------------------------
Restored into a fresh database on the same server (plain pg_restore, no
--no-owner/--no-privileges, roles present), everything in the database
comes back exactly -- schema, owners, grants, default privileges, RLS,
every row, sequences, large objects, the materialized view -- except the
properties of the database itself, which pg_dump writes only for
--create: its owner, its ACL (the REVOKE FROM PUBLIC and the GRANTs), its
comment, ALTER DATABASE ... SET and ALTER ROLE ... IN DATABASE ... SET.
`pg_restore --create` cannot be used for a database of another name (it
creates the archived name), so a restore under a new name must replay
those statements itself: they are the lines of `pg_restore --create -f -`
that start ALTER DATABASE, COMMENT ON DATABASE, GRANT/REVOKE ... ON
DATABASE and ALTER ROLE ... IN DATABASE, with the name swapped; after
that, the diff is empty. Roles are never in a pg_dump archive: on another
cluster they must exist first (corpus_globals_sql), and then
`pg_restore --create` gives an empty diff.

Traps for data-level restores (merge, single table), all in the corpus:
triggers must be off (price_list rewrites updated_at on insert; "Order"
logs status updates to audit.order_history), identity ALWAYS needs
OVERRIDING SYSTEM VALUE, generated columns cannot be inserted, the NOT VALID check on "Order"
rejects re-inserting order 3, FORCE ROW LEVEL SECURITY hides tenant_note
from its owner, keys equal but not identical in text (numeric 1.50 = 1.5,
interval '1 mon' = '30 days', citext case), NaN keys, rows that must go
to the same partition, the team/employee cycle needs deferred checks, and
large-object oids in rows must follow their objects.
"""

from tests.corpus.build import Corpus, corpus_globals_sql, create_corpus, drop_corpus_roles
from tests.corpus.compare import TableChanges, diff, row_changes, snapshot
from tests.corpus.damage import damage

__all__ = [
    "Corpus",
    "TableChanges",
    "corpus_globals_sql",
    "create_corpus",
    "damage",
    "diff",
    "drop_corpus_roles",
    "row_changes",
    "snapshot",
]

"""Restore mechanics, free of Django: database checks, table comparison by
primary key, merging missing rows and replacing tables in one transaction.

Every restore first lands in a scratch database (restorers.ScratchDatabase);
the target is only touched afterwards, inside a single transaction or by a
rename, so it is never left half-restored.
"""

import time

from psycopg import sql

from catalog.engine.dumpers import connect_server, major_version
from catalog.engine.errors import EngineError


class Refusal(EngineError):
    """A restore that must not start; the message says why."""


def server_version(params):
    with connect_server(params) as conn:
        return conn.execute("SHOW server_version").fetchone()[0]


def check_server_not_older(params, dump_server_version):
    target = server_version(params)
    if major_version(target) < major_version(dump_server_version):
        raise Refusal(
            f"The target server runs PostgreSQL {target}, older than the {dump_server_version} "
            "the backup was taken from; restore to a server of that version or newer"
        )
    return target


def active_connections(params, dbname):
    with connect_server(params) as conn:
        rows = conn.execute(
            "SELECT coalesce(usename, '?'), coalesce(client_addr::text, 'local'), coalesce(application_name, '') "
            "FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [dbname],
        ).fetchall()
    return [f"{user}@{client}" + (f" ({app})" if app else "") for user, client, app in rows]


def rename_database(params, old, new):
    with connect_server(params) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))


def swap_databases(params, current, replacement, kept):
    """`current` becomes `kept` and `replacement` becomes `current`, with the
    owner, privileges and settings `current` had, in one transaction: whatever
    stops it midway (a crash, a lost connection, a killed worker), both names
    change or neither does, and no one sees the new database unconfigured."""
    with connect_server(params) as conn, conn.transaction():
        conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(current), sql.Identifier(kept)))
        conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(replacement), sql.Identifier(current)))
        copy_database_properties(conn, kept, current)


def allow_connections(params, dbname, allowed):
    """Opens or closes a database to new sessions (sessions already in stay)."""
    with connect_server(params) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
            sql.Identifier(dbname), sql.SQL("true" if allowed else "false")))


def terminate_connections(params, dbname, wait_seconds=10):
    """Ends every other session on `dbname` and waits until they are gone;
    returns those still there after `wait_seconds` (a backend busy in a
    system call can take a moment to go)."""
    deadline = time.monotonic() + wait_seconds
    with connect_server(params) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                     [dbname])
    while (others := active_connections(params, dbname)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return others


# Settings whose value is a list: pg_db_role_setting keeps "a, b", which must
# be given back as separate items, or it would become one name "a, b".
LIST_SETTINGS = {"search_path", "temp_tablespaces", "session_preload_libraries", "local_preload_libraries",
                 "shared_preload_libraries"}


def unquote(item):
    """One item of a list setting as stored: '"$user"' → '$user'."""
    if len(item) >= 2 and item[0] == item[-1] == '"':
        return item[1:-1].replace('""', '"')
    return item


def copy_database_properties(conn, source_db, target_db):
    """Gives `target_db` the owner, privileges, connection limit and
    per-database settings of `source_db`, so that a database replaced by a
    restore is still owned, reachable and configured as it was."""
    owner, limit, acl_set = conn.execute(
        "SELECT pg_get_userbyid(datdba), datconnlimit, datacl IS NOT NULL FROM pg_database WHERE datname = %s",
        [source_db]).fetchone()
    target = sql.Identifier(target_db)
    conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(target, sql.Identifier(owner)))
    conn.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(target, sql.Literal(limit)))
    if acl_set:
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(target))
        grants = conn.execute(
            """SELECT coalesce(pg_get_userbyid(nullif(a.grantee, 0)), ''), a.privilege_type, a.is_grantable
               FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = %s""", [source_db]).fetchall()
        for grantee, privilege, grantable in grants:
            conn.execute(sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                sql.SQL(privilege), target, sql.Identifier(grantee) if grantee else sql.SQL("PUBLIC"),
                sql.SQL(" WITH GRANT OPTION" if grantable else "")))
    settings = conn.execute(
        """SELECT coalesce(pg_get_userbyid(nullif(s.setrole, 0)), ''), s.setconfig FROM pg_db_role_setting s
           JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = %s""", [source_db]).fetchall()
    for role, entries in settings:
        for entry in entries:
            name, _, value = entry.partition("=")
            values = [unquote(v.strip()) for v in value.split(",")] if name in LIST_SETTINGS else [value]
            prefix = (sql.SQL("ALTER ROLE {} IN DATABASE {}").format(sql.Identifier(role), target) if role
                      else sql.SQL("ALTER DATABASE {}").format(target))
            conn.execute(sql.SQL("{} SET {} TO {}").format(
                prefix, sql.Identifier(name), sql.SQL(", ").join(sql.Literal(v) for v in values)))


def split_name(table):
    schema, _, name = table.partition(".")
    return (schema, name) if name else ("public", schema)


def ident(table):
    return sql.Identifier(*split_name(table))


def primary_key(conn, table):
    rows = conn.execute(
        """SELECT a.attname FROM pg_index i
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
           WHERE i.indrelid = %s::regclass AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)""",
        [sql.Identifier(*split_name(table)).as_string(conn)],
    ).fetchall()
    return [name for (name,) in rows]


def row_digests(conn, table, key):
    """{primary key tuple: md5 of the row's text} for a whole table."""
    query = sql.SQL("SELECT {}, md5(t::text) FROM {} AS t").format(sql.SQL(", ").join(map(sql.Identifier, key)), ident(table))
    return {tuple(row[:-1]): row[-1] for row in conn.execute(query)}


def count_rows(conn, table):
    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident(table))).fetchone()[0]


def table_exists(conn, table):
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", [sql.Identifier(*split_name(table)).as_string(conn)]).fetchone()[0]


def compare_table(backup_conn, target_conn, table):
    """What differs between the backup's and the target's copy of a table."""
    report = {"table": table, "in_backup": count_rows(backup_conn, table)}
    if not table_exists(target_conn, table):
        report.update(in_target=0, missing_in_target=True, only_in_backup=report["in_backup"])
        return report
    report["in_target"] = count_rows(target_conn, table)
    key = primary_key(backup_conn, table)
    if not key:
        report["note"] = "no primary key: counts only"
        return report
    ours, theirs = row_digests(backup_conn, table, key), row_digests(target_conn, table, key)
    report.update(
        key=key,
        only_in_backup=sum(1 for k in ours if k not in theirs),
        only_in_target=sum(1 for k in theirs if k not in ours),
        differ=sum(1 for k, digest in ours.items() if k in theirs and theirs[k] != digest),
    )
    return report


def copy_rows(source_conn, target_conn, select, target_table, columns):
    """Streams rows from one database into another with COPY, chunk by chunk."""
    column_list = sql.SQL(", ").join(map(sql.Identifier, columns))
    copy_out = sql.SQL("COPY ({}) TO STDOUT").format(select)
    copy_in = sql.SQL("COPY {} ({}) FROM STDIN").format(ident(target_table), column_list)
    with source_conn.cursor().copy(copy_out) as reader, target_conn.cursor().copy(copy_in) as writer:
        for data in reader:
            writer.write(data)


def columns_of(conn, table):
    rows = conn.execute(
        """SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped
           AND attgenerated = '' ORDER BY attnum""",
        [sql.Identifier(*split_name(table)).as_string(conn)],
    ).fetchall()
    return [name for (name,) in rows]


def replace_tables(backup_conn, target_conn, tables):
    """In one transaction of the target: empty the tables and fill them from
    the backup. Returns rows written per table."""
    written = {}
    with target_conn.transaction():
        target_conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(ident(t) for t in tables)))
        for table in tables:
            columns = columns_of(backup_conn, table)
            select = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(map(sql.Identifier, columns)), ident(table))
            copy_rows(backup_conn, target_conn, select, table, columns)
            written[table] = count_rows(target_conn, table)
        sync_sequences(backup_conn, target_conn, tables)
    return written


def merge_tables(backup_conn, target_conn, tables):
    """In one transaction of the target: insert the backup's rows whose primary
    key the target lacks; rows the target has are kept as they are."""
    inserted = {}
    with target_conn.transaction():
        for table in tables:
            key = primary_key(backup_conn, table)
            if not key:
                raise Refusal(f"{table} has no primary key, so rows cannot be matched for a merge")
            theirs = {tuple(row) for row in target_conn.execute(
                sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(map(sql.Identifier, key)), ident(table)))}
            missing = [k for k in row_digests(backup_conn, table, key) if k not in theirs]
            inserted[table] = len(missing)
            if not missing:
                continue
            backup_conn.execute("CREATE TEMP TABLE IF NOT EXISTS strongroom_merge_keys (k text[])")
            backup_conn.execute("TRUNCATE strongroom_merge_keys")
            with backup_conn.cursor().copy("COPY strongroom_merge_keys (k) FROM STDIN") as copy:
                for k in missing:
                    copy.write_row([[str(part) for part in k]])
            columns = columns_of(backup_conn, table)
            key_text = sql.SQL("ARRAY[{}]::text[]").format(sql.SQL(", ").join(sql.SQL("t.{}::text").format(sql.Identifier(c)) for c in key))
            select = sql.SQL("SELECT {} FROM {} AS t WHERE {} IN (SELECT k FROM strongroom_merge_keys)").format(
                sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in columns), ident(table), key_text
            )
            copy_rows(backup_conn, target_conn, select, table, columns)
        sync_sequences(backup_conn, target_conn, tables, only_forward=True)
    return inserted


def sync_sequences(backup_conn, target_conn, tables, only_forward=False):
    """Sets the sequences owned by the tables to the backup's values (or, when
    merging, to whichever is further), so new rows do not collide."""
    for table in tables:
        owned = backup_conn.execute(
            """SELECT s.relname, n.nspname FROM pg_depend d
               JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
               JOIN pg_namespace n ON n.oid = s.relnamespace
               WHERE d.refobjid = %s::regclass AND d.deptype IN ('a', 'i')""",
            [sql.Identifier(*split_name(table)).as_string(backup_conn)],
        ).fetchall()
        for name, schema in owned:
            seq = sql.Identifier(schema, name)
            last, called = backup_conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(seq)).fetchone()
            if only_forward:
                current = target_conn.execute(sql.SQL("SELECT last_value FROM {}").format(seq)).fetchone()[0]
                if current >= last:
                    continue
            target_conn.execute("SELECT setval(%s::regclass, %s, %s)", [seq.as_string(target_conn), last, called])

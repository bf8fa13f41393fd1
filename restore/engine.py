"""Server-level restore mechanics, free of Django: version checks, sessions,
and swapping whole databases. Everything here connects to the server's
maintenance database, never to the database it is about, which may be gone
or must have no session open to be renamed. Table-level work is in
restore/tables.py.

Every restore first lands in a scratch database (restorers.ScratchDatabase);
the target is only touched afterwards, inside a single transaction, so it is
never left half-restored.
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

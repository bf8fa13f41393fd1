"""SQL against the server a restore goes to, free of Django: version
checks, sessions, and renaming and swapping whole databases. Everything here
connects to the server's maintenance database, never to the database it is
about, which may be gone or must have no session open to be renamed.
Table-level work is in restore/tables.py.

Every restore first lands in a scratch database (restorers.ScratchDatabase);
the target is only touched afterwards, inside a single transaction, so it is
never left half-restored.
"""

import time
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql

from catalog.engine import pgglobals
from catalog.engine.dumpers import connect_server, major_version
from catalog.errors import Refused


def server_version(params: Mapping[str, Any]) -> str:
    with connect_server(params) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    assert row is not None  # SHOW always returns its one row
    return row[0]


def check_server_not_older(params: Mapping[str, Any], dump_server_version: str) -> str:
    target = server_version(params)
    if major_version(target) < major_version(dump_server_version):
        raise Refused(
            f"The target server runs PostgreSQL {target}, older than the {dump_server_version} "
            "the backup was taken from; restore to a server of that version or newer"
        )
    return target


def active_connections(params: Mapping[str, Any], dbname: str) -> list[str]:
    with connect_server(params) as conn:
        rows = conn.execute(
            "SELECT coalesce(usename, '?'), coalesce(client_addr::text, 'local'), coalesce(application_name, '') "
            "FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [dbname],
        ).fetchall()
    return [f"{user}@{client}" + (f" ({app})" if app else "") for user, client, app in rows]


def rename_database(
    params: Mapping[str, Any],
    old: str,
    new: str,
    properties: pgglobals.Properties | None = None,
    with_owners: bool = True,
) -> list[str]:
    """Renames `old` to `new`, giving it the backup's recorded database
    properties (pgglobals) in the same transaction: the new database appears
    configured, or not at all. Returns what was applied, in words."""
    with connect_server(params) as conn, conn.transaction():
        conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))
        if properties:
            return pgglobals.apply_database_properties(conn, new, properties, with_owners)
    return []


def swap_databases(params: Mapping[str, Any], current: str, replacement: str, kept: str) -> None:
    """`current` becomes `kept` and `replacement` becomes `current`, with the
    owner, privileges and settings `current` had, in one transaction: whatever
    stops it midway (a crash, a lost connection, a killed worker), both names
    change or neither does, and no one sees the new database unconfigured."""
    with connect_server(params) as conn, conn.transaction():
        conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(current), sql.Identifier(kept)))
        conn.execute(
            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(replacement), sql.Identifier(current))
        )
        copy_database_properties(conn, kept, current)


def allow_connections(params: Mapping[str, Any], dbname: str, allowed: bool) -> None:
    """Opens or closes a database to new sessions (sessions already in stay)."""
    with connect_server(params) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
                sql.Identifier(dbname), sql.SQL("true" if allowed else "false")
            )
        )


def terminate_connections(params: Mapping[str, Any], dbname: str, wait_seconds: float = 10) -> list[str]:
    """Ends every other session on `dbname` and waits until they are gone;
    returns those still there after `wait_seconds` (a backend busy in a
    system call can take a moment to go)."""
    deadline = time.monotonic() + wait_seconds
    with connect_server(params) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [dbname],
        )
    while (others := active_connections(params, dbname)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return others


def copy_database_properties(conn: psycopg.Connection[Any], source_db: str, target_db: str) -> None:
    """Gives `target_db` the owner, privileges, connection limit, settings and
    comment of `source_db`, so that a database replaced by a restore is still
    owned, reachable and configured as it was."""
    pgglobals.apply_database_properties(conn, target_db, pgglobals.database_properties(conn, source_db))

"""What a PostgreSQL database needs from outside itself: its roles, and its
own properties (owner, grants, settings, encoding and locale).

pg_dump keeps neither: roles are the cluster's, and a database's properties
come back only into a database of the same name. A backup captures them here,
in the same snapshot as the dump, into a small "globals" document that is
stored encrypted beside the dump:

- `roles`: every role the database names (object owners, grantees, policy
  roles, role settings, the database's owner and grants) with the roles
  they belong to and those that belong to them, each with its attributes,
  memberships and settings. Built-in `pg_*` roles exist on every server.
- `database`: the database's owner, connection limit, grants, comment,
  settings (ALTER DATABASE / ALTER ROLE … IN DATABASE … SET), encoding and
  locale.
- `globals_sql`: `pg_dumpall --globals-only --no-role-passwords`, the
  cluster's globals as PostgreSQL writes them, for a DBA to read or replay by
  hand (absent when the backup role may not run it).

A restore creates the roles a target server lacks from `roles` (never with a
password, never as superuser, replication or bypassrls) and gives a new
database the recorded properties. No Django here.
"""

from collections.abc import Collection, Iterable
from typing import Any

import psycopg
from psycopg import sql

FORMAT = "strongroom-globals/1"

# Roles whose grants or ownership the database records: pg_shdepend has an
# entry for each object owner (except the bootstrap superuser, which is
# pinned), each grantee of a privilege, each role a policy names. The
# database's own owner and grants are entries with dbid 0.
ROLES_NAMED = """
WITH RECURSIVE db AS (SELECT oid FROM pg_database WHERE datname = current_database()),
named AS (
  SELECT refobjid AS oid FROM pg_shdepend, db
  WHERE refclassid = 'pg_authid'::regclass
    AND (dbid = db.oid OR (dbid = 0 AND classid = 'pg_database'::regclass AND objid = db.oid))
  UNION SELECT datdba FROM pg_database, db WHERE pg_database.oid = db.oid
  UNION SELECT setrole FROM pg_db_role_setting, db WHERE setdatabase = db.oid AND setrole <> 0
  UNION SELECT 10  -- the bootstrap superuser: owns what nobody else does, and is never in pg_shdepend
),
up(oid) AS (SELECT oid FROM named UNION SELECT m.roleid FROM pg_auth_members m JOIN up ON m.member = up.oid),
down(oid) AS (SELECT oid FROM named UNION SELECT m.member FROM pg_auth_members m JOIN down ON m.roleid = down.oid)
SELECT r.rolname, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin, r.rolreplication,
       r.rolbypassrls, r.rolconnlimit, r.rolvaliduntil::text, shobj_description(r.oid, 'pg_authid'),
       coalesce((SELECT s.setconfig FROM pg_db_role_setting s WHERE s.setrole = r.oid AND s.setdatabase = 0), '{}')
FROM pg_roles r WHERE r.oid IN (SELECT oid FROM up UNION SELECT oid FROM down) AND r.rolname NOT LIKE 'pg\\_%'
ORDER BY r.rolname
"""

MEMBERSHIPS = """
SELECT g.rolname, m.rolname, am.admin_option FROM pg_auth_members am
JOIN pg_roles g ON g.oid = am.roleid JOIN pg_roles m ON m.oid = am.member
WHERE m.rolname = ANY(%s) AND g.rolname = ANY(%s) ORDER BY 1, 2
"""

ATTRIBUTES = ("superuser", "inherit", "createrole", "createdb", "login", "replication", "bypassrls")
# What a restore never grants by itself: the DBA does, knowingly.
WITHHELD = {"superuser": "SUPERUSER", "replication": "REPLICATION", "bypassrls": "BYPASSRLS"}
GRANTED = {
    "inherit": ("INHERIT", "NOINHERIT"),
    "createrole": ("CREATEROLE", "NOCREATEROLE"),
    "createdb": ("CREATEDB", "NOCREATEDB"),
    "login": ("LOGIN", "NOLOGIN"),
}

# Settings whose value is a list: pg_db_role_setting keeps "a, b", which must
# be given back as separate items, or it would become one name "a, b".
LIST_SETTINGS = {
    "search_path",
    "temp_tablespaces",
    "session_preload_libraries",
    "local_preload_libraries",
    "shared_preload_libraries",
}


# The globals document is JSON kept beside the backup (see the module's
# docstring): a role, and the database's properties, are JSON objects.
Role = dict[str, Any]
Properties = dict[str, Any]


class GlobalsError(Exception):
    """The globals could not be read or applied; the message is in words."""


def capture(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The roles and properties of the database `conn` is connected to (in
    the dump's snapshot); dumpers adds pg_dumpall's globals_sql."""
    return {
        "format": FORMAT,
        "roles": needed_roles(conn),
        "database": database_properties(conn, current_database(conn)),
    }


def current_database(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT current_database()").fetchone()
    assert row is not None, "current_database() returns a row"
    name: str = row[0]
    return name


def needed_roles(conn: psycopg.Connection[Any]) -> list[Role]:
    roles: list[Role] = []
    for row in conn.execute(ROLES_NAMED).fetchall():
        name, *flags = row[:8]
        roles.append(
            {
                "name": name,
                **dict(zip(ATTRIBUTES, flags, strict=True)),
                "connection_limit": row[8],
                "valid_until": row[9],
                "comment": row[10],
                "settings": list(row[11]),
                "member_of": [],
            }
        )
    names = [role["name"] for role in roles]
    by_name = {role["name"]: role for role in roles}
    for group, member, admin in conn.execute(MEMBERSHIPS, [names, names]).fetchall():
        by_name[member]["member_of"].append({"role": group, "admin_option": admin})
    return roles


def database_properties(conn: psycopg.Connection[Any], dbname: str) -> Properties:
    """The properties of `dbname` that live outside it (any connection to the server)."""
    row = conn.execute(
        """SELECT pg_get_userbyid(d.datdba), d.datconnlimit, d.datacl IS NOT NULL, pg_encoding_to_char(d.encoding),
                  d.datcollate, d.datctype, shobj_description(d.oid, 'pg_database'), d.oid
           FROM pg_database d WHERE d.datname = %s""",
        [dbname],
    ).fetchone()
    if row is None:
        raise GlobalsError(f"Database {dbname} does not exist")
    owner, limit, acl_set, encoding, collate, ctype, comment, oid = row
    grants = None
    if acl_set:
        grants = [
            list(grant)
            for grant in conn.execute(
                """SELECT coalesce(pg_get_userbyid(nullif(a.grantee, 0)), ''), a.privilege_type, a.is_grantable
               FROM pg_database d, aclexplode(d.datacl) a WHERE d.oid = %s ORDER BY 1, 2""",
                [oid],
            ).fetchall()
        ]
    settings = [
        [role, list(entries)]
        for role, entries in conn.execute(
            """SELECT coalesce(pg_get_userbyid(nullif(setrole, 0)), ''), setconfig FROM pg_db_role_setting
           WHERE setdatabase = %s ORDER BY 1""",
            [oid],
        ).fetchall()
    ]
    return {
        "owner": owner,
        "connection_limit": limit,
        "grants": grants,
        "settings": settings,
        "comment": comment,
        "encoding": encoding,
        "collate": collate,
        "ctype": ctype,
        **locale_provider(conn, oid),
    }


def locale_provider(conn: psycopg.Connection[Any], oid: int) -> dict[str, str]:
    """PostgreSQL 15 added ICU as a database's locale provider (17 renamed the column)."""
    columns = {
        name
        for (name,) in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'pg_database'::regclass AND attnum > 0"
        )
    }
    if "datlocprovider" not in columns:
        return {}
    locale_column = "datlocale" if "datlocale" in columns else "daticulocale"
    row = conn.execute(
        sql.SQL("SELECT datlocprovider, {} FROM pg_database WHERE oid = %s").format(sql.Identifier(locale_column)),
        [oid],
    ).fetchone()
    assert row is not None, "the database was found by its oid"
    provider, locale = row
    return {"locale_provider": {"c": "libc", "i": "icu", "b": "builtin"}.get(provider, provider), "locale": locale}


# --- on the target ------------------------------------------------------------


def existing_roles(conn: psycopg.Connection[Any], names: Iterable[str]) -> set[str]:
    return {name for (name,) in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", [list(names)])}


def missing_roles(conn: psycopg.Connection[Any], names: Iterable[str]) -> list[str]:
    return sorted(set(names) - existing_roles(conn, names))


def create_roles(conn: psycopg.Connection[Any], roles: list[Role], names: Collection[str]) -> list[str]:
    """Creates the roles `names` from the document's `roles`, then their
    memberships among the roles the server has. Returns notes in words for
    what was held back. Run inside a transaction: all or none."""
    wanted = [role for role in roles if role["name"] in set(names)]
    notes = []
    for role in wanted:
        options: list[str | sql.Composable] = [GRANTED[attr][0 if role.get(attr) else 1] for attr in GRANTED]
        if role.get("connection_limit", -1) != -1:
            options.append(sql.SQL("CONNECTION LIMIT {}").format(sql.Literal(role["connection_limit"])))
        if role.get("valid_until"):
            options.append(sql.SQL("VALID UNTIL {}").format(sql.Literal(role["valid_until"])))
        conn.execute(
            sql.SQL("CREATE ROLE {} WITH {}").format(
                sql.Identifier(role["name"]),
                sql.SQL(" ").join(sql.SQL(o) if isinstance(o, str) else o for o in options),
            )
        )
        held = [WITHHELD[attr] for attr in WITHHELD if role.get(attr)]
        if held:
            notes.append(f"{role['name']} was {', '.join(held)} on the source; created without it")
        if role.get("login"):
            notes.append(f"{role['name']} can log in but has no password yet")
        if role.get("comment"):
            conn.execute(
                sql.SQL("COMMENT ON ROLE {} IS {}").format(sql.Identifier(role["name"]), sql.Literal(role["comment"]))
            )
        for entry in role.get("settings", []):
            conn.execute(sql.SQL("ALTER ROLE {} SET {}").format(sql.Identifier(role["name"]), setting_sql(entry)))
    present = existing_roles(conn, [role["name"] for role in roles])
    for role in wanted:
        for membership in role.get("member_of", []):
            if membership["role"] in present:
                conn.execute(
                    sql.SQL("GRANT {} TO {}{}").format(
                        sql.Identifier(membership["role"]),
                        sql.Identifier(role["name"]),
                        sql.SQL(" WITH ADMIN OPTION" if membership.get("admin_option") else ""),
                    )
                )
    # Members created now of roles that existed already, and existing members of roles created now.
    for role in roles:
        if role["name"] in set(names) or role["name"] not in present:
            continue
        for membership in role.get("member_of", []):
            if membership["role"] in set(names):
                conn.execute(
                    sql.SQL("GRANT {} TO {}").format(sql.Identifier(membership["role"]), sql.Identifier(role["name"]))
                )
    return notes


def drop_roles(conn: psycopg.Connection[Any], names: Iterable[str]) -> list[str]:
    """Removes roles a failed restore created (they own nothing by then);
    returns those that could not go, in words."""
    kept = []
    for name in names:
        try:
            with conn.transaction():
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
        except Exception as exc:  # noqa: BLE001 — a role still in use stays, said as it is
            kept.append(f"{name} ({str(exc).strip().splitlines()[0]})")
    return kept


def unquote(item: str) -> str:
    """One item of a list setting as stored: '"$user"' → '$user'."""
    if len(item) >= 2 and item[0] == item[-1] == '"':
        return item[1:-1].replace('""', '"')
    return item


def setting_sql(entry: str) -> sql.Composed:
    """`name TO value` for one "name=value" entry of a setconfig array."""
    name, _, value = entry.partition("=")
    values = [unquote(v.strip()) for v in value.split(",")] if name in LIST_SETTINGS else [value]
    return sql.SQL("{} TO {}").format(sql.Identifier(name), sql.SQL(", ").join(sql.Literal(v) for v in values))


def apply_database_properties(
    conn: psycopg.Connection[Any], dbname: str, properties: Properties, with_owners: bool = True
) -> list[str]:
    """Gives `dbname` the recorded properties: settings and comment always;
    owner, grants and role-specific settings when owners are kept (they name
    roles). Returns what was applied, in words."""
    target = sql.Identifier(dbname)
    done = []
    if with_owners:
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(target, sql.Identifier(properties["owner"])))
        done.append(f"owner {properties['owner']}")
    conn.execute(
        sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(
            target, sql.Literal(properties.get("connection_limit", -1))
        )
    )
    if with_owners and properties.get("grants") is not None:
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(target))
        for grantee, privilege, grantable in properties["grants"]:
            conn.execute(
                sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                    sql.SQL(privilege),
                    target,
                    sql.Identifier(grantee) if grantee else sql.SQL("PUBLIC"),
                    sql.SQL(" WITH GRANT OPTION" if grantable else ""),
                )
            )
        done.append(f"{len(properties['grants'])} grants")
    applied = 0
    for role, entries in properties.get("settings", []):
        if role and not with_owners:
            continue
        prefix = (
            sql.SQL("ALTER ROLE {} IN DATABASE {}").format(sql.Identifier(role), target)
            if role
            else sql.SQL("ALTER DATABASE {}").format(target)
        )
        for entry in entries:
            conn.execute(sql.SQL("{} SET {}").format(prefix, setting_sql(entry)))
            applied += 1
    if applied:
        done.append(f"{applied} settings")
    if properties.get("comment"):
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(target, sql.Literal(properties["comment"])))
        done.append("its comment")
    return done


def create_database_options(properties: Properties | None) -> sql.Composable:
    """CREATE DATABASE options that give a new database the recorded
    encoding and locale (from template0, the only template that allows
    another encoding); empty when nothing was recorded."""
    if not properties or not properties.get("encoding"):
        return sql.SQL("")
    options = [
        sql.SQL("TEMPLATE template0 ENCODING {}").format(sql.Literal(properties["encoding"])),
        sql.SQL("LC_COLLATE {} LC_CTYPE {}").format(
            sql.Literal(properties["collate"]), sql.Literal(properties["ctype"])
        ),
    ]
    if properties.get("locale_provider") == "icu" and properties.get("locale"):
        options.append(sql.SQL("LOCALE_PROVIDER icu ICU_LOCALE {}").format(sql.Literal(properties["locale"])))
    return sql.SQL(" ").join([sql.SQL(" WITH"), *options])

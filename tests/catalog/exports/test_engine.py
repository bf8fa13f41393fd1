"""Selective exports (catalog.engine.exports) against a real PostgreSQL: every
awkward type round-trips through each format into a new database, row filters,
one snapshot, damage and refusals, cancel."""

import io
import json
import os
import tarfile
import threading
import uuid

import psycopg
import pytest

from catalog.engine.errors import Cancelled, CorruptionError, EngineError, SourceError
from catalog.engine.exports import (
    EXPORT_FORMATS,
    MANIFEST_MEMBER,
    ExportDump,
    TableSpec,
    list_tables,
    load_export,
    load_export_sqlite,
    match_tables,
    validate_where,
)
from tests.harness import pg

SOURCE_SCHEMA = r"""
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE everything (
    id integer PRIMARY KEY,
    photo bytea,
    doc jsonb,
    raw json,
    numbers integer[],
    words text[],
    amount numeric(30, 9),
    free_number numeric,
    at timestamp with time zone,
    local_at timestamp without time zone,
    day date,
    flag boolean,
    note text,
    uid uuid,
    feeling mood,
    ratio double precision,
    span interval
);
CREATE SCHEMA "Audit";
CREATE TABLE "Audit"."LogEntry" ("Id" bigint, "Seq" integer, "Message" text, PRIMARY KEY ("Id", "Seq"));
"""

SOURCE_ROWS = r"""
INSERT INTO everything VALUES
  (1, '\x00ff10'::bytea, '{"size": [1, 2], "nested": {"ok": true}, "s": "a\nb"}', E'{"a":\n  [1, 2],\t"b": "x"}',
   ARRAY[1, NULL, 3], ARRAY['with,comma', 'say "hi"', NULL, '', 'back\slash', 'NULL', '{}'],
   12345678901234567890.123456789, 0.000000000000000000012345678901234567890,
   '2026-03-01 12:34:56.789012+05:30', '2026-03-01 12:34:56.789012', '2026-02-28', true,
   'مرحبا بالعالم 🎉🔥', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'happy', 0.1, '1 year 2 mons 3 days 04:05:06.7'),
  (2, '', '[]', '"just a string"', '{}', '{}', -0.000000001, 'NaN', '-infinity', 'infinity', '0001-01-01 BC', false,
   '', '00000000-0000-0000-0000-000000000000', 'sad', 'NaN', '-1 days'),
  (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (4, '\x5c27223b0a'::bytea, '{"quote": "it''s \"x\"", "back": "\\"}', 'null', ARRAY[-2147483648, 2147483647],
   ARRAY[E'line\nbreak', E'tab\there', 'it''s', E'semi;colon);\n'], 1, 1e-9,
   '2000-01-01 00:00:00+00', '2000-01-01', '2000-01-01', NULL,
   E'it''s a ");"\nline2 ends with );\n\tand \\ backslash \\\\ two; \r\n crlf',
   NULL, 'ok', '-Infinity', '00:00:00.000001'),
  (5, NULL, '{"emoji": "🎉", "arabic": "سلام"}', '{}',
   ARRAY[[1, 2], [3, 4]], ARRAY['ümlaut', '🙂'], 0, 99999999999999999999.999999999,
   '1970-01-01 00:00:00+00', '1970-01-01 00:00:00', '1970-01-01', true,
   'NULL', NULL, NULL, 1.7976931348623157e308, NULL);
INSERT INTO "Audit"."LogEntry" SELECT g / 3, g % 3, 'message ' || g FROM generate_series(1, 300) g;
"""

TABLES = [TableSpec("public", "everything"), TableSpec("Audit", "LogEntry")]


def create_database():
    return pg.create_database(f"sr_export_{uuid.uuid4().hex[:10]}")


@pytest.fixture
def source(pg_server):
    conninfo = create_database()
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        conn.execute(SOURCE_SCHEMA)
        conn.execute(SOURCE_ROWS)
    yield conninfo
    pg.drop_database(conninfo["dbname"])


def export_bytes(conninfo, tables, fmt, **kwargs):
    with ExportDump(conninfo, tables, fmt, **kwargs) as dump:
        data = b"".join(dump)
    return data, dump


def rows_as_json(conninfo, qualified, key):
    with psycopg.connect(**conninfo) as conn:
        return [
            text
            for (text,) in conn.execute(f"SELECT row_to_json(t.*)::text FROM {qualified} t ORDER BY {key}").fetchall()
        ]


def column_types(conninfo, schema, name):
    with psycopg.connect(**conninfo) as conn:
        return conn.execute(
            """SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
               WHERE a.attrelid = format('%%I.%%I', %s::text, %s::text)::regclass
                   AND a.attnum > 0 AND NOT a.attisdropped
               ORDER BY a.attnum""",
            [schema, name],
        ).fetchall()


def primary_key(conninfo, schema, name):
    with psycopg.connect(**conninfo) as conn:
        return [
            column
            for (column,) in conn.execute(
                """SELECT a.attname FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n)
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                   WHERE i.indrelid = format('%%I.%%I', %s::text, %s::text)::regclass
                   AND i.indisprimary ORDER BY k.n""",
                [schema, name],
            ).fetchall()
        ]


def user_tables(conninfo):
    with psycopg.connect(**conninfo) as conn:
        return conn.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
        ).fetchall()


def members(data):
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        return {member.name: archive.extractfile(member).read() for member in archive}


@pytest.mark.parametrize("fmt", sorted(EXPORT_FORMATS))
def test_it_round_trips_every_type(source, pg_database, fmt):
    data, dump = export_bytes(source, TABLES, fmt)

    loaded = load_export(io.BytesIO(data), pg_database)

    assert loaded == {"public.everything": 5, "Audit.LogEntry": 300}
    assert dump.table_counts == {"public.everything": 5, "Audit.LogEntry": 300}
    assert dump.raw_bytes == len(data)
    assert rows_as_json(pg_database, "everything", "id") == rows_as_json(source, "everything", "id")
    assert rows_as_json(pg_database, '"Audit"."LogEntry"', '"Id", "Seq"') == rows_as_json(
        source, '"Audit"."LogEntry"', '"Id", "Seq"'
    )
    expected_types = [
        (name, "text" if name == "feeling" else type_name)
        for name, type_name in column_types(source, "public", "everything")
    ]
    assert column_types(pg_database, "public", "everything") == expected_types
    assert ("amount", "numeric(30,9)") in expected_types and ("numbers", "integer[]") in expected_types
    assert column_types(pg_database, "Audit", "LogEntry") == column_types(source, "Audit", "LogEntry")
    assert primary_key(pg_database, "public", "everything") == ["id"]
    assert primary_key(pg_database, "Audit", "LogEntry") == ["Id", "Seq"]


@pytest.mark.parametrize("fmt", sorted(EXPORT_FORMATS))
def test_it_writes_a_manifest_that_describes_the_members(source, fmt):
    data, dump = export_bytes(source, TABLES, fmt)

    archive = members(data)
    names = list(archive)
    assert names == [
        "tables/public.everything.columns.json",
        f"tables/public.everything.{fmt}",
        "tables/Audit.LogEntry.columns.json",
        f"tables/Audit.LogEntry.{fmt}",
        MANIFEST_MEMBER,
    ]
    manifest = json.loads(archive[MANIFEST_MEMBER])
    assert manifest == dump.export_manifest
    assert manifest["format"] == fmt and manifest["server_version"] == dump.server_version
    entry = manifest["tables"]["Audit.LogEntry"]
    member = archive[entry["member"]]
    import hashlib

    assert entry["sha256"] == hashlib.sha256(member).hexdigest()
    assert entry["size"] == len(member)
    assert entry["rows"] == 300
    assert entry["primary_key"] == ["Id", "Seq"]
    assert entry["columns"] == [
        {"name": "Id", "type": "bigint", "not_null": True},
        {"name": "Seq", "type": "integer", "not_null": True},
        {"name": "Message", "type": "text"},
    ]
    assert manifest["archive_version"] == 1 and manifest["archive_minor_version"] == 1
    described = json.loads(archive["tables/public.everything.columns.json"])
    # JSON Lines carries a type that is not built in as its own text, as it does json.
    as_text = {"as_text": True} if fmt == "jsonl" else {}
    assert {"name": "feeling", "type": "mood", "create_as": "text", **as_text} in described["columns"]
    assert described["primary_key"] == ["id"]
    if fmt == "csv":
        assert member.startswith(b"Id,Seq,Message\n")
    if fmt == "sql":
        assert member.startswith(
            b'INSERT INTO "Audit"."LogEntry" ("Id", "Seq", "Message") VALUES (\'0\', \'1\', \'message 1\');\n'
        )


def test_it_exports_only_the_rows_a_filter_selects(source, pg_database):
    tables = [
        TableSpec("public", "everything", "flag OR id = 3"),
        TableSpec("Audit", "LogEntry", '"Seq" = 0 AND "Id" < 50 AND "Message" LIKE \'message %\''),
    ]
    data, dump = export_bytes(source, tables, "jsonl")

    assert dump.table_counts == {"public.everything": 3, "Audit.LogEntry": 49}
    assert load_export(io.BytesIO(data), pg_database) == dump.table_counts
    with psycopg.connect(**pg_database) as conn:
        assert [id for (id,) in conn.execute("SELECT id FROM everything ORDER BY id")] == [1, 3, 5]
        assert conn.execute('SELECT min("Id"), max("Id"), sum("Seq") FROM "Audit"."LogEntry"').fetchone() == (1, 49, 0)
    assert dump.export_manifest["tables"]["Audit.LogEntry"]["where"].startswith('"Seq" = 0 AND "Id" < 50')


def test_it_refuses_a_malformed_filter_with_the_databases_message(source):
    with pytest.raises(SourceError, match="syntax error"):
        validate_where(source, TableSpec("public", "everything", "id = = 1"))
    with pytest.raises(SourceError, match='column "nope" does not exist'):
        validate_where(source, TableSpec("public", "everything", "nope > 1"))
    with pytest.raises(SourceError, match="no table public.missing"):
        validate_where(source, TableSpec("public", "missing", "true"))
    with pytest.raises(SourceError, match='column "database" does not exist'):
        validate_where(source, TableSpec("public", "everything", "database = 'x'"))
    validate_where(source, TableSpec("public", "everything", "id > 1"))
    with pytest.raises(SourceError, match='column "nope" does not exist'):
        export_bytes(source, [TableSpec("public", "everything", "nope > 1")], "csv")


def test_it_does_not_run_a_second_statement_hidden_in_a_filter(source):
    smuggled = TableSpec("public", "everything", "true); COMMIT; DROP TABLE everything; SELECT (1")
    with pytest.raises(SourceError, match="must be one condition"):
        validate_where(source, smuggled)
    # Without the parenthesis the statement separator is refused as such.
    with pytest.raises(SourceError, match="it holds a ';'"):
        validate_where(source, TableSpec("public", "everything", "true; DROP TABLE everything"))
    with pytest.raises(SourceError):
        export_bytes(source, [smuggled], "csv")

    assert ("public.everything",) in user_tables(source)


def test_it_exports_one_snapshot(source, pg_database):
    with ExportDump(source, TABLES, "csv") as dump:
        dump.start()
        with psycopg.connect(**source, autocommit=True) as other:
            other.execute("INSERT INTO everything (id, note) VALUES (100, 'too late')")
            other.execute('DELETE FROM "Audit"."LogEntry" WHERE "Id" < 10')
        data = b"".join(dump)

    assert dump.table_counts == {"public.everything": 5, "Audit.LogEntry": 300}
    load_export(io.BytesIO(data), pg_database)
    with psycopg.connect(**pg_database) as conn:
        assert conn.execute("SELECT count(*) FROM everything WHERE id = 100").fetchone() == (0,)
        assert conn.execute('SELECT count(*) FROM "Audit"."LogEntry"').fetchone() == (300,)


def test_it_loads_only_the_chosen_tables(source, pg_database):
    data, _ = export_bytes(source, TABLES, "sql")

    assert load_export(io.BytesIO(data), pg_database, tables=["Audit.LogEntry"]) == {"Audit.LogEntry": 300}
    assert user_tables(pg_database) == [("Audit.LogEntry",)]


def test_it_refuses_a_table_the_export_does_not_have(source, pg_database):
    data, _ = export_bytes(source, TABLES, "csv")

    with pytest.raises(EngineError, match="no table public.nope"):
        load_export(io.BytesIO(data), pg_database, tables=["public.nope", "Audit.LogEntry"])
    assert user_tables(pg_database) == []


def flip_byte_in(data, needle):
    at = data.index(needle)
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


@pytest.mark.parametrize(
    "fmt,needle",
    [
        ("csv", b"message 17"),  # still valid CSV: only the hash can tell
        ("jsonl", b'{"Id":5'),  # no longer JSON: the load fails first
        ("sql", b"'message 17'"),  # no longer a literal
        ("sql", b"message 17"),
    ],
)
def test_it_rejects_a_damaged_member_and_commits_nothing(source, pg_database, fmt, needle):
    data, _ = export_bytes(source, TABLES, fmt)
    damaged = flip_byte_in(data, needle)

    with pytest.raises(CorruptionError):
        load_export(io.BytesIO(damaged), pg_database)
    assert user_tables(pg_database) == []


def test_it_rejects_a_truncated_export(source, pg_database):
    data, _ = export_bytes(source, TABLES, "jsonl")
    cut = data.index(b"export-manifest.json") - 200

    with pytest.raises(CorruptionError):
        load_export(io.BytesIO(data[:cut]), pg_database)
    assert user_tables(pg_database) == []


def rebuild(data, change):
    """The archive with `change(name, content)` applied to each member and
    the manifest's hashes recomputed: well formed, but not what was exported."""
    import hashlib

    archive = members(data)
    manifest = json.loads(archive.pop(MANIFEST_MEMBER))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in archive.items():
            content = change(name, content)
            for entry in manifest["tables"].values():
                if entry["member"] == name:
                    entry["sha256"], entry["size"] = hashlib.sha256(content).hexdigest(), len(content)
                if entry["columns_member"] == name:
                    entry["columns"] = json.loads(content)["columns"]
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        body = json.dumps(manifest).encode()
        info = tarfile.TarInfo(MANIFEST_MEMBER)
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    return out.getvalue()


def test_it_runs_nothing_but_the_inserts_of_an_sql_member(source, pg_database):
    data, _ = export_bytes(source, [TableSpec("Audit", "LogEntry")], "sql")

    def smuggle(name, content):
        if name.endswith(".sql"):
            return content.replace(b"'message 1');", b"(SELECT 'x'));\nDROP TABLE everything;", 1)
        return content

    with pytest.raises(CorruptionError, match="not one of its INSERTs"):
        load_export(io.BytesIO(rebuild(data, smuggle)), pg_database)
    assert user_tables(pg_database) == []


def test_it_tells_a_damaged_description_from_an_unknown_type(source, pg_database):
    data, _ = export_bytes(source, [TableSpec("Audit", "LogEntry")], "csv")
    damaged = data.replace(b'"type": "integer"', b'"type": "intgeer"', 1)

    with pytest.raises(CorruptionError, match="description of table Audit.LogEntry does not match"):
        load_export(io.BytesIO(damaged), pg_database)
    with pytest.raises(CorruptionError, match="description of table Audit.LogEntry is damaged"):
        load_export(io.BytesIO(data.replace(b'"type": "integer"', b'"type": 123456789', 1)), pg_database)
    assert user_tables(pg_database) == []


def test_it_refuses_a_column_type_that_is_not_a_type(source, pg_database):
    data, _ = export_bytes(source, [TableSpec("Audit", "LogEntry")], "csv")

    def retype(name, content):
        return content.replace(b'"text"', b'"text); DROP TABLE x; --"') if name.endswith("columns.json") else content

    with pytest.raises(EngineError, match="type this database does not know"):
        load_export(io.BytesIO(rebuild(data, retype)), pg_database)
    assert user_tables(pg_database) == []


def test_it_refuses_a_table_that_exists_and_leaves_the_target_alone(source, pg_database):
    data, _ = export_bytes(source, TABLES, "csv")
    with psycopg.connect(**pg_database, autocommit=True) as conn:
        conn.execute('CREATE SCHEMA "Audit"')
        conn.execute('CREATE TABLE "Audit"."LogEntry" (x text)')
        conn.execute('INSERT INTO "Audit"."LogEntry" VALUES (\'mine\')')

    with pytest.raises(EngineError, match="Audit.LogEntry already exists"):
        load_export(io.BytesIO(data), pg_database)

    assert user_tables(pg_database) == [("Audit.LogEntry",)]
    assert rows_as_json(pg_database, '"Audit"."LogEntry"', "x") == ['{"x":"mine"}']


def test_it_stops_when_cancelled_and_leaves_no_temporary_file(pg_database, tmp_path):
    with psycopg.connect(**pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE big AS SELECT g AS id, md5(g::text) AS memo FROM generate_series(1, 500000) g")
    spool = tmp_path / "spool"
    spool.mkdir()
    dump = ExportDump(pg_database, [TableSpec("public", "big")], "jsonl", tmp_dir=spool)
    chunks = 0
    with pytest.raises(Cancelled), dump:
        for _ in dump:
            chunks += 1
            if chunks == 1:  # the columns member: the rows come next
                threading.Timer(0.2, dump.cancel).start()
    assert dump.table_counts == {}
    assert os.listdir(spool) == []


def test_it_lists_the_live_schema_and_matches_patterns(source):
    with psycopg.connect(**source, autocommit=True) as conn:
        conn.execute("CREATE TABLE audit_logins (id int); ANALYZE; CREATE TABLE audit_changes (id int)")

    tables = list_tables(source)

    assert [(t["schema"], t["name"]) for t in tables] == [
        ("Audit", "LogEntry"),
        ("public", "audit_changes"),
        ("public", "audit_logins"),
        ("public", "everything"),
    ]
    assert tables[0]["columns"] == [
        {"name": "Id", "type": "bigint"},
        {"name": "Seq", "type": "integer"},
        {"name": "Message", "type": "text"},
    ]
    assert tables[0]["rows_estimate"] == 300
    assert tables[1]["rows_estimate"] is None  # never analyzed: unknown, not zero
    assert match_tables(tables, "public.audit_*") == ["public.audit_changes", "public.audit_logins"]
    assert match_tables(tables, "*.Log*") == ["Audit.LogEntry"]
    assert match_tables(tables, "audit_*") == ["public.audit_changes", "public.audit_logins"]


SQLITE_ROWS = [
    (1, "مرحبا 🎉", 0.1, b"\x00\xff\x10", "12345678901234567890.123456789", 1, "2026-03-01 12:34:56.789012"),
    (2, "", -1e308, b"", "0", 0, ""),
    (3, None, None, None, None, None, None),
    (
        4,
        'it\'s a ");"\nline2 ends with );\n\tback\\slash \\\\ two\r\n',
        1.7976931348623157e308,
        b"\\'\";\n",
        "-0.000000001",
        1,
        "x",
    ),
    (5, "NULL", float("inf"), b"\x5c\x78", "1e-9", None, '{"a":\n 1}'),
]


@pytest.fixture
def sqlite_source(tmp_path):
    import sqlite3

    path = tmp_path / "app.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE \"Notes\" (id INTEGER, lang VARCHAR(5) DEFAULT 'ar', body TEXT, score REAL, photo BLOB, "
        "amount NUMERIC, done BOOLEAN, at DATETIME, PRIMARY KEY (lang, id))"
    )
    conn.executemany(
        'INSERT INTO "Notes" (id, body, score, photo, amount, done, at) VALUES (?, ?, ?, ?, ?, ?, ?)', SQLITE_ROWS
    )
    conn.commit()
    conn.close()
    return str(path)


@pytest.mark.parametrize("fmt", sorted(EXPORT_FORMATS))
def test_it_exports_a_sqlite_table_that_loads_into_postgresql(sqlite_source, pg_database, fmt):
    from decimal import Decimal

    data, dump = export_bytes(sqlite_source, [TableSpec("main", "Notes")], fmt)

    assert dump.table_counts == {"main.Notes": 5}
    assert load_export(io.BytesIO(data), pg_database) == {"main.Notes": 5}
    assert column_types(pg_database, "main", "Notes") == [
        ("id", "bigint"),
        ("lang", "text"),
        ("body", "text"),
        ("score", "double precision"),
        ("photo", "bytea"),
        ("amount", "numeric"),
        ("done", "boolean"),
        ("at", "text"),
    ]
    assert primary_key(pg_database, "main", "Notes") == ["lang", "id"]
    with psycopg.connect(**pg_database) as conn:
        loaded = conn.execute(
            'SELECT id, body, score, photo, amount, done, at FROM main."Notes" ORDER BY id'
        ).fetchall()
    import sqlite3

    with sqlite3.connect(sqlite_source) as source:  # what SQLite holds: NUMERIC affinity made some amounts REAL
        held = source.execute('SELECT id, body, score, photo, amount, done, at FROM "Notes" ORDER BY id').fetchall()
    expected = [
        (
            id,
            body,
            score,
            photo,
            None if amount is None else Decimal(repr(amount)),
            None if done is None else bool(done),
            at,
        )
        for id, body, score, photo, amount, done, at in held
    ]
    assert [row[:4] for row in held] == [row[:4] for row in SQLITE_ROWS]
    assert loaded == expected


@pytest.mark.parametrize("fmt", sorted(EXPORT_FORMATS))
def test_it_loads_a_sqlite_export_back_into_a_new_sqlite_file_exactly(sqlite_source, tmp_path, fmt):
    import sqlite3

    with sqlite3.connect(sqlite_source) as conn:
        conn.execute("CREATE TABLE odd (id INTEGER PRIMARY KEY, t TEXT, r REAL, untyped)")
        conn.executemany(
            "INSERT INTO odd VALUES (?, ?, ?, ?)",
            [
                (1, 'quote \' "double", back\\slash\nnew line', float("inf"), 42),
                (2, "", float("-inf"), "text"),
                (3, None, -0.5, None),
                (4, "x" * 70_000, 1e-300, 2.5),
            ],
        )
    data, dump = export_bytes(sqlite_source, [TableSpec("main", "Notes"), TableSpec("main", "odd")], fmt)
    target = tmp_path / "restored.sqlite3"

    assert load_export_sqlite(io.BytesIO(data), str(target)) == {"main.Notes": 5, "main.odd": 4}

    def everything(path, table):
        with sqlite3.connect(path) as conn:
            return conn.execute(
                f'SELECT *, typeof({"photo" if table == "Notes" else "r"}) FROM "{table}" ORDER BY 1, 2'
            ).fetchall()

    assert everything(target, "Notes") == everything(sqlite_source, "Notes")
    odd = everything(target, "odd")
    assert [row[:3] for row in odd] == [row[:3] for row in everything(sqlite_source, "odd")]
    # A column declared without a type has no affinity: its numbers come back
    # as numbers only from JSON Lines (documented in the engine).
    assert [row[3] for row in odd] == ([42, "text", None, 2.5] if fmt == "jsonl" else ["42", "text", None, "2.5"])
    with sqlite3.connect(target) as conn:
        schema = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'Notes'").fetchone()[0]
    assert '"lang" VARCHAR(5)' in schema and 'PRIMARY KEY ("lang", "id")' in schema


def test_it_loads_nothing_into_sqlite_from_a_damaged_export(sqlite_source, tmp_path):
    import sqlite3

    data, _ = export_bytes(sqlite_source, [TableSpec("main", "Notes")], "csv")
    damaged = flip_byte_in(data, b'"ar","')
    target = tmp_path / "restored.sqlite3"

    with pytest.raises(CorruptionError, match="do not match the export's manifest"):
        load_export_sqlite(io.BytesIO(damaged), str(target))
    with sqlite3.connect(target) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)


def test_it_filters_sqlite_rows_and_refuses_a_bad_filter(sqlite_source, pg_database, tmp_path):
    data, dump = export_bytes(sqlite_source, [TableSpec("main", "Notes", "done = 1 OR body = ''")], "csv")
    assert dump.table_counts == {"main.Notes": 3}
    assert dump.export_manifest["tables"]["main.Notes"]["rows"] == 3
    assert load_export_sqlite(io.BytesIO(data), str(tmp_path / "filtered.sqlite3")) == {"main.Notes": 3}
    assert [t["name"] for t in list_tables(sqlite_source)] == ["Notes"]
    assert list_tables(sqlite_source)[0]["rows_estimate"] == 5

    with pytest.raises(SourceError, match="no such column: nope"):
        validate_where(sqlite_source, TableSpec("main", "Notes", "nope = 1"))
    with pytest.raises(SourceError, match="must be one condition"):
        validate_where(sqlite_source, TableSpec("main", "Notes", "1); DROP TABLE Notes; SELECT (1"))
    with pytest.raises(SourceError, match="only the schema main"):
        export_bytes(sqlite_source, [TableSpec("public", "Notes")], "csv")


@pytest.mark.parametrize("fmt", sorted(EXPORT_FORMATS))
def test_it_handles_odd_names_and_rows_longer_than_a_chunk(pg_database, fmt):
    source = create_database()
    try:
        with psycopg.connect(**source, autocommit=True) as conn:
            conn.execute('CREATE SCHEMA "Odd Schema"')
            conn.execute(
                'CREATE TABLE "Odd Schema"."we/ird.Жур%нал" '
                '("it\'s" int PRIMARY KEY, "a ""b""" text, t text DEFAULT \'a column named t\')'
            )
            conn.execute(
                'INSERT INTO "Odd Schema"."we/ird.Жур%нал" ("it\'s", "a ""b""") '
                "VALUES (1, repeat(E'x\\n\\'', 1000000)), (2, ''), (3, NULL)"
            )
        data, dump = export_bytes(source, [TableSpec("Odd Schema", "we/ird.Жур%нал")], fmt, chunk_size=65536)

        assert "tables/Odd Schema.we%2Fird.Жур%25нал." + fmt in members(data)
        assert load_export(io.BytesIO(data), pg_database) == {"Odd Schema.we/ird.Жур%нал": 3}
        table = '"Odd Schema"."we/ird.Жур%нал"'
        assert rows_as_json(pg_database, table, '"it\'s"') == rows_as_json(source, table, '"it\'s"')
        assert primary_key(pg_database, "Odd Schema", "we/ird.Жур%нал") == ["it's"]
    finally:
        pg.drop_database(source["dbname"])


def test_it_checks_every_member_even_when_it_loads_none(source, pg_database):
    data, dump = export_bytes(source, TABLES, "jsonl")

    assert load_export(io.BytesIO(data), pg_database, tables=[]) == {}
    with pytest.raises(CorruptionError, match="Audit.LogEntry do not match"):
        load_export(io.BytesIO(flip_byte_in(data, b"message 17")), pg_database, tables=[])
    assert user_tables(pg_database) == []


def test_it_stops_a_sqlite_export_when_cancelled(tmp_path):
    import sqlite3

    path = str(tmp_path / "big.sqlite3")
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE big (id INTEGER PRIMARY KEY, memo TEXT)")
        conn.execute(
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 400000) "
            "INSERT INTO big SELECT n, hex(randomblob(16)) FROM g"
        )
    spool = tmp_path / "spool"
    spool.mkdir()
    dump = ExportDump(path, [TableSpec("main", "big")], "jsonl", tmp_dir=spool)
    with pytest.raises(Cancelled), dump:
        for number, _ in enumerate(dump):
            if number == 0:
                threading.Timer(0.2, dump.cancel).start()
    assert dump.table_counts == {}
    assert os.listdir(spool) == []


def test_it_keeps_the_password_out_of_its_errors(password_server):
    server = {**password_server, "dbname": "postgres"}
    with psycopg.connect(**server, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS secrets_demo (id int, note text)")
    password = server["password"]
    wrong = {**server, "password": password + "-not"}

    with pytest.raises(SourceError) as refused:
        export_bytes(wrong, [TableSpec("public", "secrets_demo")], "csv")
    assert "Password authentication failed" in str(refused.value)
    with pytest.raises(SourceError) as bad_filter:
        validate_where(server, TableSpec("public", "secrets_demo", f"note = '{password}' AND password = 1"))
    assert 'column "password" does not exist' in str(bad_filter.value)
    for error in (refused.value, bad_filter.value):
        assert password not in str(error)


@pytest.mark.parametrize("fmt", ["jsonl", "sql"])
def test_it_loads_in_batches(source, pg_database, fmt, monkeypatch):
    from catalog.engine.exports import loader

    monkeypatch.setattr(loader, "LOAD_BATCH_ROWS", 7)  # 300 rows: 42 full batches and a last one of 6
    data, _ = export_bytes(source, [TableSpec("Audit", "LogEntry")], fmt)

    assert load_export(io.BytesIO(data), pg_database) == {"Audit.LogEntry": 300}
    key = '"Id", "Seq"'
    assert rows_as_json(pg_database, '"Audit"."LogEntry"', key) == rows_as_json(source, '"Audit"."LogEntry"', key)

"""catalog/engine/mariadb_restore.py against the session's real MariaDB
server: mariadb-dump's output (through MariaDBDump, as a backup takes it)
streamed into the `mariadb` client, edited on the way, and what came back
compared with the source."""

import threading
import time
import uuid

import pymysql
import pytest

from catalog.engine import mariadb_restore
from catalog.engine.errors import Cancelled, EngineError
from catalog.engine.mariadb_dump import MariaDBDump
from catalog.engine.restorers import RestoreError
from tests.harness.mariadb import TEST_PASSWORD
from tests.harness.mariadb_sample import fingerprint, sample_database, table_counts


@pytest.fixture(scope="module")
def sample(mariadb_server):
    """The sample database and its dump, made once for the module (nothing here changes the source)."""
    with sample_database(mariadb_server, prefix="sr_restore_src") as name:
        yield name, dump(mariadb_server, name)


def params(server, database=""):
    return {**server.info(), "dbname": database}


def dump(server, database, tables=()):
    with MariaDBDump(params(server, database), tables=tables) as dumped:
        return b"".join(dumped)


def pieces(data, size):
    """The dump as a stream of `size`-byte chunks: the editor must find lines across their edges."""
    return (data[start : start + size] for start in range(0, len(data), size))


@pytest.fixture
def target(mariadb_server):
    """A database name for a restore to create; dropped afterwards, whatever happened."""
    name = f"sr_restored_{uuid.uuid4().hex[:8]}"
    yield name
    mariadb_server.drop_database(name)


def exists(server, name):
    return mariadb_restore.database_exists(params(server), name)


def test_it_restores_the_whole_sample_exactly_into_a_database_of_another_name(mariadb_server, sample, target):
    source, data = sample

    contents = mariadb_restore.restore(pieces(data, 1000), params(mariadb_server), target, source_database=source)

    with mariadb_server.connect() as conn:
        assert fingerprint(conn, target) == fingerprint(conn, source)
    assert contents.source_database == source
    assert contents.object_counts() == mariadb_restore.object_counts(params(mariadb_server), target)
    assert contents.object_counts() == {"tables": 14, "views": 2, "triggers": 4, "routines": 2, "events": 1}
    assert mariadb_restore.missing_definers(params(mariadb_server), target) == {}
    # The server's default collation, as the source has it, which routines' variables take.
    assert contents.created_with == "utf8mb4, utf8mb4_unicode_ci"
    with mariadb_server.connect() as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT ROUTINE_SCHEMA, DATABASE_COLLATION FROM information_schema.ROUTINES"
            " WHERE ROUTINE_SCHEMA IN (%s, %s)",
            [source, target],
        )
        assert {collation for _, collation in cursor.fetchall()} == {"utf8mb4_unicode_ci"}


def test_the_edited_stream_is_the_same_whatever_the_chunks(sample):
    _, data = sample
    for tables in (None, ["film", "odd`name", "order lines"]):
        outputs = {
            size: b"".join(mariadb_restore.DumpEditor(tables=tables).edit(pieces(data, size)))
            for size in (3, 7, 4096, len(data))
        }
        assert len(set(outputs.values())) == 1
    assert b"".join(mariadb_restore.DumpEditor().edit(pieces(data, 333))) == data  # a full restore: unchanged
    assert mariadb_restore.list_tables(pieces(data, 50)) == sorted(table_counts_of(data))


def table_counts_of(data):
    from catalog.engine.mariadb_dump import count_rows

    return count_rows(data)


def test_chosen_tables_come_back_with_their_rows_and_triggers_and_nothing_else(mariadb_server, sample, target):
    source, data = sample
    chosen = ["film", "film_text", "rental", "odd`name"]

    contents = mariadb_restore.restore(pieces(data, 4096), params(mariadb_server), target, tables=chosen)
    dropped = mariadb_restore.drop_dangling_foreign_keys(params(mariadb_server), target)

    with mariadb_server.connect() as conn:
        before, after = fingerprint(conn, source), fingerprint(conn, target)
    assert sorted(after["tables"]) == sorted(chosen)
    assert {t: after["tables"][t] for t in chosen} == {t: before["tables"][t] for t in chosen}
    # The film triggers (which would double film_text's rows if created before the data) come with film.
    assert sorted(after["triggers"]) == sorted(name for name in before["triggers"] if name.endswith(" ON film"))
    assert after["views"] == after["routines"] == after["events"] == {}
    assert dropped == ["film.fk_film_language → language", "rental.fk_rental_customer → customer"]
    assert contents.object_counts() == {"tables": 4, "views": 0, "triggers": 3, "routines": 0, "events": 0}
    # The foreign key between two chosen tables stays, and holds.
    with mariadb_server.connect(target) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT CONSTRAINT_NAME FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = %s",
            [target],
        )
        assert [row[0] for row in cursor.fetchall()] == ["fk_rental_film"]
        with pytest.raises(pymysql.err.IntegrityError):
            cursor.execute("INSERT INTO rental (rental_date, film_id, customer_id) VALUES (NOW(), 65000, 1)")


SMALL_SCHEMA = [
    "CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(20), up VARCHAR(40) AS (UPPER(name)) STORED)",
    "CREATE TABLE item_log (item_id INT, at DATETIME(6))",
    "INSERT INTO items (name) VALUES ('bolt'), ('nut'), ('washer 🔩')",
    "DELETE FROM items WHERE id = 3",
    "CREATE TRIGGER logged AFTER INSERT ON items FOR EACH ROW INSERT INTO item_log VALUES (NEW.id, NOW(6))",
    "CREATE VIEW every_item AS SELECT * FROM items",
    "CREATE PROCEDURE count_items(OUT n INT) SELECT COUNT(*) INTO n FROM items",
    "CREATE EVENT tidy ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01' DISABLE DO DELETE FROM item_log",
]


def test_it_restores_after_the_source_database_was_dropped_under_its_old_name(mariadb_server):
    source = mariadb_server.create_database(f"sr_dropped_{uuid.uuid4().hex[:6]}")
    try:
        with mariadb_server.connect(source) as conn, conn.cursor() as cursor:
            for statement in SMALL_SCHEMA:
                cursor.execute(statement)
        data = dump(mariadb_server, source)
        with mariadb_server.connect() as conn:
            before = fingerprint(conn, source)
        mariadb_server.drop_database(source)  # gone, as the source of a real disaster

        mariadb_restore.restore(pieces(data, 65536), params(mariadb_server, source), source, source_database=source)

        with mariadb_server.connect() as conn:
            assert fingerprint(conn, source) == before
        with mariadb_server.connect(source) as conn, conn.cursor() as cursor:
            cursor.execute("INSERT INTO items (name) VALUES ('spring')")
            cursor.execute("SELECT id FROM items WHERE name = 'spring'")
            assert cursor.fetchone()[0] == 4  # AUTO_INCREMENT as it was, past the deleted row
    finally:
        mariadb_server.drop_database(source)


def test_a_view_naming_its_own_database_reads_the_restored_one(mariadb_server, mariadb_database, target):
    # mariadb-dump writes a view's columns as `db`.`table`.`column` when the
    # view's definer is not on the source server: restored as it is into
    # another name, the view would not load (or would read the source).
    late = f"late_{uuid.uuid4().hex[:6]}"
    with mariadb_server.connect(mariadb_database) as conn, conn.cursor() as cursor:
        cursor.execute("CREATE TABLE logs (msg TEXT)")
        cursor.execute("INSERT INTO logs VALUES ('one'), ('two')")
        cursor.execute(f"CREATE DEFINER='{late}'@'%' VIEW every_log AS SELECT * FROM logs")
    data = dump(mariadb_server, mariadb_database)
    assert f"`{mariadb_database}`.`logs`.`msg`".encode() in data

    mariadb_restore.restore(pieces(data, 100), params(mariadb_server), target, source_database=mariadb_database)

    with mariadb_server.connect(mariadb_database) as conn, conn.cursor() as cursor:
        cursor.execute("INSERT INTO logs VALUES ('after the backup')")
    with mariadb_server.root() as conn, conn.cursor() as cursor:
        cursor.execute(f"CREATE USER '{late}'@'%'")  # the definer arrives; the view now works
        cursor.execute(f"GRANT SELECT ON *.* TO '{late}'@'%'")
    try:
        with mariadb_server.connect(target) as conn, conn.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM every_log")
            assert cursor.fetchone()[0] == 2  # the restored rows, not the source's three
    finally:
        with mariadb_server.root() as conn, conn.cursor() as cursor:
            cursor.execute(f"DROP USER '{late}'@'%'")


@pytest.fixture
def limited_user(mariadb_server):
    """A user with every privilege on databases named sr_limited_*, and no SUPER nor SET USER."""
    user = f"limited_{uuid.uuid4().hex[:6]}"
    with mariadb_server.root() as conn, conn.cursor() as cursor:
        cursor.execute(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{TEST_PASSWORD}'")
        cursor.execute(f"GRANT ALL ON `sr\\_limited\\_%`.* TO '{user}'@'127.0.0.1'")
    yield {**params(mariadb_server), "user": user}
    with mariadb_server.root() as conn, conn.cursor() as cursor:
        cursor.execute(f"DROP USER '{user}'@'127.0.0.1'")


def test_definers_need_super_or_set_user_or_become_the_restoring_user_when_asked(mariadb_server, sample, limited_user):
    _, data = sample
    name = f"sr_limited_{uuid.uuid4().hex[:6]}"
    assert not mariadb_restore.can_set_definers(limited_user)
    assert mariadb_restore.can_set_definers(params(mariadb_server))

    with pytest.raises(RestoreError) as refused:
        mariadb_restore.restore(pieces(data, 65536), limited_user, name)

    assert "SUPER or SET USER" in str(refused.value) and limited_user["user"] in str(refused.value)
    assert TEST_PASSWORD not in str(refused.value)
    assert not exists(mariadb_server, name)  # nothing half-written

    try:
        mariadb_restore.restore(pieces(data, 65536), limited_user, name, definers_to_current_user=True)
        with mariadb_server.connect() as conn, conn.cursor() as cursor:
            cursor.execute(mariadb_restore.DEFINED_OBJECTS, {"db": name})
            defined = cursor.fetchall()
        assert len(defined) == 9 and {definer for *_, definer in defined} == {f"{limited_user['user']}@127.0.0.1"}
        assert mariadb_restore.object_counts(limited_user, name)["tables"] == 14
        # It may not read mysql.user: it cannot say which definers are missing, and says so (None).
        assert mariadb_restore.missing_definers(limited_user, name) is None
    finally:
        mariadb_server.drop_database(name)


def test_definers_the_server_lacks_are_named(mariadb_server, mariadb_database, target):
    ghost = f"ghost_{uuid.uuid4().hex[:6]}"
    with mariadb_server.root() as conn, conn.cursor() as cursor:
        cursor.execute(f"CREATE USER '{ghost}'@'%'")
        cursor.execute(f"GRANT SELECT ON *.* TO '{ghost}'@'%'")
    with mariadb_server.connect(mariadb_database) as conn, conn.cursor() as cursor:
        cursor.execute("CREATE TABLE t (a INT)")
        cursor.execute(f"CREATE DEFINER='{ghost}'@'%' SQL SECURITY DEFINER VIEW v AS SELECT a FROM t")
    data = dump(mariadb_server, mariadb_database)
    with mariadb_server.root() as conn, conn.cursor() as cursor:
        cursor.execute(f"DROP USER '{ghost}'@'%'")  # the restore server does not have it

    mariadb_restore.restore(pieces(data, 4096), params(mariadb_server), target)

    assert mariadb_restore.missing_definers(params(mariadb_server), target) == {f"{ghost}@%": ["view v"]}
    with mariadb_server.connect(target) as conn, conn.cursor() as cursor, pytest.raises(pymysql.MySQLError) as used:
        cursor.execute("SELECT * FROM v")
    assert used.value.args[0] == mariadb_restore.MISSING_DEFINER


def test_events_can_be_created_disabled(mariadb_server, mariadb_database, target):
    with mariadb_server.connect(mariadb_database) as conn, conn.cursor() as cursor:
        cursor.execute("CREATE TABLE t (a INT)")
        cursor.execute("CREATE EVENT wipe ON SCHEDULE EVERY 1 HOUR ON COMPLETION PRESERVE ENABLE DO DELETE FROM t")
    data = dump(mariadb_server, mariadb_database)

    mariadb_restore.restore(pieces(data, 4096), params(mariadb_server), target, disable_events=True)

    with mariadb_server.connect() as conn, conn.cursor() as cursor:
        cursor.execute("SELECT EVENT_SCHEMA, STATUS FROM information_schema.EVENTS WHERE EVENT_NAME = 'wipe'")
        assert sorted(cursor.fetchall()) == sorted([(mariadb_database, "ENABLED"), (target, "DISABLED")])


def test_a_failed_load_drops_the_database_and_says_why_in_one_line(mariadb_server, target):
    bad = [b"CREATE TABLE t (a INT);\n", b"INSERT INTO t VALUES (1);\n", b"INSERT INTO nowhere VALUES (2);\n"]

    with pytest.raises(RestoreError) as failed:
        mariadb_restore.restore(iter(bad), params(mariadb_server), target)

    assert str(failed.value) == f"The server refused the dump: Table '{target}.nowhere' doesn't exist (error 1146)"
    assert not exists(mariadb_server, target)


def test_the_error_is_found_after_a_long_statement_the_client_echoes(mariadb_server, target):
    rows = b"(" + b"'" + b"x" * (3 << 20) + b"')"
    bad = [b"CREATE TABLE t (a LONGTEXT);\n", b"INSERT INTO nowhere VALUES " + rows + b";\n"]

    with pytest.raises(RestoreError) as failed:
        mariadb_restore.restore(iter(bad), params(mariadb_server), target)

    assert str(failed.value) == f"The server refused the dump: Table '{target}.nowhere' doesn't exist (error 1146)"


def test_a_cancel_stops_the_client_even_while_it_blocks_and_drops_the_database(mariadb_server, target):
    def slow_dump():
        yield b"CREATE TABLE t (a INT);\n"
        yield b"SELECT SLEEP(60);\n"  # the client is busy; writes to it soon block
        while True:
            yield b"INSERT INTO t VALUES (1);\n" * 1000

    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()

    with pytest.raises(Cancelled):
        mariadb_restore.restore(slow_dump(), params(mariadb_server), target, cancel_event=cancel)

    assert time.monotonic() - started < 10
    assert not exists(mariadb_server, target)


def test_it_never_restores_over_an_existing_database(mariadb_server, mariadb_database):
    with mariadb_server.connect(mariadb_database) as conn, conn.cursor() as cursor:
        cursor.execute("CREATE TABLE precious (a INT)")

    with pytest.raises(RestoreError, match="already exists"):
        mariadb_restore.restore(iter([b"DROP TABLE IF EXISTS precious;\n"]), params(mariadb_server), mariadb_database)

    with mariadb_server.connect(mariadb_database) as conn, conn.cursor() as cursor:
        cursor.execute("SHOW TABLES")
        assert cursor.fetchall() == (("precious",),)


def test_a_wrong_password_is_said_without_it(mariadb_server, target):
    wrong = {**params(mariadb_server), "password": "not-" + TEST_PASSWORD}
    with pytest.raises(EngineError) as denied:
        mariadb_restore.restore(iter([b""]), wrong, target)
    assert "Access denied for user strongroom" in str(denied.value) and TEST_PASSWORD not in str(denied.value)


def test_release_names_the_server():
    assert mariadb_restore.release("10.11.19-MariaDB-0+deb12u1") == "MariaDB 10.11"
    assert mariadb_restore.release("8.0.36") == "MySQL 8.0"
    assert mariadb_restore.release("") == ""


def test_row_counts_are_every_table_s(mariadb_server, sample, target):
    source, data = sample
    mariadb_restore.restore(pieces(data, 65536), params(mariadb_server), target)
    with mariadb_server.connect() as conn:
        assert mariadb_restore.row_counts(params(mariadb_server), target) == table_counts(conn, source)

"""A real PostgreSQL database, backed up through the task path to local disk
and S3 with encryption, then restored with plain pg_restore after the
standalone decrypt: schema and every row must come back identical."""

import json
import sqlite3
import uuid

import pytest

from catalog import backup_runs, services
from catalog.models import Backup, Copy, Source
from tests.factories import local_destination, make_plan, pg_source, s3_destination
from tests.harness import pg, s3
from tests.harness.sample_db import create_tricky_database, pg_restore, schema_dump, table_fingerprints
from tests.support import decrypt, files_under, sha256_file

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def restored_database(pg_server):
    name = f"sr_restored_{uuid.uuid4().hex[:8]}"
    yield pg.create_database(name)
    pg.drop_database(name)


def test_it_round_trips_a_tricky_database(pg_database, restored_database, s3_bucket, tmp_path):
    create_tricky_database(pg_database)
    local = local_destination(tmp_path / "backups")
    remote = s3_destination(s3_bucket)
    plan = make_plan(pg_source(pg_database), [local, remote], format="custom", compression="zstd", encrypt=True)

    backup = backup_runs.start_backup("test", plan, label="pre-migration")
    backup.refresh_from_db()

    assert backup.status == Backup.SUCCEEDED, backup.error
    assert backup.label == "pre-migration"
    assert backup.table_counts["public.big_ledger"] == 200_000
    assert backup.table_counts["Inventory.StockItem"] == 3
    assert backup.server_version and "pg_dump" in backup.tool_version
    copies = {copy.destination.kind: copy for copy in backup.copies.all()}
    assert {copy.status for copy in copies.values()} == {Copy.DURABLE}

    local_path = tmp_path / "backups" / copies["local"].key
    assert sha256_file(local_path) == backup.sha256
    remote_body = (
        s3.client(s3_bucket["endpoint_url"])
        .get_object(Bucket=s3_bucket["bucket"], Key=f"strongroom/{copies['s3'].key}")["Body"]
        .read()
    )
    assert remote_body == local_path.read_bytes()
    assert s3.open_uploads(s3_bucket["endpoint_url"], s3_bucket["bucket"]) == []

    manifest = json.loads((tmp_path / "backups" / copies["local"].manifest_key).read_text())
    assert manifest["sha256"] == backup.sha256
    assert manifest["table_counts"] == backup.table_counts
    assert manifest["encryption"]["key_id"] == backup.key_id

    plain = tmp_path / "restored.dump"
    result = decrypt(local_path, plain)
    assert result.returncode == 0, result.stderr
    pg_restore(str(plain), restored_database)

    assert schema_dump(restored_database) == schema_dump(pg_database)
    assert table_fingerprints(restored_database) == table_fingerprints(pg_database)


def test_it_backs_up_plain_sql_with_gzip(pg_database, restored_database, tmp_path):
    create_tricky_database(pg_database, big_rows=1000)
    plan = make_plan(
        pg_source(pg_database), [local_destination(tmp_path / "b")], format="plain", compression="gzip", encrypt=False
    )

    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()

    assert backup.status == Backup.SUCCEEDED, backup.error
    stored = tmp_path / "b" / backup.copies.get().key
    assert stored.name.endswith(".sql.gz")
    result = decrypt(stored, tmp_path / "plain.sql")
    assert result.returncode == 0, result.stderr
    sql = (tmp_path / "plain.sql").read_text()
    assert "CREATE TABLE public.big_ledger" in sql
    assert "مرحبا بالعالم" in sql


def test_it_backs_up_a_sqlite_database(tmp_path):
    database = tmp_path / "app.sqlite3"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.executemany("INSERT INTO notes (body) VALUES (?)", [(f"note {i} ✓",) for i in range(500)])
    source = services.save_source("test", Source(name="App", engine="sqlite", sqlite_path=str(database), port=None))
    plan = make_plan(source, [local_destination(tmp_path / "b")], format="sqlite", encrypt=True)

    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()

    assert backup.status == Backup.SUCCEEDED, backup.error
    assert backup.table_counts == {"notes": 500}
    result = decrypt(tmp_path / "b" / backup.copies.get().key, tmp_path / "restored.sqlite3")
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(tmp_path / "restored.sqlite3") as conn:
        assert conn.execute("SELECT count(*), max(body) FROM notes").fetchone() == (500, "note 99 ✓")
    assert files_under(tmp_path / "b")  # object and manifest, nothing partial
    assert not [name for name in files_under(tmp_path / "b") if "partial" in name]


@pytest.mark.parametrize(("compression", "level", "encrypt"), [("zstd", 1, True), ("gzip", 9, False)])
def test_it_compresses_at_the_plans_level(admin_client, tmp_path, compression, level, encrypt):
    database = tmp_path / "app.sqlite3"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.executemany("INSERT INTO notes (body) VALUES (?)", [(f"note {i} ✓",) for i in range(500)])
    source = services.save_source("test", Source(name="App", engine="sqlite", sqlite_path=str(database), port=None))
    plan = make_plan(
        source,
        [local_destination(tmp_path / "b")],
        format="sqlite",
        compression=compression,
        compression_level=level,
        encrypt=encrypt,
    )

    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()

    assert backup.status == Backup.SUCCEEDED, backup.error
    assert backup.compression_level == level
    page = " ".join(admin_client.get(backup.get_absolute_url()).content.decode().split())
    assert f"· {compression} level {level}</dd>" in page
    copy = backup.copies.get()
    stored = tmp_path / "b" / copy.key
    assert json.loads((tmp_path / "b" / copy.manifest_key).read_text())["compression_level"] == level
    if compression == "gzip":  # the header's XFL byte says 2 only for gzip's slowest, smallest level
        assert stored.read_bytes()[8] == 2
    result = decrypt(stored, tmp_path / "restored.sqlite3")
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(tmp_path / "restored.sqlite3") as conn:
        assert conn.execute("SELECT count(*), max(body) FROM notes").fetchone() == (500, "note 99 ✓")


def test_a_plan_without_a_level_records_the_default(tmp_path):
    source = services.save_source(
        "test", Source(name="App", engine="sqlite", sqlite_path=str(tmp_path / "app.sqlite3"), port=None)
    )
    destination = local_destination(tmp_path / "b")
    for compression, level in (("zstd", 1), ("gzip", 6), ("none", None)):
        plan = make_plan(source, [destination], name=f"Plan {compression}", format="sqlite", compression=compression)
        assert backup_runs.create_backup("test", plan).compression_level == level

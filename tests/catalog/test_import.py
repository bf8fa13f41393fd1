"""Importing dumps made elsewhere (issue 26): real dumps of the tricky sample
database in every format pg_dump writes (the directory as a tar archive),
gzip- and zstd-compressed or not, a SQLite file and a MariaDB dump, each
imported through the command, the upload page or a destination's object,
stored through the plan, then restored and compared row for row with the
database it came from; verified, test-restored and pruned like any other
backup; and the refusals, each of which leaves nothing behind."""

import gzip
import json
import os
import sqlite3
import subprocess
import tarfile
import uuid
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
import zstandard
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django.utils import timezone

from catalog import lifecycle, services, verification
from catalog.engine import mariadb
from catalog.models import AuditEvent, Backup, Source, Verification
from tests.catalog.api.helpers import bearer, make_token
from tests.factories import local_destination, make_plan, mariadb_source, pg_source
from tests.harness import pg
from tests.harness.mariadb_sample import fingerprint, sample_database
from tests.harness.sample_db import create_tricky_database, libpq_env, table_fingerprints
from tests.support import files_under, restore_now

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def source_db(pg_database):
    create_tricky_database(pg_database, big_rows=2000)
    return pg_database


@pytest.fixture
def plan(source_db, tmp_path):
    return make_plan(
        pg_source(source_db, name="Orders"), [local_destination(tmp_path / "disk")], verify_new_backups=False
    )


@pytest.fixture
def restored_name():
    name = f"sr_imported_{uuid.uuid4().hex[:8]}"
    yield name
    pg.drop_database(name)


def pg_dump(conninfo, path, *options):
    subprocess.run(
        ["pg_dump", *options, "--file", str(path), conninfo["dbname"]],
        env={**os.environ, **libpq_env(conninfo)},
        check=True,
        capture_output=True,
    )
    return path


def compressed(path, compression):
    """The file gzip- or zstd-compressed (as the gzip and zstd tools write them), or as it is."""
    if compression == "none":
        return path
    data = path.read_bytes()
    if compression == "gzip":
        out = path.with_name(path.name + ".gz")
        out.write_bytes(gzip.compress(data))
    else:
        out = path.with_name(path.name + ".zst")
        out.write_bytes(zstandard.ZstdCompressor(level=3).compress(data))
    return out


def dump_in(fmt, conninfo, folder):
    """A dump of `conninfo` as a DBA makes one: pg_dump's custom, tar or plain
    format, or its directory format put into a tar archive."""
    if fmt == "directory":
        pg_dump(conninfo, folder / "dir", "--format=directory", "--jobs=2")
        with tarfile.open(folder / "orders.dir.tar", "w") as archive:
            archive.add(folder / "dir", arcname="orders")
        return folder / "orders.dir.tar"
    suffix = {"custom": "dump", "tar": "tar", "plain": "sql"}[fmt]
    return pg_dump(conninfo, folder / f"orders.{suffix}", f"--format={fmt}")


def import_dump(path, source, *options):
    out = StringIO()
    call_command("import_dump", str(path), "--source", source, *options, stdout=out)
    return Backup.objects.get(trigger=Backup.IMPORT, imported_from=f"file {path}"), out.getvalue()


def staging_left():
    """Import staging directories and spools still on disk."""
    tmp = settings.DATA_DIR / "tmp"
    return sorted(p.name for p in tmp.glob("import-*")) + sorted(p.name for p in tmp.glob("backup-*"))


def counts_of(conninfo):
    return {
        table.replace('"', ""): rows for table, (rows, _) in table_fingerprints(conninfo).items() if " " not in table
    }


@pytest.mark.parametrize(
    ("fmt", "compression", "stored_as"),
    [
        ("custom", "none", "custom"),
        ("custom", "gzip", "custom"),
        ("tar", "none", "tar"),
        ("tar", "zstd", "tar"),
        ("directory", "none", "directory"),
        ("directory", "gzip", "directory"),
        ("plain", "none", "plain"),
        ("plain", "gzip", "plain"),
        ("plain", "zstd", "plain"),
    ],
)
def test_it_imports_each_format_and_restores_every_row(
    plan, source_db, tmp_path, restored_name, fmt, compression, stored_as
):
    path = compressed(dump_in(fmt, source_db, tmp_path), compression)

    backup, said = import_dump(path, "Orders")

    assert backup.status == Backup.SUCCEEDED, backup.error
    assert f"Imported as backup #{backup.pk} of Orders (plan Nightly)" in said
    assert backup.format == stored_as and backup.plan == plan and backup.imported_by is None
    assert backup.imported_format.startswith("pg_dump") or backup.imported_format.startswith("plain SQL")
    assert (compression in backup.imported_format) == (compression != "none")
    assert backup.compression == "zstd" and backup.encrypted  # the plan's, whatever the file was
    # Counted from the dump's own data, as a backup counts them for its restore checks.
    assert backup.table_counts == {t: n for t, n in counts_of(source_db).items()} != {}
    assert backup.table_counts["public.big_ledger"] == 2000
    assert backup.server_version and backup.tool_version.startswith("pg_dump")
    assert path.exists() and staging_left() == []  # the file is only read; the staging is gone

    job = restore_now(backup, target="new", database=restored_name)

    assert job.status == "succeeded", job.summary
    assert table_fingerprints({**source_db, "dbname": restored_name}) == table_fingerprints(source_db)


def test_an_upload_becomes_a_backup_marked_imported_by_whom_and_from_where(
    plan, source_db, tmp_path, admin_client, admin_user, restored_name
):
    path = compressed(dump_in("custom", source_db, tmp_path), "gzip")

    with path.open("rb") as upload:
        response = admin_client.post(
            reverse("backup_import"),
            {"source": plan.source.pk, "plan": plan.pk, "label": "from-old-host", "dump": upload},
        )

    backup = Backup.objects.get()
    assert response.status_code == 302 and response["Location"] == backup.get_absolute_url()
    assert backup.status == Backup.SUCCEEDED, backup.error
    assert (backup.imported_by, backup.triggered_by, backup.label) == (admin_user, admin_user, "from-old-host")
    assert backup.imported_from == "upload orders.dump.gz"
    assert backup.imported_format == "pg_dump custom-format archive, gzip-compressed"
    page = admin_client.get(backup.get_absolute_url()).content.decode()
    assert "Imported by alice from upload orders.dump.gz" in page
    listing = admin_client.get(reverse("backup_list")).content.decode()
    assert "Imported by alice from upload orders.dump.gz" in listing and reverse("backup_import") in listing
    event = AuditEvent.objects.get(action="backup.import")
    assert event.actor_label == "alice" and event.object_id == str(backup.pk)
    assert event.changes == {
        "plan": "Nightly",
        "label": "from-old-host",
        "from": "upload orders.dump.gz",
        "format": "pg_dump custom-format archive, gzip-compressed",
        "bytes": path.stat().st_size,
    }
    # Stored through the plan: its manifest says it was imported, so a rebuilt catalog keeps the mark.
    copy = backup.copies.get()
    manifest = json.loads((tmp_path / "disk" / copy.manifest_key).read_text())
    assert manifest["imported"] == {
        "by": "alice",
        "from": "upload orders.dump.gz",
        "format": "pg_dump custom-format archive, gzip-compressed",
    }
    assert manifest["trigger"] == "import" and manifest["table_counts"] == backup.table_counts
    assert staging_left() == []
    # The API says so too.
    _, raw = make_token(scopes=["read"])
    answer = admin_client.get(f"/api/v1/backups/{backup.pk}", headers=bearer(raw)).json()
    assert answer["trigger"] == "import" and answer["imported"] == manifest["imported"]

    job = restore_now(backup, target="new", database=restored_name)
    assert job.status == "succeeded", job.summary
    assert table_fingerprints({**source_db, "dbname": restored_name}) == table_fingerprints(source_db)


def test_an_object_in_a_destination_is_imported_through_its_reader(plan, source_db, tmp_path, admin_client):
    incoming = local_destination(tmp_path / "incoming", name="Incoming")
    (tmp_path / "incoming" / "exports").mkdir(parents=True)
    dump = dump_in("plain", source_db, tmp_path / "incoming" / "exports")
    compressed(dump, "zstd")

    response = admin_client.post(
        reverse("backup_import"),
        {"source": plan.source.pk, "destination": incoming.pk, "key": "exports/orders.sql.zst"},
    )

    backup = Backup.objects.get()
    assert response.status_code == 302, response.content.decode()[-2000:]
    assert backup.status == Backup.SUCCEEDED, backup.error
    assert backup.imported_from == f"{tmp_path / 'incoming'}/exports/orders.sql.zst"
    assert backup.format == "plain" and backup.table_counts["public.big_ledger"] == 2000
    assert {copy.destination.name for copy in backup.copies.all()} == {"Local disk"}  # the plan's, not Incoming
    assert (tmp_path / "incoming" / "exports" / "orders.sql.zst").exists() and staging_left() == []


def test_a_sqlite_file_is_imported_and_restored(tmp_path):
    live = tmp_path / "live" / "app.sqlite3"
    live.parent.mkdir()
    source = services.save_source("test", Source(name="App", engine="sqlite", sqlite_path=str(live), port=None))
    make_plan(source, [local_destination(tmp_path / "disk")], format="sqlite", verify_new_backups=False)
    made_elsewhere = tmp_path / "copy.sqlite3"
    with sqlite3.connect(made_elsewhere) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, photo BLOB)")
        conn.executemany(
            "INSERT INTO notes (body, photo) VALUES (?, ?)", [(f"note {i} ✓", bytes([i % 256])) for i in range(700)]
        )
        conn.execute("CREATE TABLE tags (name TEXT)")
    conn.close()

    backup, _ = import_dump(compressed(made_elsewhere, "gzip"), "App")

    assert backup.status == Backup.SUCCEEDED, backup.error
    assert backup.format == "sqlite" and backup.table_counts == {"notes": 700, "tags": 0}
    assert backup.imported_format == "SQLite database file, gzip-compressed"
    job = restore_now(backup, target="new", database="restored.sqlite3")
    assert job.status == "succeeded", job.summary
    with sqlite3.connect(tmp_path / "live" / "restored.sqlite3") as conn:
        restored = conn.execute("SELECT id, body, photo FROM notes ORDER BY id").fetchall()
    conn.close()
    with sqlite3.connect(made_elsewhere) as conn:
        assert restored == conn.execute("SELECT id, body, photo FROM notes ORDER BY id").fetchall()
    conn.close()


def mariadb_dump_of(server, database, *options):
    """mariadb-dump as a DBA runs it by hand for one database."""
    params = {**server.info(), "dbname": database}
    with mariadb.option_file(params) as option_file:
        done = subprocess.run(
            [mariadb.find_tool(mariadb.DUMP_TOOLS), f"--defaults-file={option_file}", *options, database],
            capture_output=True,
            check=True,
        )
    return done.stdout


def test_a_mariadb_dump_is_imported_and_restored_equal_to_its_database(mariadb_server, tmp_path):
    with sample_database(mariadb_server, prefix="sr_import") as sample:
        source = mariadb_source(mariadb_server, sample)
        make_plan(source, [local_destination(tmp_path / "disk")], format="mariadb", verify_new_backups=False)
        path = tmp_path / "shop.sql"
        path.write_bytes(mariadb_dump_of(mariadb_server, sample, "--single-transaction", "--routines", "--events"))

        backup, _ = import_dump(compressed(path, "zstd"), source.name)

        assert backup.status == Backup.SUCCEEDED, backup.error
        assert backup.format == "mariadb" and backup.imported_format == "MariaDB/MySQL SQL dump, zstd-compressed"
        assert backup.tool_version.startswith("MariaDB dump") and "MariaDB" in backup.server_version
        name = f"sr_restored_{uuid.uuid4().hex[:8]}"
        try:
            job = restore_now(backup, target="new", database=name)
            assert job.status == "succeeded", job.summary
            with mariadb_server.connect() as conn:
                assert fingerprint(conn, name) == fingerprint(conn, sample)
            assert job.report["row_counts"] and all(
                counts["backup"] == counts["restored"] for counts in job.report["row_counts"].values()
            )
        finally:
            mariadb_server.drop_database(name)


def test_an_imported_backup_is_verified_and_test_restored(plan, source_db, tmp_path):
    backup, _ = import_dump(dump_in("tar", source_db, tmp_path), "Orders")

    checksum = verification.run_here(
        verification.create_verification("test", backup, Verification.CHECKSUM, enqueue_it=False)
    )
    test_restore = verification.run_here(
        verification.create_verification("test", backup, Verification.RESTORE, enqueue_it=False)
    )

    assert checksum.status == "passed", checksum.summary
    assert test_restore.status == "passed", test_restore.summary
    assert test_restore.evidence["rows"] == backup.table_counts
    assert "rows match the backup's snapshot exactly" in test_restore.summary
    assert test_restore.evidence["table_of_contents"] == test_restore.evidence["schema_objects"]


def test_a_dump_of_inserts_has_no_row_counts_and_its_test_restore_says_so(plan, source_db, tmp_path):
    path = pg_dump(source_db, tmp_path / "inserts.sql", "--format=plain", "--inserts")

    backup, _ = import_dump(path, "Orders")

    assert backup.status == Backup.SUCCEEDED, backup.error
    assert backup.table_counts == {}
    assert "No row counts recorded at import: its rows are INSERT statements" in backup.log
    check = verification.run_here(
        verification.create_verification("test", backup, Verification.RESTORE, enqueue_it=False)
    )
    assert check.status == "passed", check.summary
    assert "no row counts recorded at import to compare" in check.summary
    assert check.evidence["rows"]["public.big_ledger"] == 2000


def test_an_imported_backup_is_pruned_by_its_plans_rule(plan, source_db, tmp_path):
    plan.retention_mode, plan.keep_last, plan.keep_manual_days = "last", 1, 0  # 0: the rule judges imports at once
    plan.save()
    old, _ = import_dump(dump_in("custom", source_db, tmp_path), "Orders")
    Backup.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=1))
    newer, _ = import_dump(pg_dump(source_db, tmp_path / "newer.dump", "--format=custom"), "Orders")
    assert newer.status == Backup.SUCCEEDED, newer.error

    lifecycle.prune_plan("retention", plan)

    old.refresh_from_db()
    assert old.is_pruned() and old.prune_reason
    assert not (tmp_path / "disk" / old.object_key).exists() and (tmp_path / "disk" / newer.object_key).exists()


def test_a_rebuilt_catalog_keeps_the_import_mark(plan, source_db, tmp_path, admin_client, admin_user):
    with dump_in("plain", source_db, tmp_path).open("rb") as upload:
        admin_client.post(reverse("backup_import"), {"source": plan.source.pk, "dump": upload})
    before = Backup.objects.get()

    call_command("flush", interactive=False, verbosity=0)
    User.objects.create_user("alice")
    local_destination(tmp_path / "disk")
    call_command("rebuild_catalog", stdout=StringIO(), stderr=StringIO())

    after = Backup.objects.get()
    assert after.is_imported() and after.imported_text() == "Imported by alice from upload orders.sql"
    assert (after.imported_format, after.format, after.sha256) == (before.imported_format, "plain", before.sha256)


# --- refusals: each says why and leaves nothing behind ------------------------------------


def assert_nothing_left(tmp_path):
    assert Backup.objects.count() == 0
    assert not (tmp_path / "disk").exists() or files_under(tmp_path / "disk") == []
    assert staging_left() == []
    assert not AuditEvent.objects.filter(action="backup.import").exists()


def refusal_of(path):
    """What the command says when it refuses `path` for the source Orders."""
    with pytest.raises(CommandError) as refused:
        call_command("import_dump", str(path), "--source", "Orders", stdout=StringIO())
    assert "Nothing was imported." in str(refused.value)
    assert path.exists()  # the file given is only read
    return str(refused.value)


def test_it_refuses_random_bytes(plan, tmp_path):
    path = tmp_path / "random.dump"
    path.write_bytes(os.urandom(300_000))
    assert refusal_of(path).startswith("This file is not a dump Strongroom can import")
    assert_nothing_left(tmp_path)


def test_it_refuses_a_truncated_custom_dump(plan, source_db, tmp_path):
    whole = dump_in("custom", source_db, tmp_path).read_bytes()
    path = tmp_path / "cut.dump"
    path.write_bytes(whole[: len(whole) * 2 // 3])
    assert refusal_of(path).startswith(
        "pg_restore stopped reading the archive: could not read from input file: end of file. "
        "It is damaged or cut short."
    )
    assert_nothing_left(tmp_path)


@pytest.mark.parametrize("cut", ["tar", "plain", "gzip"])
def test_it_refuses_other_dumps_cut_short(plan, source_db, tmp_path, cut):
    if cut == "gzip":
        whole = compressed(dump_in("custom", source_db, tmp_path), "gzip").read_bytes()
    else:
        whole = dump_in(cut, source_db, tmp_path).read_bytes()
    path = tmp_path / f"cut.{cut}"
    path.write_bytes(whole[: len(whole) - 3000])
    assert "cut short" in refusal_of(path) or "truncated" in refusal_of(path)
    assert_nothing_left(tmp_path)


def test_it_refuses_a_mariadb_dump_for_a_postgresql_source(plan, tmp_path, mariadb_server):
    with sample_database(mariadb_server, prefix="sr_refused") as sample:
        path = tmp_path / "shop.sql"
        path.write_bytes(mariadb_dump_of(mariadb_server, sample))
    assert refusal_of(path).startswith(
        "This is a MariaDB/MySQL SQL dump, but the source Orders is PostgreSQL: import it into a MariaDB/MySQL source."
    )
    assert_nothing_left(tmp_path)


def test_an_upload_over_the_limit_is_stopped_and_leaves_nothing(plan, source_db, tmp_path, admin_client, settings):
    path = dump_in("custom", source_db, tmp_path)
    settings.IMPORT_MAX_BYTES = path.stat().st_size // 2

    with path.open("rb") as upload:
        response = admin_client.post(reverse("backup_import"), {"source": plan.source.pk, "dump": upload})

    assert response.status_code == 200
    page = response.content.decode()
    assert "The file is larger than the import limit of" in page and "nothing was kept" in page
    assert_nothing_left(tmp_path)


def test_a_refused_upload_says_why_on_the_form_and_keeps_no_file(plan, tmp_path, admin_client):
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")

    with path.open("rb") as upload:
        response = admin_client.post(reverse("backup_import"), {"source": plan.source.pk, "dump": upload})

    assert response.status_code == 200
    assert "this one starts with the line “hello”" in response.content.decode()
    assert_nothing_left(tmp_path)


def test_an_auditor_cannot_import(plan, auditor_client, tmp_path):
    path = tmp_path / "x.sql"
    path.write_text("--\n-- PostgreSQL database dump\n--\n")
    assert auditor_client.get(reverse("backup_import")).status_code == 403
    with path.open("rb") as upload:
        assert (
            auditor_client.post(reverse("backup_import"), {"source": plan.source.pk, "dump": upload}).status_code == 403
        )
    assert Backup.objects.count() == 0 and staging_left() == []


def test_the_import_waits_for_no_backup_of_its_plan_and_none_waits_for_it(plan, source_db, tmp_path):
    from catalog import backup_runs

    queued = backup_runs.create_backup("test", plan)  # a run of the plan, queued
    backup, _ = import_dump(dump_in("custom", source_db, tmp_path), "Orders")
    assert backup.status == Backup.SUCCEEDED and Backup.objects.get(pk=queued.pk).status == Backup.QUEUED


def test_the_command_names_what_it_cannot_find(plan, tmp_path):
    with pytest.raises(CommandError, match="No source named 'Nope'. Sources: Orders."):
        call_command("import_dump", "x", "--source", "Nope")
    with pytest.raises(CommandError, match="Orders has no plan named 'Weekly'"):
        call_command("import_dump", "x", "--source", "Orders", "--plan", "Weekly")
    with pytest.raises(CommandError, match=f"There is no file {Path('x').resolve()}"):
        call_command("import_dump", "x", "--source", "Orders")


def test_an_import_says_nothing_of_how_recent_the_sources_protection_is(plan, source_db, tmp_path):
    backup, _ = import_dump(dump_in("custom", source_db, tmp_path), "Orders")

    source = Source.objects.get(pk=plan.source.pk)
    assert backup.status == Backup.SUCCEEDED and backup.is_good()
    assert source.last_good_at is None and source.status == "new"  # its data is of whenever it was made


def test_the_staging_of_an_import_that_died_is_swept_after_a_day(db):
    """A process killed mid-upload or mid-check leaves its staging directory;
    the next import on this host, or the tick, removes it once it is a day old."""
    from catalog import imports, tasks

    dead = imports.staging_root() / "import-killed"
    dead.mkdir()
    (dead / "input").write_bytes(b"half an upload")
    live = imports.new_staging()
    (live / "input").write_bytes(b"still arriving")
    day_old = dead.stat().st_mtime - 25 * 3600
    for path in (dead / "input", dead):
        os.utime(path, (day_old, day_old))

    assert imports.sweep_abandoned_staging() == ["import-killed"]
    assert not dead.exists() and live.exists()
    assert tasks.tick()["abandoned_imports"] == []
    imports.discard(live)

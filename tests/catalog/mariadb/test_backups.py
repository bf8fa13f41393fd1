"""MariaDB backups through the real worker path (mariadb-dump, the pipeline,
local disk and S3 on moto, zstd, AES-256-GCM, manifests), proven by loading
the stored object with the plain `mariadb` client after the standalone
decrypt: the restored database's fingerprint equals the source's."""

import json
import logging
import tempfile
import threading
import time

import pytest
import zstandard
from django.utils import timezone

from catalog import backup_runs, lifecycle, verification
from catalog.models import AuditEvent, Backup, Copy
from compliance import report as compliance_report
from tests.catalog.mariadb.conftest import load_dump
from tests.factories import local_destination, make_plan, mariadb_source, s3_destination
from tests.harness import s3
from tests.harness.mariadb import TEST_PASSWORD
from tests.harness.mariadb_sample import fingerprint, table_counts
from tests.support import decrypt, files_under, in_thread, sha256_file, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def run(plan):
    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()
    return backup


def test_it_round_trips_the_sample_through_disk_and_s3(
    mariadb_server, mariadb_sample, fresh_database, s3_bucket, tmp_path
):
    source = mariadb_source(mariadb_server, mariadb_sample)
    local, remote = local_destination(tmp_path / "backups"), s3_destination(s3_bucket)
    plan = make_plan(source, [local, remote], format="mariadb", compression="zstd", encrypt=True)

    backup = run(plan)

    assert backup.status == Backup.SUCCEEDED, backup.error
    with mariadb_server.connect(mariadb_sample) as conn:
        assert backup.table_counts == table_counts(conn, mariadb_sample)
    assert backup.table_counts["salaries"] == 5030 and backup.table_counts["odd`name"] == 54
    assert "MariaDB" in backup.server_version and "mariadb-dump" in backup.tool_version
    assert backup.object_key.endswith(".sql.zst.enc")
    copies = {copy.destination.kind: copy for copy in backup.copies.all()}
    assert {copy.status for copy in copies.values()} == {Copy.DURABLE}

    stored = tmp_path / "backups" / copies["local"].key
    assert sha256_file(stored) == backup.sha256
    body = s3.client(s3_bucket["endpoint_url"]).get_object(
        Bucket=s3_bucket["bucket"], Key=f"strongroom/{copies['s3'].key}"
    )["Body"]
    assert body.read() == stored.read_bytes()
    manifest = json.loads((tmp_path / "backups" / copies["local"].manifest_key).read_text())
    assert manifest["format"] == "mariadb" and manifest["table_counts"] == backup.table_counts
    assert manifest["source"] == {
        "name": "Shop (MariaDB)",
        "slug": source.slug,
        "engine": "mariadb",
        "target": f"strongroom@127.0.0.1:{mariadb_server.port}/{mariadb_sample}",
    }
    assert TEST_PASSWORD not in json.dumps(manifest)

    plain = tmp_path / "restored.sql"
    result = decrypt(stored, plain)
    assert result.returncode == 0, result.stderr
    dump = plain.read_bytes()
    assert b"CREATE DATABASE" not in dump and b"\nUSE " not in dump  # it loads into a database of any name
    load_dump(mariadb_server, fresh_database, dump)
    with mariadb_server.connect() as conn:
        assert fingerprint(conn, fresh_database) == fingerprint(conn, mariadb_sample)

    # The checksum every new backup gets passed, for both copies; the source is up.
    check = backup.verifications.get()
    assert (check.kind, check.status) == ("checksum", "passed"), check.summary
    assert backup.copies.filter(verified_at__isnull=False).count() == 2
    source.refresh_from_db()
    assert source.status == "up" and source.last_good_at is not None

    # The auditors' report counts it like any other backup.
    today = timezone.localdate()
    sections = {section.key: section for section in compliance_report.build(today, today).sections}
    assert sections["coverage"].rows[0][:4] == ["Shop (MariaDB)", 1, 1, "100.0 %"]
    assert sections["three_two_one"].rows[0][1:4] == ["MariaDB or MySQL", "Nightly", "met"]


def test_a_checksum_asked_for_later_passes_and_finds_a_flipped_byte(mariadb_server, mariadb_sample, tmp_path):
    plan = make_plan(
        mariadb_source(mariadb_server, mariadb_sample),
        [local_destination(tmp_path)],
        format="mariadb",
        verify_new_backups=False,
    )
    backup = run(plan)

    check = verification.create_verification("test", backup, "checksum")
    check.refresh_from_db()
    assert check.status == "passed", check.summary

    path = tmp_path / backup.object_key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    check = verification.create_verification("test", backup, "checksum")
    check.refresh_from_db()
    assert check.status == "failed" and "damaged" in check.summary


def test_the_dump_is_one_consistent_snapshot_while_money_moves(
    mariadb_server, mariadb_sample, fresh_database, tmp_path
):
    """A writer moves money from `accounts` (dumped first) to `vault` (dumped
    last) while the dump runs, one transaction a transfer: the backup must
    hold the total, as of one moment."""
    with mariadb_server.connect(mariadb_sample) as conn, conn.cursor() as cursor:
        cursor.execute("CREATE TABLE vault (id INT PRIMARY KEY, balance DECIMAL(14,2) NOT NULL) ENGINE=InnoDB")
        cursor.execute("INSERT INTO vault VALUES (1, 0)")
    total = "SELECT (SELECT SUM(balance) FROM accounts) + (SELECT SUM(balance) FROM vault)"
    plan = make_plan(
        mariadb_source(mariadb_server, mariadb_sample),
        [local_destination(tmp_path / "b")],
        format="mariadb",
        encrypt=False,
        compression="none",
        verify_new_backups=False,
    )
    stop, transfers = threading.Event(), []

    def move_money():
        with mariadb_server.connect(mariadb_sample) as conn, conn.cursor() as cursor:
            conn.autocommit(False)
            while not stop.is_set():
                account = 1 + len(transfers) % 100
                cursor.execute("UPDATE accounts SET balance = balance - 1 WHERE id = %s", (account,))
                cursor.execute("UPDATE vault SET balance = balance + 1 WHERE id = 1")
                conn.commit()
                transfers.append(account)

    writer = in_thread(move_money)
    wait_for(lambda: len(transfers) > 50)
    before = len(transfers)
    backup = run(plan)
    during = len(transfers) - before
    stop.set()
    writer.join(timeout=30)

    assert backup.status == Backup.SUCCEEDED, backup.error
    assert during > 10  # money moved while the dump ran
    load_dump(mariadb_server, fresh_database, (tmp_path / "b" / backup.object_key).read_bytes())
    with mariadb_server.connect(fresh_database) as conn, conn.cursor() as cursor:
        cursor.execute(total)
        assert cursor.fetchone()[0] == 100_000
        cursor.execute("SELECT balance FROM vault")
        assert 0 < cursor.fetchone()[0] < len(transfers)  # a moment in the middle of the transfers


def test_cancelling_mid_dump_leaves_nothing_behind(mariadb_server, mariadb_sample, s3_bucket, tmp_path, monkeypatch):
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # where the password's option file goes
    folder = tmp_path / "backups"
    plan = make_plan(
        mariadb_source(mariadb_server, mariadb_sample),
        [local_destination(folder), s3_destination(s3_bucket)],
        format="mariadb",
    )
    backup = backup_runs.create_backup("test", plan)

    # A table lock the dump must wait for, so that the backup is caught mid-run.
    with mariadb_server.connect(mariadb_sample) as blocker, blocker.cursor() as cursor:
        cursor.execute("LOCK TABLES payment WRITE")
        worker = in_thread(backup_runs.run_backup, backup.pk)
        wait_for(lambda: Backup.objects.get(pk=backup.pk).status == Backup.RUNNING)
        wait_for(lambda: dump_sessions(mariadb_server) > 0)
        time.sleep(0.5)
        backup_runs.cancel_backup("test", Backup.objects.get(pk=backup.pk))
        worker.join(timeout=30)
        assert not worker.is_alive()
        cursor.execute("UNLOCK TABLES")
    # The dump's session ends once it may read again and finds its client gone.
    wait_for(lambda: dump_sessions(mariadb_server) == 0)

    backup.refresh_from_db()
    assert backup.status == Backup.CANCELLED
    assert files_under(folder) == [] and files_under(temp) == []
    assert s3.all_keys(s3_bucket["endpoint_url"], s3_bucket["bucket"]) == []
    assert s3.open_uploads(s3_bucket["endpoint_url"], s3_bucket["bucket"]) == []
    assert AuditEvent.objects.filter(action="backup.cancel", object_id=str(backup.pk)).exists()


def dump_sessions(server):
    """Sessions of the dump (the test's user, not this watcher's nor the blocker's) waiting or working."""
    with server.root() as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*) FROM information_schema.processlist WHERE user = 'strongroom' AND command = 'Query'"
            " AND info LIKE '%payment%'"
        )
        return cursor.fetchone()[0]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"password": "not-the-password"}, "Access denied for user strongroom on 127.0.0.1:"),
        ({"dbname": "no_such_database"}, "Database no_such_database does not exist on 127.0.0.1:"),
    ],
    ids=["wrong password", "missing database"],
)
def test_a_failed_backup_says_why_in_words_and_never_the_password(
    mariadb_server, mariadb_sample, tmp_path, caplog, change, words
):
    source = mariadb_source(mariadb_server, mariadb_sample, password=change.get("password"))
    if "dbname" in change:
        source.dbname = change["dbname"]
        source.save()
    folder = tmp_path / "backups"
    plan = make_plan(source, [local_destination(folder)], format="mariadb")

    with caplog.at_level(logging.DEBUG):
        backup = run(plan)

    assert backup.status == Backup.FAILED
    assert backup.error.startswith(words), backup.error
    assert files_under(folder) == []
    events = " ".join(json.dumps(event.changes) + event.object_repr for event in AuditEvent.objects.all())
    for text in (backup.error, backup.log, events, caplog.text):
        assert TEST_PASSWORD not in text and "not-the-password" not in text


def test_retention_prunes_mariadb_backups_like_any_other(mariadb_server, mariadb_database, tmp_path):
    plan = make_plan(
        mariadb_source(mariadb_server, mariadb_database),
        [local_destination(tmp_path)],
        format="mariadb",
        retention_mode="last",
        keep_last=1,
        keep_minimum=1,
        verify_new_backups=False,
    )
    # As its schedule runs them: the plan's rule judges those (manual backups have one of their own).
    first, second = (backup_runs.start_backup("test", plan, trigger="schedule") for _ in range(2))
    lifecycle.prune_plan("test", plan)  # the run after each backup may have done it already

    first.refresh_from_db()
    second.refresh_from_db()
    assert first.is_pruned() and not second.is_pruned()
    assert AuditEvent.objects.filter(action="backup.prune", object_id=str(first.pk)).exists()
    assert files_under(tmp_path) == sorted([second.object_key, second.object_key + ".manifest.json"])


def test_a_user_without_privileges_gets_a_failed_backup_in_words(mariadb_server, mariadb_sample, tmp_path):
    with mariadb_server.root() as conn, conn.cursor() as cursor:
        cursor.execute("CREATE USER IF NOT EXISTS 'reader'@'127.0.0.1' IDENTIFIED BY 'r3ader-pw'")
        cursor.execute(f"GRANT SELECT, TRIGGER, EVENT ON `{mariadb_sample}`.* TO 'reader'@'127.0.0.1'")
    try:
        source = mariadb_source(mariadb_server, mariadb_sample, password="r3ader-pw")
        source.user = "reader"
        source.save()
        backup = run(make_plan(source, [local_destination(tmp_path)], format="mariadb"))
    finally:
        with mariadb_server.root() as conn, conn.cursor() as cursor:
            cursor.execute("DROP USER 'reader'@'127.0.0.1'")
    assert backup.status == Backup.FAILED
    assert (
        backup.error
        == f"User reader may not read the views of {mariadb_sample}: grant it SHOW VIEW on {mariadb_sample}"
    )
    assert files_under(tmp_path) == []


def test_what_a_dump_lacks_without_failing_is_written_in_the_backups_log(mariadb_server, mariadb_sample, tmp_path):
    """mariadb-dump leaves out the triggers of a user without TRIGGER and says
    nothing; MyISAM tables are read outside the snapshot. The backup says both."""
    with mariadb_server.root(mariadb_sample) as conn, conn.cursor() as cursor:
        cursor.execute("CREATE TABLE legacy_counters (id INT PRIMARY KEY) ENGINE=MyISAM")
        cursor.execute("INSERT INTO legacy_counters VALUES (1), (2)")
        cursor.execute("CREATE USER IF NOT EXISTS 'reader'@'127.0.0.1' IDENTIFIED BY 'r3ader-pw'")
        cursor.execute(f"GRANT SELECT, SHOW VIEW, EVENT ON `{mariadb_sample}`.* TO 'reader'@'127.0.0.1'")
        cursor.execute("GRANT SELECT ON mysql.proc TO 'reader'@'127.0.0.1'")
    try:
        source = mariadb_source(mariadb_server, mariadb_sample, password="r3ader-pw")
        source.user = "reader"
        source.save()
        backup = run(make_plan(source, [local_destination(tmp_path)], format="mariadb", encrypt=False))
    finally:
        with mariadb_server.root() as conn, conn.cursor() as cursor:
            cursor.execute("DROP USER 'reader'@'127.0.0.1'")

    assert backup.status == Backup.SUCCEEDED, backup.error
    assert backup.table_counts["legacy_counters"] == 2
    assert (
        f"Warning: User reader lacks TRIGGER on {mariadb_sample}: triggers are left out of the dump without a word"
        in backup.log
    )
    assert "Warning: Not InnoDB, so not in the consistent snapshot: legacy_counters (MyISAM)" in backup.log
    assert b" TRIGGER " not in zstd_plain(tmp_path / backup.object_key)  # as the warning said


def zstd_plain(path):
    return zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes())

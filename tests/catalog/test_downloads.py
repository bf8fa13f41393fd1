"""A backup's Download buttons (catalog/views/downloads.py): the plain dump,
decrypted and decompressed, and the stored files as they are (the encrypted
object with its manifest and globals, in one tar). Administrators only,
audited, and neither needs the source: they work after its database is gone."""

import hashlib
import io
import sqlite3
import tarfile

import psycopg
import pytest
from django.urls import reverse

from catalog import backup_runs, services
from catalog.engine.errors import CorruptionError
from catalog.models import AuditEvent, Backup, Source
from tests.factories import local_destination, make_plan, pg_source
from tests.harness import pg
from tests.support import decrypt

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def key_dir(settings, tmp_path):
    settings.KEY_DIR = tmp_path / "keys"
    return settings.KEY_DIR


def take(plan):
    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error
    return backup


@pytest.fixture
def sqlite_backup(tmp_path):
    database = tmp_path / "app.sqlite3"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.executemany("INSERT INTO notes (body) VALUES (?)", [(f"note {i}",) for i in range(50)])
    source = services.save_source("test", Source(name="App", engine="sqlite", sqlite_path=str(database), port=None))
    plan = make_plan(
        source, [local_destination(tmp_path / "disk")], format="sqlite", encrypt=True, verify_new_backups=False
    )
    return take(plan)


def body(response):
    return b"".join(response.streaming_content)


def stored_path(tmp_path, backup):
    return tmp_path / "disk" / backup.copies.get().key


def test_the_plain_dump_downloads_after_the_source_file_is_gone(admin_client, sqlite_backup, tmp_path):
    (tmp_path / "app.sqlite3").unlink()

    response = admin_client.post(reverse("backup_download", args=[sqlite_backup.pk]))

    assert response.status_code == 200 and response.streaming
    assert response["Content-Disposition"] == f'attachment; filename="app-backup-{sqlite_backup.pk}.sqlite"'
    (tmp_path / "downloaded.sqlite3").write_bytes(body(response))
    with sqlite3.connect(tmp_path / "downloaded.sqlite3") as conn:
        assert conn.execute("SELECT count(*), max(id) FROM notes").fetchone() == (50, 50)
    event = AuditEvent.objects.get(action="backup.download", object_id=str(sqlite_backup.pk))
    assert event.changes["copy"] == f"{tmp_path / 'disk'}/{sqlite_backup.copies.get().key}"


def test_the_stored_files_are_the_object_and_its_manifest_and_need_no_source(admin_client, pg_database, tmp_path):
    with psycopg.connect(**pg_database, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE orders (id int PRIMARY KEY, item text); "
            "INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, 40) g"
        )
    plan = make_plan(
        pg_source(pg_database), [local_destination(tmp_path / "disk")], encrypt=True, verify_new_backups=False
    )
    backup = take(plan)
    pg.drop_database(pg_database["dbname"])  # the source database is gone: the stored files are all there is

    response = admin_client.post(reverse("backup_download_stored", args=[backup.pk]))

    assert response.status_code == 200 and response["Content-Type"] == "application/x-tar"
    slug = backup.source.slug
    assert response["Content-Disposition"] == f'attachment; filename="{slug}-backup-{backup.pk}-stored.tar"'
    with tarfile.open(fileobj=io.BytesIO(body(response))) as archive:
        stored = stored_path(tmp_path, backup)
        folder = f"{slug}-backup-{backup.pk}"
        assert archive.getnames() == [
            f"{folder}/{stored.name}",
            f"{folder}/{stored.name}.manifest.json",
            f"{folder}/{stored.name}.manifest.json.globals",
        ]
        sent = archive.extractfile(f"{folder}/{stored.name}").read()
        assert sent == stored.read_bytes() and hashlib.sha256(sent).hexdigest() == backup.sha256
        assert not sent.startswith(b"PGDMP")  # as stored: encrypted
        manifest = archive.extractfile(f"{folder}/{stored.name}.manifest.json").read()
        assert manifest == stored.with_name(stored.name + ".manifest.json").read_bytes()
        assert all(member.mode == 0o600 for member in archive.getmembers())

        # Unpacked anywhere, the decrypt command finds the manifest beside the object, checks it, and decrypts.
        archive.extractall(tmp_path / "unpacked", filter="data")
    result = decrypt(tmp_path / "unpacked" / folder / stored.name, tmp_path / "plain.dump")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "plain.dump").read_bytes().startswith(b"PGDMP")
    event = AuditEvent.objects.get(action="backup.download_stored", object_id=str(backup.pk))
    assert event.changes == {"copy": f"{tmp_path / 'disk'}/{backup.copies.get().key}", "encrypted": True}


def test_without_its_master_key_the_dump_is_refused_by_name_but_the_stored_files_are_sent(
    admin_client, sqlite_backup, key_dir
):
    (key_dir / f"{sqlite_backup.key_id}.key").unlink()

    response = admin_client.post(reverse("backup_download", args=[sqlite_backup.pk]), follow=True)

    assert response.redirect_chain == [(sqlite_backup.get_absolute_url(), 302)]
    assert (
        f"Backup #{sqlite_backup.pk} needs master key {sqlite_backup.key_id}, which is not in {key_dir}"
        in response.content.decode()
    )
    assert not AuditEvent.objects.filter(action="backup.download").exists()
    response = admin_client.post(reverse("backup_download_stored", args=[sqlite_backup.pk]))
    assert response.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(body(response))) as archive:
        assert len(archive.getnames()) == 2


def test_a_damaged_copy_is_not_sent_as_if_whole(admin_client, sqlite_backup, tmp_path):
    stored = stored_path(tmp_path, sqlite_backup)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte changed: only the SHA-256 at the end can tell
    stored.write_bytes(bytes(data))
    response = admin_client.post(reverse("backup_download_stored", args=[sqlite_backup.pk]))
    with pytest.raises(CorruptionError, match="SHA-256 is not the one recorded"):
        body(response)  # the download breaks off before the tar's end

    stored.write_bytes(bytes(data[:-100]))  # cut short: refused before the first byte, in words
    response = admin_client.post(reverse("backup_download_stored", args=[sqlite_backup.pk]), follow=True)
    assert (
        f"No stored copy of this backup can be read: Local disk: the object has {len(data) - 100} bytes; "
        f"{len(data)} were stored"
    ) in response.content.decode()


def test_administrators_see_the_buttons_and_auditors_are_refused(admin_client, auditor_client, sqlite_backup):
    page = admin_client.get(sqlite_backup.get_absolute_url()).content.decode()
    for name in ("backup_download", "backup_download_stored"):
        assert f'action="{reverse(name, args=[sqlite_backup.pk])}"' in page
    assert "Download dump" in page and "Download stored files" in page
    listing = admin_client.get(reverse("backup_list")).content.decode()
    assert f'action="{reverse("backup_download", args=[sqlite_backup.pk])}"' in listing and ">Dump</button>" in listing

    for url in (sqlite_backup.get_absolute_url(), reverse("backup_list")):
        page = auditor_client.get(url).content.decode()
        assert (
            f"/backups/{sqlite_backup.pk}/download/" not in page
            and "Download dump" not in page
            and ">Dump</button>" not in page
        )
    for name in ("backup_download", "backup_download_stored"):
        assert auditor_client.post(reverse(name, args=[sqlite_backup.pk])).status_code == 403
    assert not AuditEvent.objects.filter(action__startswith="backup.download").exists()


def test_a_pruned_backup_offers_no_download(admin_client, sqlite_backup):
    Backup.objects.filter(pk=sqlite_backup.pk).update(pruned_at=sqlite_backup.finished_at)
    sqlite_backup.copies.update(status="pruned")
    listing = admin_client.get(reverse("backup_list")).content.decode()
    assert f"/backups/{sqlite_backup.pk}/" in listing and f"/backups/{sqlite_backup.pk}/download/" not in listing
    response = admin_client.post(reverse("backup_download", args=[sqlite_backup.pk]), follow=True)
    assert "No stored copy of this backup can be read: none is left" in response.content.decode()

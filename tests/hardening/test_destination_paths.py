"""Local destinations stay inside LOCAL_DESTINATION_ROOTS, and nothing read,
written, deleted or downloaded through one reaches outside its directory:
not by `..`, an absolute key, a symlink inside it, nor a directory swapped
for a symlink after it was saved."""

import hashlib
import os

import pytest

from catalog import backup_runs, orphans, verification
from catalog.engine.errors import StorageError
from catalog.engine.storage.local import LocalStorage
from catalog.models import AuditEvent, Backup, Copy, Destination
from tests.factories import local_destination, make_plan, pg_source, s3_destination
from tests.harness.sample_db import create_tricky_database
from tests.support import files_under

SECRET = b"TOP-SECRET-OUTSIDE-THE-DESTINATION\n" * 20
ROOTS_MESSAGE = "is outside the directories local destinations may use"


@pytest.fixture
def layout(tmp_path, settings):
    """tmp/allowed (the only root), tmp/outside/secret.dump (must never be touched)."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (outside / "secret.dump").write_bytes(SECRET)
    settings.LOCAL_DESTINATION_ROOTS = [allowed]
    return {"allowed": allowed, "outside": outside, "secret": outside / "secret.dump"}


def untouched(layout):
    assert files_under(layout["outside"]) == ["secret.dump"]
    assert layout["secret"].read_bytes() == SECRET


# --- the engine ----------------------------------------------------------------------------------


def every_access(storage, key):
    """Each way the catalog touches a key: read, stream, head, size, exists, write, delete."""
    return {
        "get_bytes": lambda: storage.get_bytes(key),
        "open_reader": lambda: b"".join(storage.open_reader(key)),
        "read_head": lambda: storage.read_head(key, 16),
        "size": lambda: storage.size(key),
        "exists": lambda: storage.exists(key),
        "put_bytes": lambda: storage.put_bytes(key, b"overwritten"),
        "open_writer": lambda: storage.open_writer(key),
        "delete": lambda: storage.delete(key),
        "cleanup_partials": lambda: storage.cleanup_partials(key),
    }


def test_it_refuses_every_access_through_a_symlink_inside_the_destination(layout):
    disk = layout["allowed"] / "disk"
    disk.mkdir()
    (disk / "plan").mkdir()
    os.symlink(layout["outside"], disk / "plan" / "linked-dir")
    os.symlink(layout["secret"], disk / "linked-file.dump")
    storage = LocalStorage(disk, allowed_roots=[layout["allowed"]])

    for key in ("plan/linked-dir/secret.dump", "plan/linked-dir/new.dump", "linked-file.dump"):
        for name, access in every_access(storage, key).items():
            with pytest.raises(StorageError, match="a symlink leads it outside") as refused:
                access()
            assert str(layout["outside"]) not in str(refused.value), name  # where it leads is not told

    untouched(layout)
    assert os.path.islink(disk / "linked-file.dump") and os.path.islink(disk / "plan" / "linked-dir")
    storage.put_bytes("plan/fine.dump", b"ok")  # the rest of the destination still works
    assert storage.get_bytes("plan/fine.dump") == b"ok"


@pytest.mark.parametrize("key", ["../outside/secret.dump", "plan/../../outside/secret.dump", "/etc/passwd"])
def test_it_refuses_keys_with_dots_or_absolute_for_every_access(layout, key):
    disk = layout["allowed"] / "disk"
    storage = LocalStorage(disk, allowed_roots=[layout["allowed"]])
    for access in every_access(storage, key).values():
        with pytest.raises(StorageError, match="outside the destination"):
            access()
    untouched(layout)


def test_a_directory_swapped_for_a_symlink_or_reached_by_dots_is_refused_at_run_time(layout):
    disk = layout["allowed"] / "disk"
    storage = LocalStorage(disk, allowed_roots=[layout["allowed"]])
    storage.put_bytes("plan/one.dump", b"good")

    # Someone replaces the destination's directory by a symlink to elsewhere.
    disk.rename(layout["allowed"] / "moved")
    os.symlink(layout["outside"], disk)
    for name, access in {
        **every_access(storage, "secret.dump"),
        "list": storage.list_sizes,
        "probe": storage.probe,
    }.items():
        with pytest.raises(StorageError, match=ROOTS_MESSAGE) as refused:
            access()
        assert "LOCAL_DESTINATION_ROOTS" in str(refused.value) and str(layout["allowed"]) in str(refused.value), name
    untouched(layout)

    dotted = LocalStorage(f"{layout['allowed']}/../outside", allowed_roots=[layout["allowed"]])
    with pytest.raises(StorageError, match=ROOTS_MESSAGE):
        dotted.get_bytes("secret.dump")
    untouched(layout)


# --- the form ------------------------------------------------------------------------------------


with_db = pytest.mark.django_db(transaction=True)


def escaping_paths(layout):
    os.symlink(layout["outside"], layout["allowed"] / "link-out")
    return [
        "/etc/strongroom",
        f"{layout['allowed']}/../outside",
        f"{layout['allowed']}/link-out",  # a symlink inside the root that leads out
        f"{layout['allowed']}/link-out/deeper",
    ]


@pytest.mark.django_db
def test_the_form_refuses_a_path_outside_the_roots_and_names_them(admin_client, layout):
    for path in escaping_paths(layout):
        response = admin_client.post("/destinations/new/", {"name": "Escape", "kind": "local", "path": path})
        assert response.status_code == 200, path
        errors = response.context["form"].errors["path"]
        assert len(errors) == 1 and ROOTS_MESSAGE in errors[0], errors
        assert str(layout["allowed"]) in errors[0] and "LOCAL_DESTINATION_ROOTS" in errors[0]
        assert "LOCAL_DESTINATION_ROOTS" in response.content.decode()
    assert not Destination.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="destination.").exists()

    # The Test button probes nothing outside either.
    response = admin_client.post(
        "/destinations/test/", {"name": "Escape", "kind": "local", "path": str(layout["outside"])}
    )
    assert "✗" in response.content.decode()
    untouched(layout)

    inside = layout["allowed"] / "nightly"
    response = admin_client.post("/destinations/new/", {"name": "Inside", "kind": "local", "path": str(inside)})
    assert response.status_code == 302
    assert Destination.objects.get().path == str(inside)


@pytest.mark.django_db
def test_editing_a_destination_to_a_path_outside_is_refused_and_changes_nothing(admin_client, layout):
    destination = local_destination(layout["allowed"] / "disk")
    for path in escaping_paths(layout):
        response = admin_client.post(
            f"/destinations/{destination.pk}/edit/", {"name": destination.name, "kind": "local", "path": path}
        )
        assert response.status_code == 200 and ROOTS_MESSAGE in response.context["form"].errors["path"][0]
    destination.refresh_from_db()
    assert destination.path == str(layout["allowed"] / "disk")
    assert list(AuditEvent.objects.filter(action__startswith="destination.").values_list("action", flat=True)) == [
        "destination.create"
    ]


# --- backups, verification and downloads ---------------------------------------------------------


@pytest.fixture
def backup(layout, pg_database, s3_bucket):
    """A plain, uncompressed, unencrypted dump: had a download streamed another
    file, its bytes would be in the response as they are."""
    create_tricky_database(pg_database, big_rows=50)
    disk = local_destination(layout["allowed"] / "disk")
    plan = make_plan(
        pg_source(pg_database),
        [disk, s3_destination(s3_bucket)],
        format="plain",
        compression="none",
        encrypt=False,
        verify_new_backups=False,
    )
    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error
    return backup


def download(client, backup):
    response = client.post(f"/backups/{backup.pk}/download/", follow=True)
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return response, body


def escape_copies(backup, local_key, s3_key=None):
    local = backup.copies.get(destination__kind="local")
    Copy.objects.filter(pk=local.pk).update(key=local_key)
    if s3_key:
        Copy.objects.filter(backup=backup, destination__kind="s3").update(key=s3_key)


@with_db
def test_a_download_cannot_reach_a_file_outside_the_destination(admin_client, backup, layout):
    disk = layout["allowed"] / "disk"
    os.symlink(layout["secret"], disk / "evil.sql")
    os.symlink(layout["outside"], disk / "evil-dir")
    s3_key = backup.copies.get(destination__kind="s3").key
    ways = {
        "dots": "../../outside/secret.dump",
        "absolute": str(layout["secret"]),
        "symlinked file": "evil.sql",
        "symlinked directory": "evil-dir/secret.dump",
    }
    for how, key in ways.items():
        # Both copies point away: nothing may be streamed at all.
        escape_copies(backup, key, s3_key="../../outside/secret.dump")

        response, body = download(admin_client, backup)

        assert response.redirect_chain == [(backup.get_absolute_url(), 302)], how
        page = body.decode()
        assert "No stored copy of this backup can be read: Local disk: Refusing" in page, how
        assert "Off-site S3: Refusing an object key outside the destination" in page
        assert b"TOP-SECRET" not in body
    assert not AuditEvent.objects.filter(action="backup.download").exists()
    untouched(layout)

    # The planted symlink shows up as an orphan; removing it is refused and the file it leads to stays.
    local = Destination.objects.get(kind="local")
    planted = next(o for o in orphans.scan(local) if o.key == "evil.sql")
    response = admin_client.post(f"/destinations/{local.pk}/orphans/remove/", {"orphan": [planted.token]}, follow=True)
    page = response.content.decode()
    assert "Not removed: evil.sql: Refusing" in page and "a symlink leads it outside" in page
    assert AuditEvent.objects.get(action="destination.orphans_removed").changes["removed"] == []
    untouched(layout)

    # A refused copy is skipped for a good one.
    escape_copies(backup, "evil.sql", s3_key=s3_key)
    response, body = download(admin_client, backup)
    assert response.status_code == 200 and response.streaming
    assert hashlib.sha256(body).hexdigest() == backup.sha256  # plain and unencrypted: the stored bytes
    assert b"TOP-SECRET" not in body and b"CREATE TABLE" in body
    assert AuditEvent.objects.get(action="backup.download").changes["copy"].startswith("s3://")
    untouched(layout)


@with_db
def test_a_destination_swapped_for_a_symlink_fails_backups_verification_and_downloads(admin_client, backup, layout):
    disk = layout["allowed"] / "disk"
    stored = files_under(disk)
    disk.rename(layout["outside"] / "disk")
    os.symlink(layout["outside"] / "disk", disk)
    Copy.objects.filter(backup=backup, destination__kind="s3").delete()  # only the local copy is left
    before = {name: (layout["outside"] / "disk" / name).read_bytes() for name in stored}

    check = verification.create_verification("test", backup, "checksum")
    check.refresh_from_db()
    assert check.status == "failed"
    assert ROOTS_MESSAGE in check.summary and "LOCAL_DESTINATION_ROOTS" in check.summary

    response, body = download(admin_client, backup)
    assert response.redirect_chain and ROOTS_MESSAGE in body.decode() and b"CREATE TABLE" not in body
    scan = admin_client.post(f"/destinations/{backup.copies.get().destination_id}/scan/").content.decode()
    assert ROOTS_MESSAGE in scan and "secret.dump" not in scan

    again = backup_runs.start_backup("test", backup.plan)
    again.refresh_from_db()
    assert again.status == Backup.PARTIAL and ROOTS_MESSAGE in again.error, (again.status, again.error)
    assert {
        name: (layout["outside"] / "disk" / name).read_bytes() for name in files_under(layout["outside"] / "disk")
    } == before  # nothing written, nothing removed
    assert layout["secret"].read_bytes() == SECRET

"""An SFTP destination end to end, on a real OpenSSH server
(tests/harness/sftp.py): a real PostgreSQL database backed up (compressed and
encrypted) into a directory on the server, checked and restored from it; the
orphan scan, the catalog rebuild, retention and quotas acting on what is
really on the server's disk; the form's Test button; and the server's host
key, pinned on first use (audited), refused when it changes before anything
is sent, shown on the destination's page and forgotten there on purpose."""

import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from catalog import backup_runs, orphans, services, verification
from catalog.models import AuditEvent, Backup, Copy, Destination, Verification
from tests.factories import make_plan, pg_source
from tests.harness import pg
from tests.harness.sample_db import create_tricky_database, schema_dump, table_fingerprints
from tests.harness.sftp import TcpRelay, files_under
from tests.support import restore_now, sha256_file, wait_for

pytestmark = pytest.mark.django_db(transaction=True)
GB = 2**30
SECRET_NAMES = ("password", "private_key", "private_key_passphrase")


def sftp_destination(place, name="Off-site SFTP", **fields):
    """An off-site SFTP destination on a harness directory, its host key not pinned yet."""
    destination = Destination(
        name=name,
        kind="sftp",
        server=place["server"],
        server_port=place["server_port"],
        username=place["username"],
        path=place["path"],
        offsite=True,
        **fields,
    )
    secrets = {name: place[name] for name in SECRET_NAMES if place.get(name)}
    return services.save_destination("test", destination, secrets=secrets)


def stored_keys(backup):
    """The object, manifest and globals keys of a PostgreSQL backup."""
    return sorted(
        [backup.object_key, backup.object_key + ".manifest.json", backup.object_key + ".manifest.json.globals"]
    )


@pytest.fixture
def source(pg_database):
    create_tricky_database(pg_database, big_rows=2000)
    return pg_source(pg_database)


def run(plan):
    backup = backup_runs.start_backup("test", plan, trigger="schedule")
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error
    return backup


def pins(destination):
    return AuditEvent.objects.filter(action="destination.host_key_pin", object_id=str(destination.pk))


def test_a_backup_goes_to_sftp_pins_the_host_key_is_verified_and_restores_identical(
    source, sftp_server, sftp_password_dir, pg_database
):
    destination = sftp_destination(sftp_password_dir)
    assert destination.host_key == "" and destination.host_key_pinned_at is None
    plan = make_plan(
        source,
        [destination],
        compression="zstd",
        encrypt=True,
        verify_new_backups=False,
        retention_mode="last",
        keep_last=10,
    )

    backup = run(plan)

    copy = backup.copies.get()
    assert copy.status == Copy.DURABLE and backup.encrypted and backup.compression == "zstd"
    local = sftp_password_dir["local"]
    assert files_under(local) == stored_keys(backup)  # nothing partial left beside them
    assert sha256_file(local / copy.key) == backup.sha256 and (local / copy.key).stat().st_size == copy.size

    # The first connection pinned the key, once, audited, whatever the number of connections since.
    destination.refresh_from_db()
    assert destination.host_key == sftp_server.server.host_key_line() and destination.host_key_pinned_at
    [pin] = pins(destination)
    bits, digest, kind = sftp_server.server.fingerprint()
    assert pin.actor_label == "system" and pin.changes == {
        "server": f"127.0.0.1:{sftp_server.server.port}",
        "host_key": f"{bits} {digest} {kind}",
    }

    checksum = verification.create_verification("test", backup, Verification.CHECKSUM, enqueue_it=False)
    checksum = verification.run_here(checksum)
    assert checksum.status == Verification.PASSED, checksum.summary

    name = f"sr_sftp_{backup.pk}_{timezone.now():%H%M%S}"
    job = restore_now(backup, target="new", database=name)
    try:
        assert job.status == "succeeded", job.summary
        assert job.report["copy"] == "Off-site SFTP"
        restored = {**pg_database, "dbname": name}
        assert schema_dump(restored) == schema_dump(pg_database)
        assert table_fingerprints(restored) == table_fingerprints(pg_database)
    finally:
        pg.drop_database(name)
    assert pins(destination).count() == 1


def test_a_key_authenticated_destination_backs_up_too(source, sftp_key_dir):
    backup = run(make_plan(source, [sftp_destination(sftp_key_dir)], encrypt=True))
    assert files_under(sftp_key_dir["local"]) == stored_keys(backup)
    assert sha256_file(sftp_key_dir["local"] / backup.object_key) == backup.sha256


def test_the_orphan_scan_finds_and_removes_a_partial_and_an_unknown_object(
    source, sftp_server, sftp_password_dir, admin_client
):
    destination = sftp_destination(sftp_password_dir)
    backup = run(make_plan(source, [destination]))
    local = sftp_password_dir["local"]
    (local / "stray.dump").write_bytes(b"left by hand")
    (local / "nightly").mkdir()
    (local / "nightly" / "x.dump.zst.enc.partial-1a2b").write_bytes(b"y" * 100)  # a write killed midway
    sftp_server.chown(local)

    found = orphans.scan(destination)
    assert {(o.kind, o.key, o.size) for o in found} == {
        ("object", "stray.dump", 12),
        ("partial", "nightly/x.dump.zst.enc.partial-1a2b", 100),
    }
    page = admin_client.post(f"/destinations/{destination.pk}/scan/").content.decode()
    assert "2 items the catalog does not know" in page and "x.dump.zst.enc.partial-1a2b" in page

    response = admin_client.post(
        f"/destinations/{destination.pk}/orphans/remove/", {"orphan": [o.token for o in found]}
    )

    assert response.status_code == 302
    assert files_under(local) == stored_keys(backup)
    assert not (local / "nightly").exists()  # emptied, so removed
    assert orphans.scan(destination) == []


def test_the_catalog_comes_back_from_the_manifests_on_the_server(source, sftp_password_dir):
    backup = run(make_plan(source, [sftp_destination(sftp_password_dir)]))
    before = (backup.pk, backup.sha256, backup.object_key, backup.table_counts)

    call_command("flush", interactive=False, verbosity=0)  # the metadata database is lost
    sftp_destination(sftp_password_dir)
    out, err = StringIO(), StringIO()
    call_command("rebuild_catalog", stdout=out, stderr=err)

    assert err.getvalue() == ""
    assert "Off-site SFTP: 1 imported, 0 copies added, 0 already known, 0 refused" in out.getvalue()
    imported = Backup.objects.get()
    assert (imported.pk, imported.sha256, imported.object_key, imported.table_counts) == before
    assert imported.copies.get().status == Copy.DURABLE


def test_retention_removes_pruned_backups_from_the_server(source, sftp_password_dir):
    plan = make_plan(source, [sftp_destination(sftp_password_dir)], retention_mode="last", keep_last=1)

    first = run(plan)
    assert files_under(sftp_password_dir["local"]) == stored_keys(first)
    second = run(plan)  # retention runs after each good backup

    first.refresh_from_db()
    assert first.is_pruned() and first.copies.get().status == Copy.PRUNED
    assert files_under(sftp_password_dir["local"]) == stored_keys(second)


def test_a_quota_refuses_a_backup_up_front_and_stops_one_that_grows_past_it(source, sftp_password_dir):
    destination = sftp_destination(sftp_password_dir, quota_gb=1)
    plan = make_plan(source, [destination], retention_mode="last", keep_last=50)
    now = timezone.now()
    earlier = Backup.objects.create(
        source=plan.source, plan=plan, status=Backup.SUCCEEDED, format="custom", stored_bytes=GB, finished_at=now
    )
    Copy.objects.create(
        backup=earlier, destination=destination, key="old/1", size=GB - 1000, status=Copy.DURABLE, durable_at=now
    )

    refused = backup_runs.start_backup("test", plan)
    refused.refresh_from_db()
    assert refused.status == Backup.FAILED
    assert "Off-site SFTP would go over its quota" in refused.error

    Backup.objects.filter(pk=earlier.pk).update(stored_bytes=1)  # the last one was tiny: no refusal up front
    Copy.objects.filter(backup=earlier).update(size=GB - 20_000)
    stopped = backup_runs.start_backup("test", plan)
    stopped.refresh_from_db()
    assert stopped.status == Backup.FAILED
    assert "Off-site SFTP reached its quota of 1.0 GB; the copy was stopped and removed." in stopped.error
    assert files_under(sftp_password_dir["local"]) == []


def form_values(place, **changes):
    values = {
        "name": "SFTP",
        "kind": "sftp",
        "server": place["server"],
        "server_port": place["server_port"],
        "username": place["username"],
        "path": place["path"],
    }
    return {**values, **{name: place[name] for name in SECRET_NAMES if place.get(name)}, **changes}


def test_the_test_button_says_it_works_shows_the_key_it_saw_or_says_what_is_wrong(
    admin_client, sftp_server, sftp_password_dir, sftp_key_dir
):
    ok = admin_client.post("/destinations/test/", form_values(sftp_password_dir))
    with_key = admin_client.post("/destinations/test/", form_values(sftp_key_dir))
    wrong = admin_client.post("/destinations/test/", form_values(sftp_password_dir, password="Not-the-Pa55word"))
    missing = admin_client.post("/destinations/test/", form_values(sftp_password_dir, path="no-such-directory"))

    where = f"sftp://{sftp_server.user}@127.0.0.1:{sftp_server.server.port}"
    bits, digest, kind = sftp_server.server.fingerprint()
    assert f"Wrote, read and deleted a probe object in {where}/~/{sftp_password_dir['path']}" in text(ok)
    assert f"The server's host key is {bits} {digest} {kind}: compare it with ssh-keygen -l on the server." in text(ok)
    assert "It will be pinned on first use once the destination is saved." in text(ok)
    assert f"Wrote, read and deleted a probe object in {where}{sftp_key_dir['local']}" in text(with_key)
    assert f"refused the sign-in of user {sftp_server.user}: authentication failed" in text(wrong)
    assert "Not-the-Pa55word" not in wrong.content.decode()
    assert "The directory no-such-directory does not exist on SFTP server" in text(missing)
    assert files_under(sftp_password_dir["local"]) == [] and not Destination.objects.exists()
    assert not AuditEvent.objects.filter(action="destination.host_key_pin").exists()


def test_the_test_button_of_a_saved_destination_pins_its_key(admin_client, sftp_server, sftp_password_dir):
    destination = sftp_destination(sftp_password_dir)
    response = admin_client.post(
        "/destinations/test/", form_values(sftp_password_dir, name=destination.name, destination_id=destination.pk)
    )
    bits, digest, kind = sftp_server.server.fingerprint()
    assert f"Pinned the server's host key {bits} {digest} {kind}." in text(response)
    destination.refresh_from_db()
    assert destination.host_key == sftp_server.server.host_key_line() and pins(destination).count() == 1


@pytest.fixture
def relayed(sftp_server, sftp_password_dir):
    """The password directory reached through a relay, so another server can take the address."""
    relay = TcpRelay(sftp_server.server.port)
    yield relay, {**sftp_password_dir, "server_port": relay.port}
    relay.stop()


def test_a_changed_host_key_is_refused_in_words_until_it_is_forgotten_on_purpose(
    source, sftp_server, relayed, admin_client, auditor_client
):
    relay, place = relayed
    destination = sftp_destination(place)
    plan = make_plan(source, [destination], retention_mode="last", keep_last=10)
    first = run(plan)
    destination.refresh_from_db()
    old_key, pinned_at = destination.host_key, destination.host_key_pinned_at
    old_fingerprint = " ".join(sftp_server.server.fingerprint())

    page = visible(admin_client.get(f"/destinations/{destination.pk}/"))
    assert f"Host key {old_fingerprint} pinned {pinned_at:%b}" in page and "Forget the pinned host key" in page
    assert old_fingerprint in text(auditor_client.get(f"/destinations/{destination.pk}/"))
    assert "Forget the pinned host key" not in text(auditor_client.get(f"/destinations/{destination.pk}/"))

    # The server is re-keyed (another sshd with another key, the same user and home, at the same address).
    rekeyed = sftp_server.start_server("ed25519")
    relay.retarget(rekeyed.port)
    new_fingerprint = " ".join(rekeyed.fingerprint())
    refused = backup_runs.start_backup("test", plan)
    refused.refresh_from_db()

    assert refused.status == Backup.FAILED
    copy_error = refused.copies.get().error
    assert f"it offers {new_fingerprint}, but {old_fingerprint} is pinned for it" in copy_error
    assert "Nothing was sent to it" in copy_error
    assert files_under(place["local"]) == stored_keys(first)  # nothing written
    wait_for(lambda: "[preauth]" in rekeyed.log_text(), timeout=5)
    assert "Accepted" not in rekeyed.log_text() and "Failed" not in rekeyed.log_text()  # no password tried
    destination.refresh_from_db()
    assert (destination.host_key, destination.host_key_pinned_at) == (old_key, pinned_at)
    test = admin_client.post(
        "/destinations/test/", form_values(place, name=destination.name, destination_id=destination.pk)
    )
    assert f"it offers {new_fingerprint}, but {old_fingerprint} is pinned for it" in text(test)

    # An auditor cannot forget it; an administrator can, and that is audited.
    assert auditor_client.post(f"/destinations/{destination.pk}/host-key/forget/").status_code == 403
    response = admin_client.post(f"/destinations/{destination.pk}/host-key/forget/", follow=True)
    assert "Forgot the pinned host key of Off-site SFTP" in text(response)
    assert "Not pinned yet: the first connection pins the key the server offers." in text(response)
    forgotten = AuditEvent.objects.get(action="destination.host_key_forget")
    assert forgotten.actor_label == "alice" and forgotten.changes == {"host_key": old_fingerprint}

    # The next use pins the new key, audited, and goes on.
    second = run(plan)
    destination.refresh_from_db()
    assert destination.host_key == rekeyed.host_key_line() and pins(destination).count() == 2
    assert set(stored_keys(second)) <= set(files_under(place["local"]))
    assert "Accepted password" in rekeyed.log_text()


def test_forgetting_needs_a_pinned_key_and_moving_the_server_forgets_it(admin_client, sftp_password_dir):
    destination = sftp_destination(sftp_password_dir)
    response = admin_client.post(f"/destinations/{destination.pk}/host-key/forget/", follow=True)
    assert "Off-site SFTP has no pinned host key to forget." in text(response)
    assert not AuditEvent.objects.filter(action="destination.host_key_forget").exists()

    destination.storage().probe()  # pins it
    destination.refresh_from_db()
    assert destination.host_key
    destination.server = "localhost"
    services.save_destination("test", destination, changed_fields=["server"])
    destination.refresh_from_db()
    assert destination.host_key == "" and destination.host_key_pinned_at is None
    update = AuditEvent.objects.filter(action="destination.update").latest("id")
    assert update.changes == {"server": "localhost", "host_key": ""}


def text(response):
    return " ".join(response.content.decode().replace("&#x27;", "'").replace("&quot;", '"').split())


def visible(response):
    """The page's words without its markup."""
    return " ".join(re.sub(r"<[^>]+>", " ", response.content.decode()).split())

"""Registered restore servers: the pages that manage them (administrators
only, audited, the password kept and never shown), the connection check that
records the version, the wizard's and the command's choice of server, and the
rule that a server older than the backup's is refused with the reason."""

import html
import re
from io import StringIO

import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django.utils import timezone

from catalog import backup_runs, services
from catalog.engine.dumpers import major_version
from catalog.models import AuditEvent, Backup, RestoreServer
from catalog.services import Refused
from restore import services as restores
from restore.models import RestoreJob
from tests.factories import local_destination, make_plan, pg_source
from tests.harness import pg
from tests.harness.sample_db import table_fingerprints

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = pg.TEST_PASSWORD
OLDER = (
    "PostgreSQL 9.6 is older than the backup's 15: "
    "pg_restore output from a newer server is not guaranteed to load into an older one."
)


@pytest.fixture
def backup(source_db, tmp_path):
    plan = make_plan(pg_source(source_db), [local_destination(tmp_path / "disk")], verify_new_backups=False)
    backup = backup_runs.run_backup(backup_runs.create_backup("test", plan).pk)
    assert backup.status == Backup.SUCCEEDED, backup.error
    return backup


def form_data(server, **values):
    return {
        "name": "Standby",
        "host": server["host"],
        "port": server["port"],
        "user": server["user"],
        "password": PASSWORD,
        "sslmode": "",
        **values,
    }


def register(server, name="Standby", password=PASSWORD, check=True):
    standby = services.save_restore_server(
        "test",
        RestoreServer(name=name, host=server["host"], port=server["port"], user=server["user"]),
        secrets={"password": password},
    )
    if check:
        services.check_restore_server("test", standby)
        standby.refresh_from_db()
    return standby


def live_version(server):
    with psycopg.connect(**server, dbname="postgres") as conn:
        return conn.execute("SHOW server_version").fetchone()[0]


def events(action_prefix="restore_server."):
    return list(AuditEvent.objects.filter(action__startswith=action_prefix).order_by("id"))


def text_of(response):
    return html.unescape(response.content.decode())


# --- the pages -------------------------------------------------------------------


def test_it_registers_a_server_and_records_its_version(admin_client, password_server):
    response = admin_client.post(reverse("server_new"), form_data(password_server), follow=True)

    server = RestoreServer.objects.get()
    version = live_version(password_server)
    assert (server.name, server.host, server.port, server.user) == (
        "Standby",
        "127.0.0.1",
        password_server["port"],
        "postgres",
    )
    assert server.secrets() == {"password": PASSWORD}
    assert server.server_version == version and server.checked_at is not None
    page = text_of(response)
    assert f"Saved Standby. Connected: PostgreSQL {version.split()[0]}; role postgres can create databases." in page
    assert PASSWORD not in page and PASSWORD not in server.secret_token

    assert [e.action for e in events()] == ["restore_server.create", "restore_server.check"]
    assert events()[0].changes["password"] == "changed"
    assert events()[1].changes["server_version"] == version
    assert all(PASSWORD not in e.changes_display() for e in AuditEvent.objects.all())

    listing = text_of(admin_client.get(reverse("server_list")))
    for shown in ("Standby", f"postgres@127.0.0.1:{password_server['port']}", version.split()[0], "now"):
        assert shown in listing
    assert PASSWORD not in listing and PASSWORD not in text_of(admin_client.get(server.get_absolute_url()))


def test_editing_with_a_blank_password_keeps_the_stored_one(admin_client, password_server):
    server = register(password_server)
    edit_page = text_of(admin_client.get(reverse("server_edit", args=[server.pk])))
    assert PASSWORD not in edit_page and "Leave blank to keep the one that is stored." in edit_page

    response = admin_client.post(
        reverse("server_edit", args=[server.pk]), form_data(password_server, name="Standby B", password=""), follow=True
    )

    server.refresh_from_db()
    assert server.name == "Standby B" and server.secrets() == {"password": PASSWORD}
    assert "Saved Standby B. Connected" in text_of(response)  # the kept password still connects
    update = events()[-2]
    assert update.action == "restore_server.update" and update.changes == {"name": "Standby B"}


def test_moving_a_server_forgets_its_version_and_a_failed_check_says_why_without_the_password(
    admin_client, password_server
):
    server = register(password_server)
    wrong = "wrong-" + PASSWORD

    response = admin_client.post(
        reverse("server_edit", args=[server.pk]),
        form_data(password_server, port=pg.free_port(), password=wrong),
        follow=True,
    )

    server.refresh_from_db()
    assert server.server_version == "" and server.checked_at is None  # another address: the old version no longer holds
    assert f"Cannot reach the server at 127.0.0.1:{server.port} (connection refused)" in text_of(response)

    RestoreServer.objects.filter(pk=server.pk).update(port=password_server["port"])
    response = admin_client.post(reverse("server_check", args=[server.pk]), follow=True)

    page = text_of(response)
    assert "Standby: Password authentication failed for user postgres" in page
    assert wrong not in page and PASSWORD not in page
    server.refresh_from_db()
    assert server.server_version == "" and server.checked_at is None  # nothing recorded by a failed check
    assert all(wrong not in e.changes_display() for e in AuditEvent.objects.all())


def test_the_form_can_be_tested_before_it_is_saved(admin_client, password_server):
    response = admin_client.post(reverse("server_test"), form_data(password_server), HTTP_HX_REQUEST="true")

    assert "✓ Connected: PostgreSQL" in text_of(response)
    assert not RestoreServer.objects.exists()

    server = register(password_server, check=False)
    kept = admin_client.post(
        reverse("server_test"), {**form_data(password_server, password=""), "server_id": server.pk}
    )
    assert "✓ Connected" in text_of(kept)  # blank: the stored password
    wrong = admin_client.post(
        reverse("server_test"), {**form_data(password_server, password="nope-" + PASSWORD), "server_id": server.pk}
    )
    assert "✗ Password authentication failed for user postgres" in text_of(wrong)
    assert PASSWORD not in text_of(wrong)


def test_a_server_that_restores_go_to_cannot_be_deleted(admin_client, backup, password_server):
    server = register(password_server)
    job = restores.request_restore(
        "test", backup, target="new", database="never_run", restore_server=server, enqueue=False
    )

    response = admin_client.post(reverse("server_delete", args=[server.pk]), follow=True)

    assert f"Standby is the target of Restore #{job.pk} of backup #{backup.pk} (queued)" in text_of(response)
    assert RestoreServer.objects.filter(pk=server.pk).exists()
    assert not AuditEvent.objects.filter(action="restore_server.delete").exists()

    RestoreJob.objects.filter(pk=job.pk).update(status=RestoreJob.SUCCEEDED)
    response = admin_client.post(reverse("server_delete", args=[server.pk]), follow=True)
    assert "Standby cannot be deleted: 1 finished restore went to it" in text_of(response)
    assert RestoreServer.objects.filter(pk=server.pk).exists()

    RestoreJob.objects.filter(pk=job.pk).delete()
    admin_client.post(reverse("server_delete", args=[server.pk]))
    assert not RestoreServer.objects.exists()
    deleted = AuditEvent.objects.get(action="restore_server.delete")
    assert deleted.changes == {"name": "Standby"} and deleted.actor_label == "alice"


def test_only_administrators_change_servers(auditor_client, password_server):
    server = register(password_server, check=False)
    before = events()

    assert auditor_client.get(reverse("server_list")).status_code == 200
    assert "Test connection" not in text_of(auditor_client.get(reverse("server_list")))
    for url in (
        reverse("server_new"),
        reverse("server_edit", args=[server.pk]),
        reverse("server_delete", args=[server.pk]),
        reverse("server_check", args=[server.pk]),
        reverse("server_test"),
    ):
        assert auditor_client.post(url, form_data(password_server, name="Hijacked")).status_code == 403, url

    assert list(RestoreServer.objects.values_list("name", "checked_at")) == [("Standby", None)]
    assert events() == before


# --- the wizard ------------------------------------------------------------------------


def where_step(client, backup):
    client.get(reverse("restore_start") + f"?backup={backup.pk}")
    return reverse("restore_step", args=["where"])


def test_the_wizard_offers_each_server_with_its_version_and_refuses_an_older_one(admin_client, backup, password_server):
    standby = register(password_server)
    # Checked when it still ran 9.6: the wizard judges by the recorded version.
    old = RestoreServer.objects.create(
        name="Old reporting",
        host="127.0.0.1",
        port=pg.free_port(),
        user="postgres",
        server_version="9.6.24",
        checked_at=timezone.now(),
    )
    unchecked = RestoreServer.objects.create(name="Unchecked", host="127.0.0.1", port=1, user="postgres")
    url = where_step(admin_client, backup)

    page = text_of(admin_client.get(url))

    assert f"The backup was taken on PostgreSQL {major_version(backup.server_version)}" in page
    radios = dict(re.findall(r'<input type="radio" name="restore_server" value="(\d*)" ([^>]*)>', page))
    assert radios[""].strip() == "checked"  # the source's server, by default
    assert "disabled" not in radios[str(standby.pk)] and "disabled" not in radios[str(unchecked.pk)]
    assert radios[str(old.pk)].strip() == "disabled"
    card = {
        server.pk: re.search(rf'id="server-{server.pk}".*?</label>', page, re.S).group(0)
        for server in (standby, old, unchecked)
    }
    assert f"PostgreSQL {standby.version_display()}" in card[standby.pk] and "can take this backup" in card[standby.pk]
    assert "PostgreSQL 9.6.24" in card[old.pk] and "cannot take this backup" in card[old.pk] and OLDER in card[old.pk]
    assert "version not checked" in card[unchecked.pk]

    response = admin_client.post(url, {"target": "new", "database": "old_copy", "restore_server": old.pk}, follow=True)

    assert response.redirect_chain == []  # still on this step
    assert f"Old reporting cannot take this backup: {OLDER}" in text_of(response)
    assert admin_client.session["restore_wizard"].get("restore_server") is None


def test_the_wizard_restores_onto_a_registered_server(admin_client, backup, source_db, password_server):
    standby = register(password_server)
    url = where_step(admin_client, backup)
    at_backup = table_fingerprints(source_db)

    response = admin_client.post(url, {"target": "new", "database": "wizard_elsewhere", "restore_server": standby.pk})
    assert response.url == reverse("restore_step", args=["scope"])
    admin_client.post(reverse("restore_step", args=["scope"]), {"scope": "all"})
    review = text_of(admin_client.get(reverse("restore_step", args=["review"])))
    assert "into a new database `wizard_elsewhere` on server Standby." in review
    admin_client.post(reverse("restore_step", args=["review"]), {})

    job = RestoreJob.objects.get()
    if job.status == RestoreJob.QUEUED:  # the queue ran it already if the test settings run tasks inline
        job = restores.run_restore(job.pk)
    job.refresh_from_db()
    try:
        assert job.restore_server == standby and job.status == RestoreJob.SUCCEEDED, job.summary
        assert table_fingerprints({**password_server, "dbname": "wizard_elsewhere"}) == at_backup
        with psycopg.connect(**pg.ensure_server(), dbname="postgres") as conn:  # not on the source's server
            assert not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'wizard_elsewhere'").fetchone()
        assert PASSWORD not in str(job.report) + job.log + str(job.steps) + job.summary
    finally:
        with psycopg.connect(**password_server, dbname="postgres", autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS wizard_elsewhere")


def test_a_request_asks_the_server_itself_and_refuses_one_older_than_the_backup(backup, password_server):
    """The recorded version can be stale (or never checked): the request asks
    the server, here a real 15 against a backup as if taken on 99."""
    standby = register(password_server, check=False)
    Backup.objects.filter(pk=backup.pk).update(server_version="99.1")
    backup.refresh_from_db()
    live = major_version(live_version(password_server))
    reason = (
        f"Standby cannot take this backup: PostgreSQL {live} is older than the backup's 99: pg_restore output "
        "from a newer server is not guaranteed to load into an older one."
    )

    with pytest.raises(Refused) as refused:
        restores.request_restore("test", backup, target="new", database="too_new", restore_server=standby)
    assert str(refused.value) == reason
    with pytest.raises(CommandError) as failed:
        call_command(
            "restore", "--backup", str(backup.pk), "--new-database", "too_new", "--server", "Standby", stdout=StringIO()
        )
    assert str(failed.value) == reason

    assert not RestoreJob.objects.exists()
    with psycopg.connect(**password_server, dbname="postgres") as conn:
        assert not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'too_new'").fetchone()


# --- the command ----------------------------------------------------------------------


def test_the_command_names_the_registered_servers_when_one_is_unknown(backup, password_server):
    register(password_server, name="Standby", check=False)
    register(password_server, name="Reporting", check=False)

    with pytest.raises(CommandError) as unknown:
        call_command(
            "restore", "--backup", str(backup.pk), "--new-database", "x", "--server", "Stanby", stdout=StringIO()
        )
    assert str(unknown.value) == "No restore server named 'Stanby'. Registered servers: Reporting, Standby."

    with pytest.raises(
        CommandError, match="The existing database is on the source's server; another server takes new databases only."
    ):
        call_command(
            "restore",
            "--backup",
            str(backup.pk),
            "--into-source",
            "--mode",
            "preview",
            "--server",
            "Standby",
            stdout=StringIO(),
        )
    assert not RestoreJob.objects.exists()

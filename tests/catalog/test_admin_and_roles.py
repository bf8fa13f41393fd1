"""The Django admin as a superuser finds it (its heading, its names, the
records it shows read-only), and what a signed-in user with no role sees."""

import pytest
from django.contrib.auth.models import User
from django.test import Client

from catalog.alerts.models import Channel, Notification
from catalog.models import Backup, BackupPlan, Copy, Destination, Verification
from restore.models import RestoreJob
from tests.catalog.alerts.channel_helpers import make_channel, open_alert

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser_client(db):
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.org", "correct horse battery"))
    return client


@pytest.fixture
def records(tmp_path):
    alert = open_alert(title="Walk DB is down")
    source = alert.source
    destination = Destination.objects.create(name="Local disk", kind="local", path=str(tmp_path))
    plan = BackupPlan.objects.create(name="Nightly", source=source, format="sqlite")
    backup = Backup.objects.create(
        source=source, plan=plan, format="sqlite", compression="zstd", status=Backup.SUCCEEDED
    )
    Copy.objects.create(backup=backup, destination=destination, status=Copy.DURABLE, key="walk/1")
    verification = Verification.objects.create(
        backup=backup, source=source, kind="checksum", status="passed", summary="Every copy matches its checksum."
    )
    restore = RestoreJob.objects.create(
        backup=backup, source=source, target_database="walk_restored", status="succeeded", summary="Restored 3 tables."
    )
    channel = make_channel(Channel.SLACK, name="Ops Slack", secrets={"url": "https://hooks.slack.example/T0/B0/s3cr3t"})
    notification = Notification.objects.create(
        channel=channel, alert=alert, event=Notification.OPENED, status=Notification.SENT, attempts=1
    )
    return {
        "alert": alert,
        "channel": channel,
        "notification": notification,
        "verification": verification,
        "restore": restore,
    }


def test_it_heads_the_admin_with_the_product_and_spells_plurals_right(superuser_client, records):
    page = superuser_client.get("/admin/").content.decode()
    assert "Strongroom administration" in page
    assert "Django administration" not in page
    assert ">Copies<" in page and "Copys" not in page
    assert ">API tokens<" in page and "Api tokens" not in page


@pytest.mark.parametrize(
    "model, record",
    [
        ("catalog/alert", "alert"),
        ("catalog/channel", "channel"),
        ("catalog/notification", "notification"),
        ("catalog/verification", "verification"),
        ("restore/restorejob", "restore"),
    ],
)
def test_it_shows_monitoring_verifications_and_restores_read_only(superuser_client, records, model, record):
    obj = records[record]
    listing = superuser_client.get(f"/admin/{model}/")
    assert listing.status_code == 200
    assert f"/admin/{model}/{obj.pk}/change/" in listing.content.decode()
    page = superuser_client.get(f"/admin/{model}/{obj.pk}/change/")
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()  # a view page: nothing to save
    assert superuser_client.get(f"/admin/{model}/add/").status_code == 403
    assert superuser_client.post(f"/admin/{model}/{obj.pk}/delete/", {"post": "yes"}).status_code == 403
    assert type(obj).objects.filter(pk=obj.pk).exists()


def test_it_never_shows_a_channels_sealed_secret_in_the_admin(superuser_client, records):
    channel = records["channel"]
    page = superuser_client.get(f"/admin/catalog/channel/{channel.pk}/change/").content.decode()
    assert "Ops Slack" in page
    assert channel.secret_token not in page and "s3cr3t" not in page


def test_a_user_without_a_role_is_told_they_have_no_access(db):
    nobody = User.objects.create_user("newcomer", "newcomer@example.org", "correct horse battery")
    client = Client()
    client.force_login(nobody)
    for path in ("/", "/backups/", "/sources/"):
        response = client.get(path)
        assert response.status_code == 403
        page = response.content.decode()
        assert "no access" in page.lower()
        assert "Administrators" in page and "Auditors" in page  # what an administrator adds them to
        assert "auditor" not in page.replace("Auditors", "")  # not marked as an auditor anywhere
        assert 'href="/backups/"' not in page  # no menu of pages that all refuse them
        assert "Log out" in page


def test_an_auditor_is_still_marked_as_one_and_refused_changes_in_words(auditor_client, admin_client):
    page = auditor_client.get("/").content.decode()
    assert "audrey · auditor" in page
    refused = auditor_client.get("/sources/new/")
    assert refused.status_code == 403
    assert "can look but not change" in refused.content.decode()
    assert "· auditor" not in admin_client.get("/").content.decode()

"""No secret in a page, log, error, manifest, audit event or task argument.

One successful encrypted backup from a password-protected server to local
disk and S3, then every place a secret could leak is searched for it."""

import logging
import uuid

import pytest
from django_q.models import OrmQ, Schedule, Task

from catalog import backup_runs
from catalog.models import AuditEvent, Backup, Copy
from tests.factories import local_destination, make_plan, pg_source, s3_destination
from tests.harness import pg, s3

pytestmark = pytest.mark.django_db(transaction=True)

S3_SECRET = "S3-secret-" + uuid.uuid4().hex


def pages_of(backup):
    plan, source = backup.plan, backup.plan.source
    urls = [
        "/",
        "/sources/",
        "/destinations/",
        "/plans/",
        "/backups/",
        "/audit/",
        backup.get_absolute_url(),
        source.get_absolute_url(),
        f"/sources/{source.pk}/edit/",
        plan.get_absolute_url(),
        f"/plans/{plan.pk}/edit/",
        "/admin/catalog/source/",
        f"/admin/catalog/source/{source.pk}/change/",
        f"/admin/catalog/backup/{backup.pk}/change/",
        "/admin/catalog/auditevent/",
        "/admin/django_q/success/",
        "/admin/django_q/schedule/",
    ]
    for destination in plan.destinations.all():
        urls += [
            destination.get_absolute_url(),
            f"/destinations/{destination.pk}/edit/",
            f"/admin/catalog/destination/{destination.pk}/change/",
        ]
    return urls


def test_no_secret_leaks_anywhere(password_server, s3_bucket, tmp_path, caplog, admin_client, admin_user):
    caplog.set_level(logging.DEBUG)
    admin_user.is_staff = admin_user.is_superuser = True  # to read the django-q admin pages too
    admin_user.save()
    source = pg_source({**password_server, "dbname": "postgres"}, password=pg.TEST_PASSWORD)
    bucket = {**s3_bucket, "secret_access_key": S3_SECRET}
    plan = make_plan(source, [local_destination(tmp_path), s3_destination(bucket)], encrypt=True)

    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error
    assert backup.copies.filter(status=Copy.DURABLE).count() == 2

    manifests = [p.read_text() for p in tmp_path.rglob("*.manifest.json")]
    client = s3.client(s3_bucket["endpoint_url"])
    manifests += [
        client.get_object(Bucket=s3_bucket["bucket"], Key=key)["Body"].read().decode()
        for key in s3.all_keys(s3_bucket["endpoint_url"], s3_bucket["bucket"])
        if key.endswith(".manifest.json")
    ]
    assert len(manifests) == 2
    pages = []
    for url in pages_of(backup):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        pages.append(response.content.decode())

    places = {
        "log records": caplog.text,
        "job log": backup.log + backup.error,
        "manifests": "".join(manifests),
        "audit events": str(list(AuditEvent.objects.values())),
        "task arguments": str(list(Task.objects.values()))
        + str(list(OrmQ.objects.values()))
        + str(list(Schedule.objects.values())),
        "pages": "".join(pages),
    }
    for secret in (pg.TEST_PASSWORD, S3_SECRET):
        assert [place for place, text in places.items() if secret in text] == []

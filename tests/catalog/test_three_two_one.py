"""3-2-1 at a glance: judged on the latest backup's durable copies."""

import uuid

import pytest

from catalog import backup_runs
from catalog.models import Destination, three_two_one_missing
from tests.factories import local_destination, make_plan, pg_source, s3_destination
from tests.harness.sample_db import create_tricky_database

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def source(pg_database):
    create_tricky_database(pg_database, big_rows=20)
    return pg_source(pg_database)


def test_local_only_says_everything_that_is_missing(source, tmp_path, admin_client):
    plan = make_plan(source, [local_destination(tmp_path)])
    assert plan.three_two_one()["missing"] == [
        "a second copy (only 1)",
        "a second kind of storage or provider (e.g. local disk and S3, or S3 and Azure)",
        "an off-site copy",
    ]
    page = admin_client.get(plan.get_absolute_url()).content.decode()
    assert "3-2-1 ✗" in page and "(as configured; no backup yet)" in page


def test_disk_plus_offsite_s3_meets_the_rule_once_both_copies_are_durable(source, tmp_path, s3_bucket, admin_client):
    plan = make_plan(source, [local_destination(tmp_path), s3_destination(s3_bucket)])
    backup_runs.start_backup("test", plan)

    rule = plan.three_two_one()
    assert rule["ok"] and rule["backup"] is not None
    assert "3-2-1 ✓" in admin_client.get("/plans/").content.decode()


def test_a_partial_backup_is_judged_on_the_copies_it_really_has(source, tmp_path, s3_bucket):
    broken = s3_destination({**s3_bucket, "bucket": "missing-" + uuid.uuid4().hex[:6]})
    plan = make_plan(source, [local_destination(tmp_path), broken])
    backup_runs.start_backup("test", plan)

    rule = plan.three_two_one()
    assert not rule["ok"] and rule["backup"].status == "partial"
    assert "an off-site copy" in rule["missing"] and "a second copy (only 1)" in rule["missing"]


def judged(*destinations):
    return three_two_one_missing(list(destinations))


def test_two_cloud_providers_count_as_two_kinds_and_one_of_them_off_site():
    s3 = Destination(name="a", kind="s3", bucket="b")
    azure = Destination(name="b", kind="azure", bucket="c", account_name="acct")
    assert judged(s3, azure) == []
    gcs = Destination(name="c", kind="gcs", bucket="b")
    assert judged(gcs, azure) == []


def test_two_buckets_with_one_provider_are_one_kind_and_not_off_site_by_themselves():
    first = Destination(name="a", kind="s3", bucket="one")
    second = Destination(name="b", kind="s3", bucket="two")
    assert judged(first, second) == [
        "a second kind of storage or provider (e.g. local disk and S3, or S3 and Azure)",
        "an off-site copy",
    ]
    # An S3-compatible endpoint elsewhere (MinIO, R2) is another provider.
    minio = Destination(name="c", kind="s3", bucket="b", endpoint_url="https://minio.example.org:9000")
    assert judged(first, minio) == []


def test_local_disk_and_sftp_need_the_sftp_server_marked_off_site():
    disk = Destination(name="a", kind="local", path="/srv/backups")
    sftp = Destination(name="b", kind="sftp", server="vault.example.org", username="u")
    assert judged(disk, sftp) == ["an off-site copy"]
    sftp.offsite = True
    assert judged(disk, sftp) == []
    # Local folders on two hosts' disks are still this site's disks.
    other_disk = Destination(name="c", kind="local", path="/srv/more", host="b", offsite=True)
    assert judged(disk, other_disk) == [
        "a second kind of storage or provider (e.g. local disk and S3, or S3 and Azure)"
    ]

"""3-2-1 at a glance: judged on the latest backup's durable copies."""

import uuid

import pytest

from catalog import backup_runs
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
        "a second kind of storage (local disk and S3)",
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

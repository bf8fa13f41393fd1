"""Drills of a MariaDB source against the session's real MariaDB server: a
full drill is a timed test restore, a partial drill restores the largest and
the smallest table into a scratch database; neither leaves one behind."""

import pytest

from catalog.engine import restorers
from drills import services as drills
from drills.models import Drill
from restore.models import RestoreJob
from tests.factories import mariadb_backup
from tests.harness.mariadb_sample import sample_database

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def backup(mariadb_server, tmp_path):
    with sample_database(mariadb_server, prefix="sr_drilled") as name:
        yield mariadb_backup(mariadb_server, name, tmp_path / "disk")


def scratch_databases(server):
    with server.connect() as conn, conn.cursor() as cursor:
        cursor.execute("SHOW DATABASES LIKE %s", [restorers.SCRATCH_PREFIX.replace("_", "\\_") + "%"])
        return [row[0] for row in cursor.fetchall()]


def test_a_full_drill_and_a_partial_drill_restore_into_scratch_databases_that_are_dropped(mariadb_server, backup):
    source = backup.source

    full = drills.create_drill("test", source, Drill.FULL)
    partial = drills.create_drill("test", source, Drill.PARTIAL)

    full.refresh_from_db()
    partial.refresh_from_db()
    assert full.status == Drill.PASSED, full.summary
    assert "Full restore of backup" in full.summary and full.verification.status == "passed"
    assert partial.status == Drill.PASSED, partial.summary
    job = partial.restore_job
    assert job.status == RestoreJob.SUCCEEDED and job.tables == ["language", "salaries"]
    assert job.report["row_counts"] == {
        "language": {"backup": 6, "restored": 6},
        "salaries": {"backup": 5030, "restored": 5030},
    }
    assert "scratch dropped" in partial.summary
    assert scratch_databases(mariadb_server) == []

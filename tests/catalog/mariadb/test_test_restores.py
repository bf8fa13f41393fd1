"""Test restores of MariaDB backups against the session's real MariaDB
server: the backup restored into a scratch database on the source's server,
every table's COUNT(*) compared exactly with the recorded counts and the
views, triggers, routines and events with the dump's, the scratch database
dropped whatever happens, by the sweep too."""

import pytest

from catalog import verification
from catalog.engine import mariadb_restore, restorers
from catalog.models import Verification
from tests.factories import mariadb_backup
from tests.harness.mariadb_sample import sample_database, table_counts

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def sample(mariadb_server):
    with sample_database(mariadb_server, prefix="sr_verified") as name:
        yield name


@pytest.fixture
def backup(mariadb_server, sample, tmp_path):
    return mariadb_backup(mariadb_server, sample, tmp_path / "disk")


def scratch_databases(server):
    """Scratch databases still on the server (only this module's tests use it meanwhile)."""
    with server.connect() as conn, conn.cursor() as cursor:
        cursor.execute("SHOW DATABASES LIKE %s", [restorers.SCRATCH_PREFIX.replace("_", "\\_") + "%"])
        return [row[0] for row in cursor.fetchall()]


def run_test_restore(backup):
    check = verification.create_verification("test", backup, Verification.RESTORE, enqueue_it=False)
    return verification.run_here(check)


def test_a_test_restore_passes_with_every_count_exact_and_drops_its_scratch_database(mariadb_server, sample, backup):
    check = run_test_restore(backup)

    assert check.status == "passed", check.summary
    with mariadb_server.connect() as conn:
        assert check.evidence["rows"] == table_counts(conn, sample) == backup.table_counts
    assert (
        check.evidence["table_of_contents"]
        == check.evidence["schema_objects"]
        == {
            "tables": 14,
            "views": 2,
            "triggers": 4,
            "routines": 2,
            "events": 1,
        }
    )
    assert check.evidence["scratch_database"].startswith(restorers.SCRATCH_PREFIX)
    assert check.evidence["scratch_dropped"] is True and check.evidence["definers_kept"] is True
    assert check.summary.startswith("Restored from Local disk in ")
    total = sum(backup.table_counts.values())
    assert f"14 tables, {total} rows match the backup's snapshot exactly" in check.summary
    assert scratch_databases(mariadb_server) == []


def test_a_recorded_count_that_differs_fails_the_test_restore_naming_the_table(mariadb_server, backup):
    backup.table_counts = {**backup.table_counts, "order lines": 296}
    backup.save(update_fields=["table_counts"])

    check = run_test_restore(backup)

    assert check.status == "failed"
    assert check.summary.endswith("Restored, but it differs: order lines: 295 rows, 296 recorded")
    assert check.evidence["scratch_dropped"] is True
    assert scratch_databases(mariadb_server) == []


def test_the_sweep_drops_a_dead_worker_s_scratch_database(mariadb_server, backup):
    check = verification.create_verification("test", backup, Verification.RESTORE, enqueue_it=False)
    name = restorers.scratch_name(backup.pk)
    mariadb_server.create_database(name)  # as the dead worker left it
    Verification.objects.filter(pk=check.pk).update(
        status="running", heartbeat_at="2000-01-01T00:00:00Z", evidence={"scratch_database": name}
    )

    assert verification.sweep_stale_verifications() == [check.pk]

    assert not mariadb_restore.database_exists({**mariadb_server.info(), "dbname": ""}, name)

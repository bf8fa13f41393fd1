"""The Django-free restore engine against real clusters: a source archiving
WAL with cp, a base backup taken by pg_basebackup, restores to a moment,
to a restore point and to the end of the WAL."""

import os
import subprocess
import tempfile
import time
from datetime import UTC, datetime

import psycopg
import pytest

from catalog.engine import pitr
from tests.harness.pg import Cluster, as_user, free_port, pg_bin

pytestmark = pytest.mark.slow


@pytest.fixture
def archiving_cluster():
    archive = tempfile.mkdtemp(prefix="strongroom-archive-")
    cluster = Cluster(
        settings={"archive_mode": "on", "archive_command": f"'cp %p {archive}/%f'"}, initdb_args=("--wal-segsize=1",)
    )
    pitr.give_to(archive, cluster.os_user)
    cluster.archive = archive
    yield cluster
    cluster.stop()
    subprocess.run(["rm", "-rf", archive])


@pytest.fixture
def restore_dirs():
    """Target directories of restores; every server started in one is stopped."""
    root = tempfile.mkdtemp(prefix="strongroom-restore-")
    os.chmod(root, 0o755)  # the restored server's OS user must reach its directory
    made = []

    def make(name):
        made.append(os.path.join(root, name))
        return made[-1]

    yield make
    for datadir in made:
        pitr.stop(pg_bin("pg_ctl"), datadir, owner(), remove=True, mode="immediate")
    subprocess.run(["rm", "-rf", root])


def owner():
    return "postgres" if os.geteuid() == 0 else pitr.current_user()


def base_backup_chunks(cluster):
    argv = [
        pg_bin("pg_basebackup"),
        "-h",
        "127.0.0.1",
        "-p",
        str(cluster.port),
        "-U",
        "postgres",
        "-D",
        "-",
        "-Ft",
        "-X",
        "none",
        "-c",
        "fast",
    ]
    process = subprocess.Popen(as_user(argv, cluster.os_user), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while chunk := process.stdout.read(1 << 16):
        yield chunk
    assert process.wait() == 0, process.stderr.read()


def execute(server, statement, dbname="postgres"):
    with psycopg.connect(**server, dbname=dbname, autocommit=True) as conn:
        result = conn.execute(statement)
        return result.fetchall() if result.description else None


def insert_batch(server, batch):
    execute(server, f"INSERT INTO items (batch) SELECT {batch} FROM generate_series(1, 10)")
    time.sleep(1.2)


def restore(cluster, datadir, target):
    os_user = cluster.os_user
    pitr.make_data_directory(datadir, os_user)
    pitr.extract_tar_stream(base_backup_chunks.saved, datadir, os_user)
    port = free_port()
    pitr.write_recovery_settings(
        datadir, os_user, restore_command=f"cp {cluster.archive}/%f %p", target=target, port=port
    )
    pitr.start(pg_bin("pg_ctl"), datadir, os_user)
    log = pitr.wait_until_promoted(pg_bin("pg_ctl"), datadir, os_user, timeout=120)
    return {"host": "localhost", "port": port, "user": "postgres"}, log


def test_it_restores_to_a_moment_a_restore_point_and_the_latest(archiving_cluster, restore_dirs):
    server = archiving_cluster.server
    execute(server, "CREATE TABLE items (id serial PRIMARY KEY, batch int NOT NULL)")
    insert_batch(server, 1)
    base_backup_chunks.saved = list(base_backup_chunks(archiving_cluster))
    before_batch_2 = datetime.now(UTC)
    insert_batch(server, 2)
    between = datetime.now(UTC)
    time.sleep(1.2)
    insert_batch(server, 3)
    execute(server, "SELECT pg_create_restore_point('before-batch-4')")
    insert_batch(server, 4)
    execute(server, "SELECT pg_switch_wal()")
    time.sleep(1.5)  # the archiver copies the switched segment

    restored, log = restore(archiving_cluster, restore_dirs("moment"), pitr.RecoveryTarget("time", time=between))
    assert execute(restored, "SELECT DISTINCT batch FROM items ORDER BY 1") == [(1,), (2,)]
    recovered = pitr.recovered_time(log)
    assert recovered is not None and before_batch_2 <= recovered <= between  # batch 2's commit
    assert "recovery stopping before commit" in pitr.stop_point(log)
    assert execute(restored, "SELECT pg_is_in_recovery()") == [(False,)]

    restored, log = restore(
        archiving_cluster, restore_dirs("named"), pitr.RecoveryTarget("restore_point", name="before-batch-4")
    )
    assert execute(restored, "SELECT DISTINCT batch FROM items ORDER BY 1") == [(1,), (2,), (3,)]

    restored, log = restore(archiving_cluster, restore_dirs("latest"), pitr.RecoveryTarget("latest"))
    assert execute(restored, "SELECT DISTINCT batch FROM items ORDER BY 1") == [(1,), (2,), (3,), (4,)]
    assert pitr.recovered_time(log) > between


def test_it_reports_why_recovery_failed(archiving_cluster, restore_dirs):
    server = archiving_cluster.server
    execute(server, "CREATE TABLE items (id serial PRIMARY KEY, batch int NOT NULL)")
    base_backup_chunks.saved = list(base_backup_chunks(archiving_cluster))
    datadir = restore_dirs("broken")
    os_user = archiving_cluster.os_user
    pitr.make_data_directory(datadir, os_user)
    pitr.extract_tar_stream(base_backup_chunks.saved, datadir, os_user)
    # No WAL at all: the base backup can never become consistent.
    pitr.write_recovery_settings(
        datadir, os_user, restore_command="false", target=pitr.RecoveryTarget("latest"), port=free_port()
    )
    pitr.start(pg_bin("pg_ctl"), datadir, os_user)
    with pytest.raises(pitr.RecoveryError) as failure:
        pitr.wait_until_promoted(pg_bin("pg_ctl"), datadir, os_user, timeout=60)
    assert "Recovery failed" in str(failure.value)
    assert not pitr.is_running(pg_bin("pg_ctl"), datadir, os_user)


def test_it_refuses_target_directories_that_are_unsafe(tmp_path):
    root = tmp_path / "restores"
    root.mkdir()
    (root / "full").mkdir()
    (root / "full" / "PG_VERSION").write_text("15")
    assert "absolute" in pitr.check_target_directory("relative/dir", str(root))
    assert "under" in pitr.check_target_directory("/etc/postgresql", str(root))
    assert "not empty" in pitr.check_target_directory(str(root / "full"), str(root))
    assert pitr.check_target_directory(str(root / "new"), str(root)) is None


def test_it_parses_the_recovered_time_from_the_log():
    log = (
        "2026-11-26 04:40:01.000 UTC [1] LOG:  recovery stopping before commit of transaction 744, "
        "time 2026-11-26 04:40:00.5+00\n"
        "2026-11-26 04:40:01.000 UTC [1] LOG:  last completed transaction was at log time "
        "2026-11-26 04:39:59.123456+00\n"
    )
    assert pitr.recovered_time(log) == datetime(2026, 11, 26, 4, 39, 59, 123456, tzinfo=UTC)
    assert pitr.stop_point(log).startswith("recovery stopping before commit")
    assert pitr.recovered_time("nothing here") is None


def test_it_knows_when_the_server_user_cannot_reach_a_directory(tmp_path):
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    os.chmod(closed, 0o700)
    user = owner()
    if user == pitr.current_user():
        pytest.skip("the directory's owner is the server's user: only a root worker restores as another user")
    assert not pitr.user_can_reach(str(closed / "restore"), user)
    os.chmod(closed, 0o711)
    os.chmod(tmp_path, 0o711)
    assert pitr.user_can_reach(str(closed / "restore"), user) == pitr.user_can_reach(str(tmp_path), user)

"""Catalog objects for tests: sources, destinations and plans built through
the same services the UI uses (so each is validated and audited as a real one
would be), and backup rows recorded as if a worker had run them.

The recorded_* factories make objects that exist in the catalog only (no
database file, no disk, no S3 server behind them): for tests that record
backups rather than take them (monitoring, drills, pages)."""

import sqlite3
from datetime import timedelta

from django.utils import timezone

from catalog import backup_runs, services
from catalog.models import Backup, BackupPlan, Copy, Destination, Source


def pg_source(conninfo, name="Inventory DB", password=None):
    """A PostgreSQL source for the database `conninfo` names."""
    source = Source(
        name=name,
        engine="postgresql",
        host=conninfo["host"],
        port=conninfo["port"],
        dbname=conninfo["dbname"],
        user=conninfo["user"],
    )
    return services.save_source("test", source, secrets={"password": password or conninfo.get("password")})


def mariadb_source(server, database, name="Shop (MariaDB)", password=None):
    """A MariaDB source for `database` on the harness's server (tests.harness.mariadb)."""
    info = server.info()
    source = Source(
        name=name, engine="mariadb", host=info["host"], port=info["port"], dbname=database, user=info["user"]
    )
    return services.save_source("test", source, secrets={"password": password or info["password"]})


def mariadb_backup(server, database, folder):
    """A succeeded backup of a MariaDB `database`, taken through the real
    backup path (mariadb-dump, the pipeline, the manifests) and stored
    compressed and encrypted in a local `folder`."""
    plan = make_plan(
        mariadb_source(server, database), [local_destination(folder)], format="mariadb", verify_new_backups=False
    )
    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error
    return backup


def local_destination(path, name="Local disk"):
    return services.save_destination("test", Destination(name=name, kind="local", path=str(path)))


def s3_destination(bucket, name="Off-site S3"):
    """An off-site S3 destination for a bucket of the test S3 server."""
    destination = Destination(
        name=name,
        kind="s3",
        bucket=bucket["bucket"],
        prefix="strongroom",
        endpoint_url=bucket["endpoint_url"],
        region=bucket["region"],
        access_key_id=bucket["access_key_id"],
        offsite=True,
    )
    return services.save_destination("test", destination, secrets={"secret_access_key": bucket["secret_access_key"]})


def make_plan(source, destinations, name="Nightly", **fields):
    plan = BackupPlan(name=name, source=source, **fields)
    return services.save_plan("test", plan, destinations=destinations)


def recorded_source(name="Inventory DB", **fields):
    """A SQLite source whose file does not exist: its backups are only recorded."""
    path = f"/srv/{name.lower().replace(' ', '-')}.sqlite3"
    return services.save_source("test", Source(name=name, engine="sqlite", sqlite_path=path, **fields))


def recorded_s3_destination(name="Off-site S3", **fields):
    """An off-site S3 destination naming a bucket that no server holds."""
    destination = Destination(name=name, kind="s3", bucket="offsite", offsite=True, **fields)
    return services.save_destination("test", destination)


def recorded_plan(source, destinations=None, name="Nightly", **fields):
    """A plan for recorded backups: SQLite format and no verification policy,
    so the tick does not start real verifications of backups that have no
    data; by default it writes to the "Local disk" (/srv/backups, made once)."""
    fields = {"verify_new_backups": False, "restore_test_days": 0, "checksum_all_days": 0, "format": "sqlite", **fields}
    if destinations is None:
        destinations = [Destination.objects.filter(name="Local disk").first() or local_destination("/srv/backups")]
    return make_plan(source, destinations, name=name, **fields)


def sqlite_source(tmp_path, name="Shop"):
    """A small SQLite database as a source, so a backup of it runs in a blink."""
    path = tmp_path / f"{name.lower()}.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO items (name) VALUES ('bolt'), ('nut')")
    return services.save_source("test", Source(name=name, engine="sqlite", sqlite_path=str(path)))


def sqlite_plan(tmp_path, name="Hourly", source=None):
    source = source or sqlite_source(tmp_path)
    destination = local_destination(tmp_path / f"store-{name}", name=f"Disk {name}")
    return make_plan(source, [destination], name=name, format="sqlite", compression="zstd", encrypt=False)


def recorded_backup(plan, status=Backup.SUCCEEDED, label="", minutes_ago=0, size=1000):
    """A backup row as if a worker had run it (no data behind it)."""
    now = timezone.now() - timedelta(minutes=minutes_ago)
    backup = Backup.objects.create(
        source=plan.source,
        plan=plan,
        status=status,
        label=label,
        format=plan.format,
        compression=plan.compression,
        encrypted=plan.encrypt,
        created_at=now,
        started_at=now,
        finished_at=now + timedelta(seconds=42),
        raw_bytes=size * 3,
        stored_bytes=size,
        sha256="ab" * 32,
        table_counts={"main.items": 2},
    )
    if status in Backup.WITH_DATA:
        destination = plan.destinations.first()
        Copy.objects.create(
            backup=backup,
            destination=destination,
            status=Copy.DURABLE,
            key=f"k/{backup.pk}",
            size=size,
            sha256="ab" * 32,
            durable_at=now,
        )
    return backup

"""Continuous WAL protection in tests: a source cluster with 1 MB WAL
segments, the receiver supervisor in a thread, WAL generation, and reading
back what was stored (the restore tests may use these too)."""

import contextlib
import threading
import time

import psycopg

from catalog.engine.errors import CorruptionError
from catalog.models import Source
from pitr import wal
from pitr.models import WalSegment
from tests.factories import pg_source
from tests.harness.pg import Cluster


def wal_cluster(**settings):
    return Cluster(settings=settings, initdb_args=("--wal-segsize=1",))


def cluster_source(cluster, name="Orders DB", user=None):
    return pg_source({**cluster.server, "dbname": "postgres", **({"user": user} if user else {})}, name=name)


def execute(cluster, *statements):
    """Runs the statements; returns the rows of the last one (None if it has none)."""
    result = None
    with psycopg.connect(**cluster.server, dbname="postgres", autocommit=True) as conn:
        for statement in statements:
            cursor = conn.execute(statement)
            result = cursor.fetchall() if cursor.description else None
    return result


def write_wal(cluster, megabytes=3, switch=True):
    """Writes about `megabytes` of WAL and (by default) ends the segment, so
    that several complete segments exist. Returns the segment switched from."""
    statements = [
        "CREATE TABLE IF NOT EXISTS filler (id serial, body text)",
        f"INSERT INTO filler (body) SELECT repeat(md5(g::text), 30) FROM generate_series(1, {megabytes * 1000}) g",
    ]
    if switch:
        statements.append("SELECT pg_walfile_name(pg_switch_wal())")
    rows = execute(cluster, *statements)
    return rows[0][0] if switch else None


@contextlib.contextmanager
def running_supervisor(interval=0.2):
    """The receiver supervisor (what `manage.py wal_receiver` runs) in a
    thread; stopped, with every pg_receivewal it started, on exit."""
    from django.db import connection

    from pitr.receiver import Supervisor

    supervisor = Supervisor(interval=interval)

    def run():
        try:
            supervisor.run()
        finally:
            connection.close()

    thread = threading.Thread(target=run, name="wal-supervisor", daemon=True)
    thread.start()
    try:
        yield supervisor
    finally:
        supervisor.stop_event.set()
        thread.join(30)


def wait_for(condition, timeout=60, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def stored(source, kind=WalSegment.SEGMENT):
    return list(WalSegment.objects.filter(source=source, status=WalSegment.STORED, kind=kind).order_by("position"))


def stored_wal_containing(source, needle):
    """The stored WAL file (segment or partial) whose plain bytes contain
    `needle`, read back through the pipeline (decrypted, checksum checked); None if none."""
    for segment in WalSegment.objects.filter(
        source=Source.objects.get(pk=source.pk),
        status=WalSegment.STORED,
        kind__in=[WalSegment.SEGMENT, WalSegment.PARTIAL],
    ).order_by("-position"):
        if needle in read_settled(segment):
            return segment
    return None


def read_settled(segment, attempts=5):
    """The plain bytes of a stored WAL file. While the receiver runs, a
    partial segment may be stored again, longer, between the reading of its
    row and of its bytes (a checksum mismatch): read its new row then. A
    mismatch with an unchanged row is corruption, and raised."""
    for _ in range(attempts - 1):
        try:
            return wal.read_wal_bytes(segment)
        except CorruptionError:
            if (fresh := wal.stored_again(segment)) is None:
                raise
            segment = fresh
    return wal.read_wal_bytes(segment)

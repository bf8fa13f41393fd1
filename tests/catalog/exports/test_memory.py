"""A table far larger than the memory bound exports in bounded memory: the
rows are streamed by COPY into a spool file, then out in chunks."""

import threading
import time
import uuid

import psutil
import psycopg
import pytest

from catalog.engine.exports import ExportDump, TableSpec, load_export
from tests.harness import pg

ROWS = 1_500_000
BOUND = 50 * 1024 * 1024  # generous: a streaming export needs a few MB


@pytest.fixture(scope="module")
def big_table(pg_server):
    conninfo = pg.create_database(f"sr_export_big_{uuid.uuid4().hex[:8]}")
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        conn.execute(
            f"""CREATE TABLE big_ledger AS
                SELECT g AS id, md5(g::text) || ' ' || md5((g * 7)::text) AS memo,
                       timestamptz '2026-01-01 00:00:00+00' - g * interval '1 second' AS at, g * 1.25 AS amount
                FROM generate_series(1, {ROWS}) g"""
        )
        conn.execute("ALTER TABLE big_ledger ADD PRIMARY KEY (id)")
    yield conninfo
    pg.drop_database(conninfo["dbname"])


class PeakRss:
    """Samples this process's resident memory while the block runs."""

    def __enter__(self):
        self.process = psutil.Process()
        self.baseline = self.peak = self.process.memory_info().rss
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while not self.stop.wait(0.01):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def increase(self):
        return self.peak - self.baseline


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_it_exports_a_large_table_in_bounded_memory(big_table, fmt, tmp_path):
    size = 0
    started = time.monotonic()
    with (
        PeakRss() as memory,
        ExportDump(big_table, [TableSpec("public", "big_ledger")], fmt, tmp_dir=tmp_path) as dump,
    ):
        for chunk in dump:
            size += len(chunk)

    assert dump.table_counts == {"public.big_ledger": ROWS}
    assert dump.raw_bytes == size
    assert dump.spooled_bytes == dump.export_manifest["tables"]["public.big_ledger"]["size"]
    assert dump.current_table == "public.big_ledger"
    assert size > 3 * BOUND, "the export must be much larger than the memory bound to prove streaming"
    assert memory.increase < BOUND, f"peak RSS grew by {memory.increase / 1e6:.0f} MB for a {size / 1e6:.0f} MB export"
    assert list(tmp_path.iterdir()) == []
    print(f"{fmt}: {size / 1e6:.0f} MB in {time.monotonic() - started:.1f} s, peak RSS +{memory.increase / 1e6:.1f} MB")


def test_it_loads_a_large_export_in_bounded_memory(big_table, pg_database, tmp_path):
    archive = tmp_path / "export.tar"
    spool = tmp_path / "spool"
    spool.mkdir()
    with (
        ExportDump(big_table, [TableSpec("public", "big_ledger")], "csv", tmp_dir=spool) as dump,
        open(archive, "wb") as out,
    ):
        for chunk in dump:
            out.write(chunk)

    with PeakRss() as memory, open(archive, "rb") as stream:
        loaded = load_export(stream, pg_database)

    assert loaded == {"public.big_ledger": ROWS}
    assert memory.increase < BOUND, (
        f"peak RSS grew by {memory.increase / 1e6:.0f} MB loading {archive.stat().st_size / 1e6:.0f} MB"
    )
    fingerprint = "SELECT count(*), sum(id), md5(string_agg(memo, '' ORDER BY id)), sum(amount) FROM big_ledger"
    with psycopg.connect(**big_table) as source, psycopg.connect(**pg_database) as target:
        assert target.execute(fingerprint).fetchone() == source.execute(fingerprint).fetchone()

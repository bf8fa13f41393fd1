"""How fast the MariaDB dump's row counter reads, against the dump's own speed.

    python -m bench.mariadb_rowcount --mb 200
    python -m bench.mariadb_rowcount --mb 200 --json bench/results-mariadb-rowcount.json

A throwaway MariaDB server (the tests' harness) gets the tests' sample
database (tests/harness/mariadb_sample.py, every awkward value it has) and a
`bulk` table of rows full of quotes, backslashes, parentheses, commas, emoji
and random bytes, filled on the server until the dump is about --mb MB. Then:

- mariadb-dump's own speed: the dump (Strongroom's flags) read to the end of
  its pipe, nothing else done;
- the counter's speed: RowCounter over the same bytes, fed in the pipeline's
  1 MiB chunks, in one thread;
- that the counts equal COUNT(*) of every table.

Target: the counter reads at least three times as fast as mariadb-dump writes,
since it runs in the same thread as the pipeline's reads (exit status 1 when
it does not, --no-assert only reports).
"""

import argparse
import contextlib
import json
import subprocess
import sys
import time

from catalog.engine import mariadb
from catalog.engine.mariadb_dump import RowCounter, dump_argv, tool_version
from tests.harness.mariadb import MariaDBServer
from tests.harness.mariadb_sample import load_sample, table_counts

CHUNK = 1 << 20
TARGET_RATIO = 3

BULK = """CREATE TABLE bulk (
    id INT NOT NULL PRIMARY KEY,
    label VARCHAR(200) NOT NULL,
    body TEXT,
    raw BLOB,
    amount DECIMAL(12,2),
    ratio DOUBLE,
    seen DATETIME(6)
) ENGINE=InnoDB"""

# Each row: a label with quotes, a tuple-like "'),(" and emoji, a text of
# 40-400 bytes with backslashes and commas, 0-300 random bytes (hex in the dump).
FILL = """INSERT INTO bulk
SELECT seq + %s,
       CONCAT('it''s (', seq, '), (\\\\', MD5(seq), ''',''', '🎉'),
       IF(seq %% 7 = 0, NULL, REPEAT(CONCAT(SHA1(seq), ' \\\\n, (x) ''q'' '), 1 + seq %% 6)),
       IF(seq %% 5 = 0, NULL, RANDOM_BYTES(1 + seq %% 300)),
       (seq %% 100000) / 100,
       seq / 7,
       TIMESTAMP('2024-01-01') + INTERVAL seq SECOND
FROM seq_1_to_{rows}"""


def build(server, name, megabytes):
    server.create_database(name)
    with server.connect(name) as conn:
        load_sample(conn, name, scale=10)
        with conn.cursor() as cursor:
            cursor.execute(BULK)
            done, batch = 0, 100_000
            while True:
                cursor.execute(FILL.format(rows=batch), (done,))
                conn.commit()
                done += batch
                if sum_dump(server, name) >= megabytes * 1e6:
                    break


def sum_dump(server, name):
    """The dump's size so far: cheap enough to ask after each batch, by dumping."""
    return len(run_dump(server, name)[0])


def run_dump(server, name):
    params = {**server.info(), "dbname": name}
    tool = mariadb.find_tool(mariadb.DUMP_TOOLS)
    with mariadb.option_file(params) as path:
        argv = dump_argv(tool, path, tool_version(tool), name)
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"mariadb-dump failed: {done.stderr.decode(errors='replace')}")
        return done.stdout, time.perf_counter() - started


def timed_dump_to_pipe(server, name):
    """mariadb-dump's own speed: its output read off the pipe and dropped."""
    params = {**server.info(), "dbname": name}
    tool = mariadb.find_tool(mariadb.DUMP_TOOLS)
    with mariadb.option_file(params) as path:
        argv = dump_argv(tool, path, tool_version(tool), name)
        started = time.perf_counter()
        with subprocess.Popen(argv, stdout=subprocess.PIPE) as process:
            total = 0
            while chunk := process.stdout.read(CHUNK):
                total += len(chunk)
        return total, time.perf_counter() - started


def timed_count(data):
    counter = RowCounter()
    started = time.perf_counter()
    for offset in range(0, len(data), CHUNK):
        counter.feed(data[offset : offset + CHUNK])
    counts = counter.finish()
    return counts, time.perf_counter() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="size of the dump to measure, in MB")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--keep-dump", help="also write the dump to this file")
    parser.add_argument("--no-assert", action="store_true")
    args = parser.parse_args(argv)
    server = MariaDBServer().start()
    name = "bench_rowcount"
    try:
        build(server, name, args.mb)
        data, _ = run_dump(server, name)
        if args.keep_dump:
            with open(args.keep_dump, "wb") as out:
                out.write(data)
        dump_runs = [timed_dump_to_pipe(server, name)[1] for _ in range(args.runs)]
        count_runs = []
        for _ in range(args.runs):
            counts, seconds = timed_count(data)
            count_runs.append(seconds)
        with server.connect(name) as conn:
            expected = table_counts(conn, name)
    finally:
        with contextlib.suppress(Exception):
            server.drop_database(name)
        server.stop()
    mb = len(data) / 1e6
    result = {
        "dump_mb": round(mb, 1),
        "rows": sum(expected.values()),
        "dump_mb_per_s": round(mb / min(dump_runs), 1),
        "counter_mb_per_s": round(mb / min(count_runs), 1),
        "dump_seconds": [round(s, 2) for s in dump_runs],
        "counter_seconds": [round(s, 2) for s in count_runs],
        "counts_equal_count_star": counts == expected,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(result, out, indent=2)
    ok = result["counts_equal_count_star"] and result["counter_mb_per_s"] >= TARGET_RATIO * result["dump_mb_per_s"]
    return 0 if ok or args.no_assert else 1


if __name__ == "__main__":
    sys.exit(main())

"""The recovery point of continuous WAL protection, measured: how long after
its commit a row is stored, when no segment ends (so it is stored from the
partial segment the receiver ships).

    python -m bench.rpo --runs 10
    python -m bench.rpo --runs 1 --no-assert --json rpo.json

A throwaway cluster with 1 MB WAL segments (initdb as in the tests) streams
to Strongroom's receiver supervisor (what `manage.py wal_receiver` runs), in
a thread, into a local destination. Each run commits a row with a unique
marker and polls until the stored WAL, read back through the pipeline
(decrypted, checksum checked), holds it. The metadata database is a
throwaway one on the PostgreSQL at BENCH_PG_HOST/PORT, as for bench.run.

Target: every run's row is stored within 10 s of its commit; the exit status
is 1 when it is missed (--no-assert only reports). The test suite checks
that the row is stored from the partial segment and survives a crash; how
fast is measured here, where a loaded machine does not fail a build.
"""

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

from bench.run import Bench, machine

TARGET_SECONDS = 10


def measure(bench, cluster, args):
    # The WAL tests' own helpers: they import models, so only once Django is set up.
    from pitr import wal
    from pitr.models import ContinuousProtection
    from tests.factories import local_destination
    from tests.pitr.wal_helpers import cluster_source, execute, running_supervisor, stored_wal_containing, wait_for

    source = cluster_source(cluster)
    wal.enable_protection("bench", source, destinations=[local_destination(bench.tmp / "local")])
    with running_supervisor(args.interval):
        wait_for(lambda: ContinuousProtection.objects.get(source=source).receiver_pid, timeout=60)
        execute(cluster, "CREATE TABLE orders (id serial, note text)")
        runs = []
        for _ in range(args.runs):
            time.sleep(args.pause)
            marker = f"rpo-{uuid.uuid4().hex}"
            execute(cluster, f"INSERT INTO orders (note) VALUES ('{marker}')")
            committed = time.monotonic()
            holder = wait_for(
                lambda marker=marker: stored_wal_containing(source, marker.encode()), args.timeout, interval=0.05
            )
            seconds = time.monotonic() - committed
            runs.append({"seconds": round(seconds, 3), "kind": holder.kind, "file": holder.name})
            print(f"committed row stored after {seconds:.2f} s (in {holder.name})", flush=True)
    seconds = [run["seconds"] for run in runs]
    return {"runs": runs, "median_s": statistics.median(seconds), "max_s": max(seconds)}


def targets(results):
    worst = results["rpo"]["max_s"]
    return {f"committed row stored within {TARGET_SECONDS} s (every run)": (worst, worst < TARGET_SECONDS)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="commits to time")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between two commits")
    parser.add_argument("--interval", type=float, default=0.2, help="the supervisor's polling interval, in seconds")
    parser.add_argument("--timeout", type=float, default=60, help="give up on a run after this many seconds")
    parser.add_argument("--no-assert", action="store_true", help="report only; exit 0 whatever the figures")
    parser.add_argument("--json", help="write the results here as JSON")
    args = parser.parse_args(argv)

    from tests.harness.pg import pg_bin

    bench = Bench(args)
    os.environ.setdefault("PG_RECEIVEWAL", pg_bin("pg_receivewal"))
    os.environ.setdefault("WAL_SPOOL_DIR", str(bench.tmp / "wal-spool"))
    cluster = None
    try:
        bench.setup_django()
        bench.results["machine"] = machine()
        from tests.pitr.wal_helpers import wal_cluster

        cluster = wal_cluster()
        bench.results["rpo"] = measure(bench, cluster, args)
        bench.results["targets"] = targets(bench.results)
        bench.results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    finally:
        if cluster:
            cluster.stop()
        bench.close()
    text = json.dumps(bench.results, indent=2, default=str)
    if args.json:
        Path(args.json).write_text(text)
    print(text)
    missed = [name for name, (_, ok) in bench.results["targets"].items() if not ok]
    if missed:
        print(f"missed: {', '.join(missed)}", file=sys.stderr)
    return 0 if args.no_assert or not missed else 1


if __name__ == "__main__":
    sys.exit(main())

"""Several hosts working as one (issue 23): every source's plan queued at one
cron slot, worked off by two "hosts" on this machine, and what it costs.

    python -m bench.hosts --sources 200 --workers-per-host 2 --runs 2 --keep-sources --profile 60
    python -m bench.hosts --sources 6 --workers-per-host 1 --runs 1 --solo 1 --stats-wait 0 --no-tick-wait

Two hosts, each `manage.py qcluster` with its own STRONGROOM_HOST (host-a,
host-b), data directory and Q_WORKERS, plus the monitor cluster (on host-a)
so that the tick runs: all on one throwaway PostgreSQL metadata database
(DATABASE_URL), one Redis broker (REDIS_URL: a database number of the server
at 127.0.0.1:6379 claimed as the tests do, flushed at the end) and one master
key directory (STRONGROOM_KEY_DIR, standing in for the key store every host
shares). The sources are real PostgreSQL databases on the same server, a few
thousand rows each in four related tables; every one has a plan as shipped
(custom format, zstd, encrypted, a checksum of every new backup, a weekly
test restore, GFS retention) to the one destination every host reaches: an
S3 bucket on moto's server (--destination s3, the default, in a process of
its own so that its CPU is counted apart), or one directory both hosts write
to, standing in for a shared mount (--destination shared-dir).

Each run queues a backup of every plan at once through
catalog.backup_runs.start_backup, as at a shared cron slot, waits until every
backup has ended, then until the work they bring has: their checksums, and
(--tick-wait) the test restores the next tick queues. Measured from the
catalog: wall time, backups per minute, queue latency (created_at →
started_at) and run time (started_at → finished_at) per backup, what the
task does after the backup is recorded (finished_at → django-q2's end of the
task), the split between hosts (Backup.worker names the host), the
verifications and ticks. Measured around it: CPU seconds of each host's
cluster (Python, and the pg_dump/pg_dumpall it runs), the monitor,
PostgreSQL (postmaster and backends), moto, Redis and anything else on the
machine; the metadata database's commits and rows and the server's WAL
(pg_stat_database, pg_stat_wal; PostgreSQL flushes these up to 10 s late,
hence --stats-wait); Redis commands; then, in this process, what the
monitoring hook a worker runs after each backup costs on the catalog the run
left. --solo first backs up that many sources one at a time, for the run time
of a backup with the machine to itself; --profile samples host-a's work
cluster with py-spy during the first run and lists where its time goes.

Source databases are named sr_bench_hosts_src_<tag>_NNN and dropped at the
end; with --keep-sources they are sr_bench_hosts_src_NNN, made once, reused
by later runs and left in place (--drop-sources removes them). Exits 1 when a
backup or verification failed (--no-assert only reports).
"""

import argparse
import contextlib
import json
import logging
import math
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import psutil
import psycopg

from bench.load import stop_groups
from bench.run import PG, PY, ROOT, Bench, create_db, drop_db, machine

HERE = Path(__file__).resolve().parent
HOSTS = ("host-a", "host-b")
KEPT_PREFIX = "sr_bench_hosts_src_"
# Changing SOURCE_SQL: raise this, and kept sources are made again.
SOURCE_VERSION = 1
# Every plan's cron: the shared slot at which the scheduler would queue them all.
SLOT = "0 3 * * *"
# PostgreSQL flushes a backend's statistics at most this late once it is idle.
STATS_FLUSH_SECONDS = 11

# A small shop's database: customers, products, orders and their lines, with
# foreign keys, indexes, text, numerics, timestamps and jsonb that are not all
# alike (11.7 MB on disk, 7.5 MB of it PostgreSQL's own catalog; a backup
# stores 0.4 MB). Each database gets its own random seed.
SOURCE_SQL = """
SELECT setseed(%(seed)s);
CREATE TABLE customers (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL, email text NOT NULL UNIQUE,
  country char(2) NOT NULL, credit_limit numeric(12,2), created_at timestamptz NOT NULL);
INSERT INTO customers (name, email, country, credit_limit, created_at)
SELECT initcap(substr(md5(random()::text), 1, 8)) || ' ' || initcap(substr(md5(random()::text), 1, 10)),
       'customer' || g || '@' || substr(md5(g::text), 1, 6) || '.example',
       (ARRAY['DE','FR','GB','US','NL','SE','IT','ES','PL','CA'])[1 + (random() * 9)::int],
       round((random() * 20000)::numeric, 2), now() - random() * interval '1500 days'
FROM generate_series(1, 2000) AS g;
CREATE TABLE products (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, sku text NOT NULL UNIQUE, title text NOT NULL,
  price numeric(10,2) NOT NULL, stock integer NOT NULL, attrs jsonb NOT NULL);
INSERT INTO products (sku, title, price, stock, attrs)
SELECT 'SKU-' || lpad(g::text, 6, '0'), 'Part ' || substr(md5(random()::text), 1, 12) || ', grade ' || g % 7,
       round((1 + random() * 500)::numeric, 2), (random() * 1000)::int,
       jsonb_build_object('colour', (ARRAY['red','blue','black','steel','white'])[1 + g % 5],
                          'weight_g', (random() * 5000)::int, 'fragile', random() < .2)
FROM generate_series(1, 1000) AS g;
CREATE TABLE orders (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers,
  placed_at timestamptz NOT NULL, status text NOT NULL, total numeric(12,2) NOT NULL DEFAULT 0, note text);
INSERT INTO orders (customer_id, placed_at, status, note)
SELECT 1 + (random() * 1999)::int, now() - random() * interval '700 days',
       (ARRAY['placed','paid','shipped','delivered','returned'])[1 + (random() * 4)::int],
       CASE WHEN random() < .3 THEN 'Deliver to the back door; ' || md5(random()::text) END
FROM generate_series(1, 6000) AS g;
CREATE TABLE order_lines (
  order_id bigint NOT NULL REFERENCES orders, line smallint NOT NULL, product_id bigint NOT NULL REFERENCES products,
  quantity integer NOT NULL, unit_price numeric(10,2) NOT NULL, PRIMARY KEY (order_id, line));
INSERT INTO order_lines (order_id, line, product_id, quantity, unit_price)
SELECT o.id, l, 1 + (random() * 999)::int, 1 + (random() * 9)::int, round((1 + random() * 500)::numeric, 2)
FROM orders o, generate_series(1, 3) AS l WHERE l = 1 OR random() < .6;
UPDATE orders o SET total = s.total
FROM (SELECT order_id, sum(quantity * unit_price) AS total FROM order_lines GROUP BY order_id) s
WHERE s.order_id = o.id;
CREATE INDEX ON orders (customer_id); CREATE INDEX ON orders (placed_at); CREATE INDEX ON order_lines (product_id);
CREATE TABLE bench_hosts_source (version integer NOT NULL);
INSERT INTO bench_hosts_source VALUES (%(version)s);
ANALYZE;
"""


# --- the source databases --------------------------------------------------


def source_names(count, tag, keep):
    prefix = KEPT_PREFIX if keep else f"{KEPT_PREFIX}{tag}_"
    return [f"{prefix}{i:03d}" for i in range(1, count + 1)]


def is_current_source(name):
    """Whether `name` exists and was made, completely, by this SOURCE_SQL."""
    try:
        with psycopg.connect(**PG, dbname=name, autocommit=True) as conn:
            row = conn.execute("SELECT version FROM bench_hosts_source").fetchone()
    except psycopg.Error:
        return False
    return row is not None and row[0] == SOURCE_VERSION


def make_sources(names):
    """Creates the databases of `names` not already there; returns how many it made."""
    made = 0
    for i, name in enumerate(names, 1):
        if is_current_source(name):
            continue
        create_db(name)
        script = SOURCE_SQL.replace("%(seed)s", str(i / (len(names) + 1))).replace("%(version)s", str(SOURCE_VERSION))
        with psycopg.connect(**PG, dbname=name, autocommit=True) as conn:
            conn.execute(script)
        made += 1
        if made % 20 == 0:
            print(f"  made {made} source databases", flush=True)
    return made


def database_sizes(names):
    with psycopg.connect(**PG, dbname="postgres", autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_database_size(datname) FROM pg_database WHERE datname = ANY(%s)", [names]
        ).fetchall()
    return [size for (size,) in rows]


def drop_kept_sources():
    with psycopg.connect(**PG, dbname="postgres", autocommit=True) as conn:
        names = [
            name
            for (name,) in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", [KEPT_PREFIX.replace("_", r"\_") + "%"]
            )
        ]
    for name in names:
        drop_db(name)
    return len(names)


# --- measuring ---------------------------------------------------------------


def percentile(values, p):
    """Nearest rank: the smallest value with at least p % of them at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def spread(values):
    return {
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "max": max(values, default=None),
        "mean": statistics.fmean(values) if values else None,
    }


def tree_times(proc):
    """CPU seconds of a process tree: (Python's own, the programs it ran and
    waited for: pg_dump, pg_dumpall), children that ended counted by whoever reaped them."""
    own = ran = 0.0
    try:
        root = psutil.Process(proc.pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return own, ran
    for process in procs:
        try:
            t, name = process.cpu_times(), process.name()
        except psutil.Error:  # it just ended
            continue
        if name in ("pg_dump", "pg_dumpall"):
            ran += t.user + t.system
        else:
            own += t.user + t.system
        ran += t.children_user + t.children_system
    return own, ran


def postmaster():
    """The postmaster of the server at PG: the parent of a backend of ours."""
    with psycopg.connect(**PG, dbname="postgres") as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        return psutil.Process(backend).parent()


def postgres_cpu(master):
    """The server's CPU seconds so far: the postmaster's own, every backend it
    reaped, and the backends still running."""
    t = master.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in master.children():
        with contextlib.suppress(psutil.Error):
            c = child.cpu_times()
            total += c.user + c.system
    return total


def machine_cpu():
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0) + getattr(t, "steal", 0)
    return {"busy": sum(t) - idle, "iowait": getattr(t, "iowait", 0), "steal": getattr(t, "steal", 0)}


META_STATS = (
    "xact_commit",
    "xact_rollback",
    "tup_returned",
    "tup_fetched",
    "tup_inserted",
    "tup_updated",
    "tup_deleted",
    "blks_read",
    "blks_hit",
)
WAL_STATS = ("wal_records", "wal_bytes", "wal_write", "wal_sync")


class Sampler(threading.Thread):
    """Once a second: the machine's busy share and the work queue's length."""

    def __init__(self, redis_conn, queue_key):
        super().__init__(daemon=True, name="sampler")
        self.redis, self.queue_key = redis_conn, queue_key
        self.samples = []
        self.stop = threading.Event()

    def run(self):
        psutil.cpu_percent()
        while not self.stop.wait(1.0):
            with contextlib.suppress(Exception):  # a sample missed is no reason to stop measuring
                self.samples.append((time.time(), psutil.cpu_percent(), self.redis.llen(self.queue_key)))

    def between(self, start, end):
        busy = [b for t, b, _ in self.samples if start <= t <= end]
        depth = [d for t, _, d in self.samples if start <= t <= end]
        return {
            "seconds": len(busy),
            "busy_percent_mean": statistics.fmean(busy) if busy else None,
            "seconds_at_least_90_percent_busy": sum(b >= 90 for b in busy),
            "queue_depth_max": max(depth, default=None),
        }


# Strongroom's own code, as py-spy names a frame's file (relative to the checkout).
OWN_CODE = ("catalog/", "restore/", "pitr/", "drills/", "compliance/", "backupsite/")


def start_profile(pid, seconds, out):
    """py-spy sampling the process `pid` and every process under it (a
    cluster's workers) for `seconds`; raw collapsed stacks go to `out`."""
    binary = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    if not Path(binary).exists():
        raise SystemExit("--profile needs py-spy (requirements-test.txt): pip install py-spy")
    argv = [binary, "record", "-p", str(pid), "--subprocesses", "--nonblocking", "-r", "50"]
    argv += ["-d", str(int(seconds)), "--format", "raw", "-o", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def hottest(raw, top=12):
    """From py-spy's collapsed stacks: the share of busy samples in which
    each function of Strongroom's own code was on the stack (inclusive)."""
    inclusive, total = {}, 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        seen = set()
        for frame in stack.split(";"):
            name, _, where = frame.rpartition(" (")
            path = where.rsplit(":", 1)[0]
            if path.startswith(OWN_CODE) and (name, path) not in seen:
                seen.add((name, path))
                key = f"{path}: {name}"
                inclusive[key] = inclusive.get(key, 0) + int(count)
    ranked = sorted(inclusive.items(), key=lambda item: -item[1])[:top]
    return {"samples": total, "functions": [{"function": k, "share": round(v / total, 3)} for k, v in ranked]}


# --- the benchmark -------------------------------------------------------------


class HostsBench(Bench):
    def __init__(self, args):
        super().__init__(args)
        self.clusters = {}
        self.redis_url = None
        self.redis_server = None
        self.redis = None
        self.sampler = None
        self.keys = self.tmp / "shared-keys"
        self.sources = source_names(args.sources, self.tag, args.keep_sources)

    # setup and teardown
    def claim_redis(self):
        """A database number of the shared Redis no one else uses (the tests'
        way), or a throwaway redis-server when none answers."""
        from tests.harness import redis as harness

        shared = f"redis://{harness.SHARED[0]}:{harness.SHARED[1]}/0"
        if harness.answers(shared):
            self.redis_url = harness.claim_database(*harness.SHARED)
            if self.redis_url is None:
                raise RuntimeError("every database of the Redis at 127.0.0.1:6379 holds keys; none to claim")
        else:
            self.redis_server, self.redis_url = harness.start_server(str(self.tmp))
        self.redis = harness.connect(self.redis_url)

    def keep_claim(self):
        """The claim's marker expires by itself (so that a killed run frees the
        number): renewed while we run."""
        from tests.harness import redis as harness

        with contextlib.suppress(Exception):
            self.redis.expire(harness.CLAIM_KEY, harness.CLAIM_SECONDS)

    def prepare(self):
        self.claim_redis()
        self.keys.mkdir(mode=0o700)
        # What every process shares: the metadata database (Bench.env), the broker, the key store.
        shared = {
            "REDIS_URL": self.redis_url,
            "STRONGROOM_KEY_DIR": str(self.keys),
            "SECRET_KEY": secrets.token_urlsafe(40),
            "PYTHONUNBUFFERED": "1",
        }
        self.env.update(shared)
        os.environ.update(shared | {"STRONGROOM_HOST": "bench"})
        self.setup_django()
        # The driver queues hundreds of tasks: a line for each says nothing.
        logging.getLogger("django-q").setLevel(logging.WARNING)

    def close(self):
        stop_groups(list(self.clusters.values()))
        failed = self.results.get("failures")
        if failed or "runs" not in self.results:
            for log in sorted(self.tmp.glob("*.log")):
                print(f"--- {log.name} (end)\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
        if self.sampler:
            self.sampler.stop.set()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.flushdb()
        if self.redis_server is not None:
            from catalog.engine.wal import stop_process

            stop_process(self.redis_server)
        if not self.args.keep_sources:
            self.extra_dbs.extend(self.sources)
        super().close()

    def catalog(self, endpoint):
        """A plan to the one shared destination for every source, as shipped."""
        from catalog import services
        from catalog.models import BackupPlan, Destination, Source

        if self.args.destination == "s3":
            destination = Destination(
                name="Off-site S3 (moto)",
                kind="s3",
                bucket="bench",
                prefix="strongroom",
                endpoint_url=endpoint,
                region="us-east-1",
                access_key_id="testing",
                offsite=True,
            )
            destination = services.save_destination("bench", destination, secrets={"secret_access_key": "testing"})
        else:
            shared = self.tmp / "shared-mount"
            shared.mkdir(mode=0o700)
            destination = services.save_destination(
                "bench", Destination(name="Shared directory", kind="local", path=str(shared))
            )
        for i, name in enumerate(self.sources, 1):
            source = services.save_source(
                "bench",
                Source(
                    name=f"Shop {i:03d}",
                    engine="postgresql",
                    host=PG["host"],
                    port=PG["port"],
                    dbname=name,
                    user=PG["user"],
                ),
                secrets={"password": None},
            )
            services.save_plan(
                "bench", BackupPlan(name=f"Nightly {i:03d}", source=source, schedule=SLOT), destinations=[destination]
            )

    def start_cluster(self, host, name=None):
        """`manage.py qcluster` as a host runs it, in a process group of its own."""
        data = self.tmp / host
        data.mkdir(mode=0o700, exist_ok=True)
        env = {
            **self.env,
            "STRONGROOM_HOST": host,
            "STRONGROOM_DATA_DIR": str(data),
            "Q_WORKERS": str(self.args.workers_per_host),
        }
        if name:
            env["Q_CLUSTER_NAME"] = name
        label = f"monitor ({host})" if name else host
        with open(self.tmp / f"qcluster-{host}-{name or 'work'}.log", "ab") as log:
            self.clusters[label] = subprocess.Popen(
                [PY, "manage.py", "qcluster"],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def wait_ready(self, since):
        """Until every cluster's sentinel has said it is alive (catalog/brokers.py)."""
        from django.conf import settings

        from catalog.models import WorkerHeartbeat

        wanted = {(host, settings.WORK_CLUSTER) for host in HOSTS} | {(HOSTS[0], settings.MONITOR_CLUSTER)}
        self.wait(
            lambda: wanted <= set(WorkerHeartbeat.objects.filter(last_seen__gte=since).values_list("host", "queue")),
            "the clusters to start",
            timeout=120,
        )

    def wait(self, done, what, timeout=None):
        give_up = time.monotonic() + (timeout or self.args.timeout)
        while not done():
            for label, proc in self.clusters.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"the {label} cluster exited ({proc.returncode}) while waiting for {what}")
            if time.monotonic() > give_up:
                raise RuntimeError(f"still waiting for {what} after {timeout or self.args.timeout} s")
            self.keep_claim()
            time.sleep(0.25)

    # measuring
    def counters(self):
        cpu = {}
        for label, proc in self.clusters.items():
            own, ran = tree_times(proc)
            if label in HOSTS:
                cpu[f"{label}: Python"], cpu[f"{label}: pg_dump, pg_dumpall"] = own, ran
            else:
                cpu[label] = own + ran
        cpu["moto"] = sum(sum(tree_times(p)) for p in self.processes)
        cpu["postgresql"] = postgres_cpu(self.postmaster)
        info = self.redis.info()
        cpu["redis"] = info["used_cpu_sys"] + info["used_cpu_user"]
        cpu["benchmark"] = sum(os.times()[:2])
        with psycopg.connect(**PG, dbname="postgres", autocommit=True) as conn:
            meta = conn.execute(
                f"SELECT {', '.join(META_STATS)} FROM pg_stat_database WHERE datname = %s", [self.meta_db]
            ).fetchone()
            wal = conn.execute(f"SELECT {', '.join(WAL_STATS)} FROM pg_stat_wal").fetchone()
            sources = conn.execute(
                "SELECT sum(xact_commit) FROM pg_stat_database WHERE datname = ANY(%s)", [self.sources]
            ).fetchone()[0]
        return {
            "time": time.time(),
            "cpu": cpu,
            "machine": machine_cpu(),
            "metadata_db": dict(zip(META_STATS, meta, strict=True)),
            "wal": {k: float(v) for k, v in zip(WAL_STATS, wal, strict=True)},
            "sources_xact_commit": int(sources or 0),
            "redis_commands": info["total_commands_processed"],
        }

    def solo(self, count):
        """Backups one at a time, each with the machine to itself (its
        checksum waited for too, not the tick): a backup's own run time."""
        from catalog import backup_runs
        from catalog.models import Backup, BackupPlan

        seconds = []
        for plan in BackupPlan.objects.order_by("-pk")[:count]:
            backup = backup_runs.start_backup("scheduler", plan, trigger="schedule")
            self.wait_backups([backup.pk])
            self.wait_verifications([backup.pk])
            backup.refresh_from_db()
            if backup.status != Backup.SUCCEEDED:
                raise RuntimeError(f"solo backup {backup.pk} ended {backup.status}: {backup.error}")
            seconds.append((backup.finished_at - backup.started_at).total_seconds())
        print(f"solo backups: run time {', '.join(f'{s:.2f}' for s in seconds)} s", flush=True)
        return {"count": len(seconds), "run_seconds": spread(seconds)}

    def wait_aftermath(self, ids):
        """Until the verifications the backups of `ids` brought have ended:
        the checksums each good backup queues, and the test restores the tick
        queues for plans with a new backup and none tested this week (so a
        tick that began after the last backup ended is waited for too)."""
        from django_q.models import Task

        from catalog.models import Backup

        self.wait_verifications(ids)
        if not self.args.tick_wait:
            return
        last = max(Backup.objects.filter(pk__in=ids).values_list("finished_at", flat=True))
        ticked = Task.objects.filter(func="catalog.tasks.tick", started__gt=last)
        self.wait(ticked.exists, "a tick after the last backup", timeout=self.args.timeout + 90)
        self.wait_verifications(ids)

    def wait_backups(self, ids):
        from catalog.models import Backup

        self.wait(lambda: not Backup.objects.filter(pk__in=ids).active().exists(), "the backups")

    def wait_verifications(self, ids):
        """Each good backup queues its checksum verification once it has
        ended (and the tick test-restores a plan's latest backup weekly):
        until all of them have ended too, and the work queue is empty."""
        from django.conf import settings

        from catalog.models import Backup, Verification

        good = Backup.objects.filter(pk__in=ids, status=Backup.SUCCEEDED, plan__verify_new_backups=True)
        checked = Verification.objects.filter(backup_id__in=ids, kind=Verification.CHECKSUM)
        active = Verification.objects.filter(backup_id__in=ids, status__in=Verification.ACTIVE_STATUSES)
        key = f"django_q:{settings.WORK_CLUSTER}:q"
        self.wait(
            lambda: checked.count() >= good.count() and not active.exists() and not self.redis.llen(key),
            "the verifications",
        )

    def run_once(self, index):
        from catalog import backup_runs
        from catalog.models import BackupPlan

        plans = list(BackupPlan.objects.select_related("source").order_by("pk"))
        before = self.counters()
        profiler = None
        if self.args.profile and index == 1:
            profile_out = self.tmp / "profile.txt"
            profiler = start_profile(self.clusters[HOSTS[0]].pid, self.args.profile, profile_out)
        ids = [backup_runs.start_backup("scheduler", plan, trigger="schedule").pk for plan in plans]
        queued = time.time()
        print(f"run {index}: queued {len(ids)} backups in {queued - before['time']:.1f} s", flush=True)
        self.wait_backups(ids)
        middle = self.counters()
        if profiler:
            profiler.wait()
            self.results["profile"] = hottest(profile_out.read_text()) | {
                "seconds": self.args.profile,
                "of": f"the {HOSTS[0]} work cluster, from the backups being queued",
            }
        self.wait_aftermath(ids)
        settled = time.time()
        time.sleep(self.args.stats_wait)  # the backends' last statistics
        after = self.counters()
        result = self.figures(index, ids, queued - before["time"])
        result["monitoring_after_a_backup"] = monitoring_cost(max(ids))
        result["resources"] = deltas(before, after, len(ids))
        # CPU is exact at any moment; the database's statistics may lag by up to 10 s.
        result["resources_backups_only"] = deltas(before, middle, len(ids))
        result["machine_sampled"] = {
            "backups": self.sampler.between(before["time"], middle["time"]),
            "verifications": self.sampler.between(middle["time"], settled),
        }
        print(summary_line(result), flush=True)
        return result

    def figures(self, index, ids, queue_all_seconds):
        from django_q.models import Task

        from catalog.models import Backup, Verification

        backups = list(Backup.objects.filter(pk__in=ids).select_related("source").order_by("pk"))
        verifications = list(Verification.objects.filter(backup_id__in=ids))
        # django-q2's record of each task says when its worker was done with it
        # ("started" is when it was queued).
        names = [f"backup-{pk}" for pk in ids] + [f"verify-{v.pk}" for v in verifications]
        stopped = dict(Task.objects.filter(name__in=names).values_list("name", "stopped"))
        rows = []
        for b in backups:
            started = b.started_at
            task_stop = stopped.get(f"backup-{b.pk}")
            rows.append(
                {
                    "id": b.pk,
                    "source": b.source.name,
                    "status": b.status,
                    "error": b.error,
                    "host": b.worker.split(":")[0] if b.worker else None,
                    "worker": b.worker,
                    "stored_bytes": b.stored_bytes,
                    "queue_seconds": (started - b.created_at).total_seconds() if started else None,
                    "run_seconds": (b.finished_at - started).total_seconds() if started and b.finished_at else None,
                    # What the task does after the finish: queue the checksum, apply retention.
                    "after_finish_seconds": (task_stop - b.finished_at).total_seconds()
                    if task_stop and b.finished_at
                    else None,
                }
            )
        first = min(b.created_at for b in backups)
        last = max(b.finished_at for b in backups if b.finished_at)
        wall = (last - first).total_seconds()
        ended = [v.finished_at for v in verifications if v.finished_at]
        settled = (max(ended) - first).total_seconds() if ended else wall
        failures = [
            {"backup": r["id"], "source": r["source"], "status": r["status"], "summary": r["error"]}
            for r in rows
            if r["status"] != Backup.SUCCEEDED
        ] + [
            {"verification": v.pk, "backup": v.backup_id, "status": v.status, "summary": v.summary}
            for v in verifications
            if v.status in (Verification.FAILED, Verification.CANCELLED)
        ]
        hosts = {}
        for host in HOSTS:
            mine = [r for r in rows if r["host"] == host]
            ends = [b.finished_at for b in backups if b.worker.startswith(f"{host}:") and b.finished_at]
            hosts[host] = {
                "backups": len(mine),
                "workers": sorted({r["worker"] for r in mine}),
                "run_seconds_p50": percentile([r["run_seconds"] for r in mine], 50),
                "last_finished_after_s": (max(ends) - first).total_seconds() if ends else None,
                "verifications": sum(v.worker.startswith(f"{host}:") for v in verifications),
            }
        runs = [r["run_seconds"] for r in rows if r["run_seconds"] is not None]
        workers = self.args.workers_per_host * len(HOSTS)
        n = len(rows)
        jobs = [(b.worker, b.started_at, stopped.get(f"backup-{b.pk}")) for b in backups] + [
            (v.worker, v.started_at, stopped.get(f"verify-{v.pk}")) for v in verifications
        ]
        between = between_tasks(jobs)
        by_kind = {
            kind: spread(
                [
                    (v.finished_at - v.started_at).total_seconds()
                    for v in verifications
                    if v.kind == kind and v.finished_at and v.started_at
                ]
            )
            | {"count": sum(v.kind == kind for v in verifications)}
            for kind in (Verification.CHECKSUM, Verification.RESTORE)
        }
        ticks = list(
            Task.objects.filter(
                func="catalog.tasks.tick", started__gte=first, started__lte=first + timedelta(seconds=settled + 1)
            ).values_list("started", "stopped")
        )
        return {
            "run": index,
            "backups": n,
            "succeeded": sum(r["status"] == Backup.SUCCEEDED for r in rows),
            "verifications": len(verifications),
            "verifications_passed": sum(v.status == Verification.PASSED for v in verifications),
            # Queued by a tick after the run was over (see --tick-wait): not run yet.
            "verifications_unfinished": sum(v.status in Verification.ACTIVE_STATUSES for v in verifications),
            "failures": failures,
            "queue_all_seconds": queue_all_seconds,
            "wall_seconds": wall,
            "backups_per_minute": n / wall * 60 if wall else None,
            "settled_seconds": settled,
            "queue_latency_seconds": spread([r["queue_seconds"] for r in rows if r["queue_seconds"] is not None]),
            "run_seconds": spread(runs),
            "verification_run_seconds": by_kind,
            "after_finish_seconds": spread(
                [r["after_finish_seconds"] for r in rows if r["after_finish_seconds"] is not None]
            ),
            # A worker's previous task done → its next job claimed: django-q2
            # handing the task over, and the task's start before its claim.
            "between_tasks_seconds": spread(between),
            # Shares of the workers' time from the first backup queued to the last
            # done, in a backup's own run (claim → finish).
            "worker_busy_share": sum(runs) / (wall * workers) if wall else None,
            "ticks": spread([(stop - start).total_seconds() for start, stop in ticks]) | {"count": len(ticks)},
            "stored_mb_mean": statistics.fmean(r["stored_bytes"] for r in rows) / 2**20 if rows else None,
            "hosts": hosts,
            "per_backup": rows,
        }

    def run(self):
        t0 = time.perf_counter()
        self.prepare()
        from django.conf import settings

        self.results["machine"] = machine()
        self.results["code"] = code_version()
        made = make_sources(self.sources)
        sizes = database_sizes(self.sources)
        self.results["sources"] = {
            "count": len(self.sources),
            "made_now": made,
            "kept": self.args.keep_sources,
            "db_mb_mean": statistics.fmean(sizes) / 2**20,
        }
        t1 = time.perf_counter()
        print(
            f"{len(self.sources)} sources ({made} made now), {statistics.fmean(sizes) / 2**20:.1f} MB each", flush=True
        )
        endpoint = None
        if self.args.destination == "s3":
            endpoint, _, _ = self.start_moto()
        self.catalog(endpoint)
        self.postmaster = postmaster()
        since = self.now()
        for host in HOSTS:
            self.start_cluster(host)
        self.start_cluster(HOSTS[0], name=settings.MONITOR_CLUSTER)  # production runs it once (README)
        self.wait_ready(since)
        self.sampler = Sampler(self.redis, f"django_q:{settings.WORK_CLUSTER}:q")
        self.sampler.start()
        t2 = time.perf_counter()
        if self.args.solo:
            self.results["solo"] = self.solo(self.args.solo)
        runs = [self.run_once(i) for i in range(1, self.args.runs + 1)]
        self.results["runs"] = runs
        self.results["failures"] = [f for r in runs for f in r["failures"]]
        self.results["seconds"] = {
            "migrate_and_sources": t1 - t0,
            "catalog_and_start": t2 - t1,
            "runs": time.perf_counter() - t2,
        }
        self.results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        return self.results

    @staticmethod
    def now():
        from django.utils import timezone

        return timezone.now()


def monitoring_cost(backup_id, repeat=3):
    """What a worker's monitoring hook costs after a backup ends, with the
    catalog as the run left it (its burst over): the whole judgement
    of one backup (alerts.hooks.judge_backup), and the 3-2-1 check inside it,
    here in the benchmark's own process. Median time and queries of `repeat`."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from catalog.alerts import conditions, hooks

    def measure(call):
        samples = []
        for _ in range(repeat):
            with CaptureQueriesContext(connection) as queries, transaction.atomic():  # as hooks.quietly runs it
                t0 = time.perf_counter()
                call()
                samples.append((time.perf_counter() - t0, len(queries)))
        return {"ms": statistics.median(s for s, _ in samples) * 1000, "queries": samples[-1][1]}

    return {
        "judge_backup": measure(lambda: hooks.judge_backup(backup_id)),
        "check_three_two_one": measure(conditions.check_three_two_one),
    }


def between_tasks(jobs):
    """For each worker, the time from one task's end to the claim of the next
    job: [(worker, claimed, task stopped), …] → seconds."""
    by_worker = {}
    for worker, claimed, stopped in jobs:
        if worker and claimed and stopped:
            by_worker.setdefault(worker, []).append((claimed, stopped))
    gaps = []
    for runs in by_worker.values():
        runs.sort()
        gaps += [(later[0] - earlier[1]).total_seconds() for earlier, later in zip(runs, runs[1:], strict=False)]
    return gaps


def deltas(before, after, backups):
    """What the run cost, in all and per backup (with its verification and retention)."""
    seconds = after["time"] - before["time"]
    cpu = {k: after["cpu"][k] - before["cpu"][k] for k in after["cpu"]}
    machine_busy = after["machine"]["busy"] - before["machine"]["busy"]
    cpu["other (rest of the machine)"] = machine_busy - sum(cpu.values())
    meta = {k: int(after["metadata_db"][k] - before["metadata_db"][k]) for k in META_STATS}
    wal = {k: after["wal"][k] - before["wal"][k] for k in WAL_STATS}
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "machine_busy_seconds": machine_busy,
        "machine_available_seconds": seconds * psutil.cpu_count(),
        "iowait_seconds": after["machine"]["iowait"] - before["machine"]["iowait"],
        "steal_seconds": after["machine"]["steal"] - before["machine"]["steal"],
        "cpu_seconds_per_backup": machine_busy / backups,
        "metadata_db": meta,
        "metadata_db_per_backup": {k: round(v / backups, 1) for k, v in meta.items()},
        "wal_server_wide": wal,
        "wal_per_backup": {k: round(v / backups, 1) for k, v in wal.items()},
        "sources_xact_commit_per_backup": round(
            (after["sources_xact_commit"] - before["sources_xact_commit"]) / backups, 1
        ),
        "redis_commands": after["redis_commands"] - before["redis_commands"],
        "redis_commands_per_backup": round((after["redis_commands"] - before["redis_commands"]) / backups, 1),
    }


def code_version():
    def git(*argv):
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_files": len(git("status", "--porcelain").splitlines()),
    }


def summary_line(r):
    q, run = r["queue_latency_seconds"], r["run_seconds"]
    split = ", ".join(f"{h} {x['backups']}" for h, x in r["hosts"].items())
    return (
        f"run {r['run']}: {r['succeeded']}/{r['backups']} backups in {r['wall_seconds']:.1f} s "
        f"({r['backups_per_minute']:.1f}/min), queue latency p50 {q['p50']:.1f} p95 {q['p95']:.1f} "
        f"max {q['max']:.1f} s, run p50 {run['p50']:.2f} p95 {run['p95']:.2f} s; {split}; "
        f"verified {r['verifications_passed']}/{r['verifications']}, settled after {r['settled_seconds']:.1f} s; "
        f"{len(r['failures'])} failures"
    )


def measured_per_backup(resources, backups):
    """CPU seconds per backup of what the benchmark measured (the clusters,
    PostgreSQL, moto, Redis and itself), leaving out the rest of the machine."""
    cpu = resources["cpu_seconds"]
    return sum(v for k, v in cpu.items() if not k.startswith("other")) / backups


def render(r):
    """The markdown for bench/RESULTS.md."""
    a, m = r["args"], r["machine"]
    out = [
        f"Run {r['started']} → {r['finished']}; `python -m bench.hosts --sources {a['sources']} "
        f"--workers-per-host {a['workers_per_host']} --runs {a['runs']} --solo {a['solo']} "
        f"--destination {a['destination']}"
        + (f" --profile {a['profile']:g}" if a.get("profile") else "")
        + f"`. Machine: {m['cores']} cores ({m['cpu']}), {m['ram_gb']} GB RAM, "
        f"PostgreSQL {m['postgresql_server'].split()[0]}; code at {r['code']['commit']}"
        f"{' (and others’ uncommitted edits in the tree)' if r['code']['uncommitted_files'] else ''}. "
        f"Sources: {r['sources']['count']} databases of {r['sources']['db_mb_mean']:.1f} MB.\n",
    ]
    if r.get("solo"):
        s = r["solo"]["run_seconds"]
        out.append(
            f"One backup at a time first ({r['solo']['count']}, each with the machine to itself): "
            f"run time p50 {s['p50']:.2f} s, max {s['max']:.2f} s.\n"
        )
    runs = r["runs"]
    out += [
        "| Run | backups | wall s | backups/min | queue latency s p50 / p95 / max | run s p50 / p95 "
        "| after the finish s p50 / p95 | host-a / host-b | failures |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for x in runs:
        q, run, after = x["queue_latency_seconds"], x["run_seconds"], x["after_finish_seconds"]
        out.append(
            f"| {x['run']} | {x['succeeded']}/{x['backups']} | {x['wall_seconds']:.1f} | "
            f"{x['backups_per_minute']:.1f} | {q['p50']:.1f} / {q['p95']:.1f} / {q['max']:.1f} | "
            f"{run['p50']:.2f} / {run['p95']:.2f} | {after['p50']:.2f} / {after['p95']:.2f} | "
            f"{x['hosts']['host-a']['backups']} / {x['hosts']['host-b']['backups']} | {len(x['failures'])} |"
        )

    def row(label, cell):
        return f"| {label} | " + " | ".join(cell(x) for x in runs) + " |"

    def kind(x, name):
        v = x["verification_run_seconds"][name]
        return f"{v['count']}, p50 {v['p50']:.2f}" if v["count"] else "0"

    def cpu(group):
        def cell(x):
            res = x["resources"]
            return f"{res['cpu_seconds'][group]:.0f} ({res['cpu_seconds'][group] / res['machine_busy_seconds']:.0%})"

        return cell

    out += [
        "",
        "| Run | " + " | ".join(str(x["run"]) for x in runs) + " |",
        "| --- |" + " --- |" * len(runs),
        row("workers' time in a backup's run (claim → finish)", lambda x: f"{x['worker_busy_share']:.0%}"),
        row("checksums: count, run s", lambda x: kind(x, "checksum")),
        row("test restores (queued by the tick): count, run s", lambda x: kind(x, "restore")),
        row("all settled after s", lambda x: f"{x['settled_seconds']:.0f}"),
        *(
            [row("verifications queued late, not run", lambda x: str(x.get("verifications_unfinished", 0)))]
            if any(x.get("verifications_unfinished") for x in runs)
            else []
        ),
        row(
            "ticks: count, s p50 / max",
            lambda x: f"{x['ticks']['count']}, {x['ticks']['p50'] or 0:.1f} / {x['ticks']['max'] or 0:.1f}",
        ),
        row(
            "machine busy while backing up (1 s samples)",
            lambda x: f"{x['machine_sampled']['backups']['busy_percent_mean']:.0f} %",
        ),
        row(
            "CPU s, backups to all settled: machine busy of available",
            lambda x: (
                f"{x['resources']['machine_busy_seconds']:.0f} of {x['resources']['machine_available_seconds']:.0f}"
            ),
        ),
        *(row(f"— {group}", cpu(group)) for group in runs[0]["resources"]["cpu_seconds"]),
        row(
            "CPU s per backup, all but “other”: while backing up, to all settled",
            lambda x: (
                f"{measured_per_backup(x['resources_backups_only'], x['backups']):.2f}, "
                f"{measured_per_backup(x['resources'], x['backups']):.2f}"
            ),
        ),
        row(
            "metadata DB per backup: commits, rows read, rows written",
            lambda x: "{xact_commit:.0f}, {tup_returned:,.0f}, {written:.0f}".format(
                written=sum(x["resources"]["metadata_db_per_backup"][k] for k in ("tup_inserted", "tup_updated")),
                **x["resources"]["metadata_db_per_backup"],
            ),
        ),
        row(
            "WAL per backup, the whole server: fsyncs, KB",
            lambda x: (
                f"{x['resources']['wal_per_backup']['wal_sync']:.0f}, "
                f"{x['resources']['wal_per_backup']['wal_bytes'] / 1024:,.0f}"
            ),
        ),
        row("Redis commands per backup", lambda x: f"{x['resources']['redis_commands_per_backup']:.0f}"),
        *(
            [
                row(
                    "after the run, one backup's monitoring hook: ms, queries (its 3-2-1 check)",
                    lambda x: "{j[ms]:.0f}, {j[queries]} ({t[ms]:.0f}, {t[queries]})".format(
                        j=x["monitoring_after_a_backup"]["judge_backup"],
                        t=x["monitoring_after_a_backup"]["check_three_two_one"],
                    ),
                )
            ]
            if all("monitoring_after_a_backup" in x for x in runs)
            else []
        ),
    ]
    if r.get("profile"):
        p = r["profile"]
        out.append(
            f"\npy-spy, {p['of']}, {p['seconds']:g} s ({p['samples']} busy samples): share of samples with "
            "each function of Strongroom on the stack:\n"
        )
        out += [f"- {f['share']:.0%} `{f['function']}`" for f in p["functions"]]
    return "\n".join(out) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=int, default=200, help="source databases, each with one plan")
    parser.add_argument("--workers-per-host", type=int, default=2, help="Q_WORKERS of each of the two hosts")
    parser.add_argument("--runs", type=int, default=2, help="bursts of every plan's backup, one after the other")
    parser.add_argument("--solo", type=int, default=5, help="backups run one at a time first, for comparison")
    parser.add_argument("--destination", choices=["s3", "shared-dir"], default="s3")
    parser.add_argument("--keep-sources", action="store_true", help="make the sources once, reuse and keep them")
    parser.add_argument("--drop-sources", action="store_true", help="only drop the kept sources, then exit")
    parser.add_argument(
        "--profile",
        type=float,
        default=0,
        metavar="SECONDS",
        help="sample host-a's work cluster with py-spy this long in the first run (0: not at all)",
    )
    parser.add_argument(
        "--tick-wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait for a tick after each run's last backup, and the test restores it queues (up to a minute)",
    )
    parser.add_argument("--stats-wait", type=float, default=STATS_FLUSH_SECONDS, help="seconds for the last stats")
    parser.add_argument("--timeout", type=float, default=1800, help="longest a run's backups may take")
    parser.add_argument("--no-assert", action="store_true", help="report only; exit 0 whatever happened")
    parser.add_argument("--json", default=str(HERE / "results-hosts.json"), help="where to write the results")
    parser.add_argument("--report", metavar="JSON", help="only print the markdown of an earlier run")
    args = parser.parse_args(argv)
    if args.report:
        print(render(json.loads(Path(args.report).read_text())))
        return 0
    if args.drop_sources:
        print(f"dropped {drop_kept_sources()} kept source databases")
        return 0
    bench = HostsBench(args)
    try:
        results = bench.run()
    finally:
        bench.close()
    Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    print(render(results))
    for failure in results["failures"]:
        print(f"failed: {failure}", file=sys.stderr)
    return 0 if args.no_assert or not results["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Strongroom benchmarks, each beside the baseline a user would otherwise use,
measured in the same run with the variants alternating (see bench/RESULTS.md).

    python -m bench.run --scale 40 --runs 3
    python -m bench.run --scale 1 --runs 1 --backups 300 --only backup,dashboard

Everything is throwaway: databases named sr_bench_*_<pid> on the PostgreSQL
at BENCH_PG_HOST/PORT (default 127.0.0.1:5432, user postgres), a temporary
directory, a moto S3 server and a gunicorn process, all removed at the end.
"""

import argparse
import contextlib
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil
import psycopg

PG = {
    "host": os.environ.get("BENCH_PG_HOST", "127.0.0.1"),
    "port": int(os.environ.get("BENCH_PG_PORT", "5432")),
    "user": "postgres",
}
ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def url(dbname):
    return f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{dbname}"


def admin_sql(statement):
    with psycopg.connect(**PG, dbname="postgres", autocommit=True) as conn:
        conn.execute(statement)


def create_db(name):
    admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin_sql(f'CREATE DATABASE "{name}"')


def drop_db(name):
    admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(argv, env=None, shell=False):
    """Runs a command to completion, sampling the RSS of its whole process
    tree every 10 ms. Returns wall, CPU (children included, as reaped), peak
    tree RSS in MB, and stdout."""
    cpu0, t0 = children_cpu(), time.perf_counter()
    proc = psutil.Popen(
        argv,
        shell=shell,
        executable="/bin/bash" if shell else None,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    peak = 0
    out_chunks = []
    reader = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()))
    err_chunks = []
    err_reader = threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()))
    reader.start(), err_reader.start()
    while proc.poll() is None:
        try:
            procs = [proc] + proc.children(recursive=True)
            total = 0
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
            peak = max(peak, total)
        except psutil.Error:
            pass
        time.sleep(0.01)
    reader.join(), err_reader.join()
    wall = time.perf_counter() - t0
    out, err = b"".join(out_chunks).decode(), b"".join(err_chunks).decode()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} exited {proc.returncode}: {err[-2000:]} {out[-500:]}")
    return {"wall": wall, "cpu": children_cpu() - cpu0, "rss_mb": peak / 2**20, "stdout": out}


def child(env, *args):
    """A Strongroom job in its own worker-like process (bench.child)."""
    result = measure([PY, "-m", "bench.child", *map(str, args)], env=env)
    inner = json.loads(result["stdout"].strip().splitlines()[-1])
    if not inner["ok"]:
        raise RuntimeError(f"bench.child {args} failed: {inner}")
    # The service call's own wall and CPU; the process tree's peak RSS.
    return {
        "wall": inner["wall"],
        "cpu": inner["cpu"],
        "rss_mb": result["rss_mb"],
        "process_wall": result["wall"],
        "inner": inner,
    }


def median(values):
    return statistics.median(values) if values else None


def summarize(samples):
    keys = [k for k in ("wall", "process_wall", "cpu", "rss_mb", "size_mb") if any(k in s for s in samples)]
    return {k: median([s[k] for s in samples if k in s]) for k in keys} | {"runs": len(samples)}


def ratio(a, b):
    return round(a / b, 3) if a and b else None


# --- the source database -------------------------------------------------

TEXT_TABLE = """
CREATE TABLE bench_notes (id bigserial PRIMARY KEY, sku text NOT NULL, body text NOT NULL, created_at timestamptz);
INSERT INTO bench_notes (sku, body, created_at)
SELECT 'SKU-' || lpad(g::text, 8, '0'),
       'Item ' || g || ' received at warehouse ' || (g % 37) || '. ' ||
       repeat('Inspected, counted and shelved; packaging intact. ', 8 + g % 7) ||
       md5(g::text) || md5((g * 7)::text),
       now() - (g % 100000) * interval '1 minute'
FROM generate_series(1, %(rows)s) AS g;
ANALYZE bench_notes;
"""


# The less compressible data set (issue 22): orders whose uuid, md5 text,
# numerics, timestamps and jsonb compress about as badly as real ones, with
# five indexes for a restore to build. 28,000 rows per pgbench scale unit:
# scale 50 is the 1.4 M orders, about 1.8 GB with pgbench's tables.
ORDERS_TABLE = """
CREATE TABLE orders (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, ref uuid NOT NULL, customer text NOT NULL, note text,
  amount numeric(12,2) NOT NULL, tax numeric(12,4), placed_at timestamptz NOT NULL, shipped_at timestamptz,
  attrs jsonb NOT NULL);
INSERT INTO orders (ref, customer, note, amount, tax, placed_at, shipped_at, attrs)
SELECT gen_random_uuid(), md5(g::text), md5(random()::text) || md5(random()::text),
       round((random() * 10000)::numeric, 2), round((random() * 100)::numeric, 4),
       now() - random() * interval '800 days',
       CASE WHEN random() < .8 THEN now() - random() * interval '700 days' END,
       jsonb_build_object('sku', md5(random()::text), 'qty', (random() * 20)::int, 'gift', random() < .1,
                          'tags', jsonb_build_array(md5(random()::text)))
FROM generate_series(1, %(rows)s) AS g;
CREATE INDEX ON orders (ref); CREATE INDEX ON orders (customer); CREATE INDEX ON orders (placed_at);
CREATE INDEX ON orders (amount); CREATE INDEX ON orders USING gin (attrs);
ANALYZE orders;
"""
DATASETS = {
    "pgbench": (TEXT_TABLE, 10_000),  # about 0.55 KB of text a row: some 40 % of the database is this text
    "orders": (ORDERS_TABLE, 28_000),
}


def make_source(name, scale, dataset="pgbench"):
    create_db(name)
    pgbench = shutil.which("pgbench") or _pg_bin("pgbench")
    subprocess.run([pgbench, "-i", "-q", "-s", str(scale), url(name)], check=True, capture_output=True)
    table, rows_per_scale = DATASETS[dataset]
    with psycopg.connect(**PG, dbname=name, autocommit=True) as conn:
        conn.execute(table.replace("%(rows)s", str(int(scale * rows_per_scale))))
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return size


def _pg_bin(name):
    sys.path.insert(0, str(ROOT))
    from tests.harness.pg import pg_bin

    return pg_bin(name)


# --- the benchmarks ------------------------------------------------------


class Bench:
    def __init__(self, args):
        self.args = args
        self.tag = f"{os.getpid()}_{uuid.uuid4().hex[:4]}"
        self.tmp = Path(tempfile.mkdtemp(prefix="strongroom-bench-"))
        self.meta_db = f"sr_bench_meta_{self.tag}"
        self.src_db = f"sr_bench_src_{self.tag}"
        self.small_db = f"sr_bench_small_{self.tag}"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "STRONGROOM_DATA_DIR": str(self.tmp / "data"),
            "DATABASE_URL": url(self.meta_db),
            "LOCAL_DESTINATION_ROOTS": str(self.tmp),
            "PYTHONPATH": str(ROOT),
        }
        self.results = {"args": vars(args), "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
        self.processes = []
        self.extra_dbs = []

    # setup / teardown
    def setup_django(self):
        os.environ.update(
            {
                k: self.env[k]
                for k in ("DJANGO_SETTINGS_MODULE", "STRONGROOM_DATA_DIR", "DATABASE_URL", "LOCAL_DESTINATION_ROOTS")
            }
        )
        (self.tmp / "data").mkdir()
        create_db(self.meta_db)
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)

    def close(self):
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        try:
            from django.db import connections

            connections.close_all()
        except Exception:
            pass
        for name in [self.meta_db, self.src_db, self.small_db, *self.extra_dbs]:
            try:
                drop_db(name)
            except Exception as exc:  # keep cleaning up
                print(f"could not drop {name}: {exc}", file=sys.stderr)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start_moto(self):
        port = free_port()
        proc = subprocess.Popen(
            [PY, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.processes.append(proc)
        endpoint = f"http://127.0.0.1:{port}"
        wait_port(port)
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket="bench")
        return endpoint, s3, proc

    def plans(self, endpoint):
        from catalog import services
        from catalog.models import BackupPlan, Destination, Source

        def source(dbname, name):
            return services.save_source(
                "bench",
                Source(
                    name=name, engine="postgresql", host=PG["host"], port=PG["port"], dbname=dbname, user=PG["user"]
                ),
                secrets={"password": None},
            )

        local = services.save_destination(
            "bench", Destination(name="Local", kind="local", path=str(self.tmp / "local"))
        )
        local2 = services.save_destination(
            "bench", Destination(name="Local 2", kind="local", path=str(self.tmp / "local2"))
        )
        remote = services.save_destination(
            "bench",
            Destination(
                name="S3 (moto)",
                kind="s3",
                bucket="bench",
                prefix="sr",
                endpoint_url=endpoint,
                region="us-east-1",
                access_key_id="testing",
                offsite=True,
            ),
            secrets={"secret_access_key": "testing"},
        )
        fields = {
            "format": self.args.format,
            "dump_jobs": self.args.dump_jobs,
            "compression": "zstd",
            "compression_level": self.args.level,
            "encrypt": True,
        }
        big = source(self.src_db, "Bench source")
        plan_local = services.save_plan("bench", BackupPlan(name="local", source=big, **fields), destinations=[local])
        plan_both = services.save_plan(
            "bench", BackupPlan(name="local+s3", source=big, **fields), destinations=[local2, remote]
        )
        small = source(self.small_db, "Bench small source")
        plan_small = services.save_plan("bench", BackupPlan(name="small", source=small, **fields), destinations=[local])
        return plan_local, plan_both, plan_small

    # 1, 2: backups
    def backups(self, plan_local, plan_both, plan_small, s3):
        runs = self.args.runs
        out = self.tmp / "guide"
        out.mkdir()
        gz = out / "f.sql.gz"
        guide_cmd = f'set -o pipefail; pg_dump "{url(self.src_db)}" | gzip > {gz} && sha256sum {gz} > {gz}.sha256'
        floor_cmd = f'pg_dump -Fc -Z0 "{url(self.src_db)}" > /dev/null'
        samples = {"guide": [], "floor": [], "strongroom_local": [], "strongroom_local_s3": []}
        # A directory-format plan's own floor: pg_dump's jobs writing their files, then removed.
        files = out / "floor-files"
        floor_directory_cmd = (
            f'pg_dump -Fd -j {self.args.dump_jobs} -Z0 -f {files} "{url(self.src_db)}" && rm -rf {files}'
        )
        if self.args.format == "directory":
            samples["floor_directory"] = []
        last = {}
        for i in range(runs):
            order = list(samples)
            if i % 2:
                order.reverse()  # alternate, so neither side always runs on a warmer cache
            for name in order:
                if name == "guide":
                    m = measure(guide_cmd, shell=True)
                    m["size_mb"] = gz.stat().st_size / 2**20
                elif name == "floor":
                    m = measure(floor_cmd, shell=True)
                elif name == "floor_directory":
                    m = measure(floor_directory_cmd, shell=True)
                elif name == "strongroom_local":
                    m = child(self.env, "backup", plan_local.pk)
                    m["size_mb"] = m["inner"]["stored_bytes"] / 2**20
                    last["local"] = m["inner"]["backup_id"]
                else:
                    m = child(self.env, "backup", plan_both.pk)
                    m["size_mb"] = m["inner"]["stored_bytes"] / 2**20
                    assert sorted(m["inner"]["copies"]) == ["local", "s3"], m["inner"]
                    self.prune_extra(plan_both, s3)
                m.pop("stdout", None)
                m.pop("inner", None)
                samples[name].append(m)
                print(f"  backup {name} run {i + 1}: {fmt(m)}", flush=True)
            self.prune_extra(plan_local, s3, keep=last.get("local"))
        table = {name: summarize(s) for name, s in samples.items()}
        sr, floor, guide = table["strongroom_local"], table["floor"], table["guide"]
        self.results["backup"] = {
            "medians": table,
            "ratios": {
                "local_vs_floor": ratio(sr["wall"], floor["wall"]),
                "local_vs_guide": ratio(sr["wall"], guide["wall"]),
                "local_s3_vs_floor": ratio(table["strongroom_local_s3"]["wall"], floor["wall"]),
                "stored_size_vs_guide": ratio(sr["size_mb"], guide["size_mb"]),
                **(
                    {"local_vs_floor_directory": ratio(sr["wall"], table["floor_directory"]["wall"])}
                    if "floor_directory" in table
                    else {}
                ),
            },
        }
        # 2: memory at a scale ten times smaller
        small = [child(self.env, "backup", plan_small.pk) for _ in range(max(1, min(runs, 2)))]
        self.prune_extra(plan_small, s3)
        self.results["memory"] = {
            "scale_large": self.args.scale,
            "scale_small": self.args.small_scale,
            "rss_mb_large": sr["rss_mb"],
            "rss_mb_small": median([s["rss_mb"] for s in small]),
        }
        return last["local"], gz

    def prune_extra(self, plan, s3, keep=None):
        """Removes the stored objects of a plan's earlier benchmark backups, so
        the disk (and moto's memory) stays small; the catalog rows stay."""
        from catalog.models import Copy

        for copy in Copy.objects.filter(backup__plan=plan).exclude(backup_id=keep).select_related("destination"):
            if copy.destination.kind == "local":
                for key in (copy.key, copy.manifest_key):
                    if key:
                        Path(copy.destination.path, key).unlink(missing_ok=True)
        objects = s3.list_objects_v2(Bucket="bench").get("Contents", [])
        for obj in objects:
            s3.delete_object(Bucket="bench", Key=obj["Key"])

    # 3: restores
    def restores(self, backup_id, gz):
        custom = self.tmp / "guide" / "f.dump"
        subprocess.run(["pg_dump", "-Fc", "-f", str(custom), url(self.src_db)], check=True)
        jobs = [int(n) for n in self.args.restore_jobs.split(",")]
        samples = {"guide": [], "pg_restore_j2": [], **{f"strongroom_j{n}": [] for n in jobs}}
        for i in range(self.args.runs):
            order = list(samples) if i % 2 == 0 else list(reversed(samples))
            for name in order:
                target = f"sr_bench_restored_{self.tag}_{i}_{name}"[:63]
                self.extra_dbs.append(target)
                if name == "guide":
                    create_db(target)
                    m = measure(
                        f'set -o pipefail; gunzip -c {gz} | psql -q -X -v ON_ERROR_STOP=1 "{url(target)}" > /dev/null',
                        shell=True,
                    )
                elif name == "pg_restore_j2":
                    create_db(target)
                    m = measure(["pg_restore", "-j", "2", "-d", url(target), str(custom)])
                else:
                    drop_db(target)
                    env = {**self.env, "RESTORE_JOBS": name.removeprefix("strongroom_j")}
                    m = child(env, "restore", backup_id, target)
                    m["steps"] = m.pop("inner")["steps"]
                m.pop("stdout", None)
                samples[name].append(m)
                print(f"  restore {name} run {i + 1}: {fmt(m)}", flush=True)
                drop_db(target)
        table = {name: summarize(s) for name, s in samples.items()}
        for n in jobs:  # the restore job's steps: checks, fetch+verify+restore, apply, post-checks (row counts)
            runs = samples[f"strongroom_j{n}"]
            table[f"strongroom_j{n}"]["steps"] = {
                step: median([r["steps"][step] for r in runs]) for step in runs[0]["steps"]
            }
        self.results["restore"] = {
            "medians": table,
            "jobs": jobs,
            "ratios": {
                f"j{n}": {
                    "vs_guide": ratio(table[f"strongroom_j{n}"]["wall"], table["guide"]["wall"]),
                    "vs_pg_restore_j2": ratio(table[f"strongroom_j{n}"]["wall"], table["pg_restore_j2"]["wall"]),
                    "restore_step_vs_pg_restore_j2": ratio(
                        table[f"strongroom_j{n}"]["steps"]["fetch, verify and restore"], table["pg_restore_j2"]["wall"]
                    ),
                    "process_vs_pg_restore_j2": ratio(
                        table[f"strongroom_j{n}"]["process_wall"], table["pg_restore_j2"]["wall"]
                    ),
                }
                for n in jobs
            },
        }

    # 4: checksum verification
    def verify(self, backup_id):
        """Checksums the latest local backup (custom format, zstd, encrypted):
        Strongroom reads it once, hashing, authenticating and decompressing
        every byte; sha256sum hashes the same file."""
        from catalog.models import Copy

        copy = Copy.objects.select_related("destination").get(backup_id=backup_id, destination__kind="local")
        path = Path(copy.destination.path, copy.key)
        size_mb = path.stat().st_size / 2**20
        samples = {"sha256sum": [], "strongroom": []}
        for i in range(self.args.runs):
            order = list(samples) if i % 2 == 0 else list(reversed(samples))
            for name in order:
                if name == "sha256sum":
                    m = measure(["sha256sum", str(path)])
                else:
                    m = child(self.env, "verify", backup_id)
                    m.pop("inner", None)
                m.pop("stdout", None)
                m["mb_per_s"] = size_mb / m["wall"]
                samples[name].append(m)
                print(f"  verify {name} run {i + 1}: {fmt(m)}", flush=True)
        table = {name: summarize(s) | {"mb_per_s": median([x["mb_per_s"] for x in s])} for name, s in samples.items()}
        sr, sha = table["strongroom"], table["sha256sum"]
        self.results["verify"] = {
            "file_mb": size_mb,
            "object": f"the latest local backup: {self.args.format} format, zstd, encrypted",
            "medians": table,
            "ratios": {
                "time_vs_sha256sum": ratio(sr["wall"], sha["wall"]),
                "process_time_vs_sha256sum": ratio(sr["process_wall"], sha["wall"]),
            },
        }

    # 5: the dashboard with a large catalog
    def dashboard(self):
        from bench import catalog_data

        count = self.args.backups
        small = min(count, 60)
        t0 = time.perf_counter()
        ids = catalog_data.generate(small, copies_per_backup=3)
        pages = catalog_data.pages(ids, count)
        small_counts = catalog_data.query_counts(pages)
        ids += catalog_data.generate(count - small, copies_per_backup=3) if count > small else []
        self.results["dashboard_generate_seconds"] = time.perf_counter() - t0
        serial = catalog_data.serial_timings(pages, self.args.requests)
        for name, figures in serial.items():
            figures["queries_at_small_catalog"] = small_counts[name]
            figures["queries_constant"] = figures["queries_constant"] and small_counts[name] == figures["queries"]
        from catalog.models import Backup, Copy

        self.results["dashboard"] = {
            "backups": Backup.objects.count(),
            "copies": Copy.objects.count(),
            "serial": serial,
        }
        self.results["dashboard"]["concurrent"] = self.concurrent(pages)

    def start_gunicorn(self):
        """gunicorn on a free loopback port, as production serves Strongroom
        (bench.settings: DEBUG off); its error log goes to gunicorn.log in the
        temporary directory. Returns the process and the port."""
        port = free_port()
        env = {**self.env, "ALLOWED_HOSTS": "127.0.0.1,localhost"}
        workers = str(self.args.gunicorn_workers)
        with open(self.tmp / "gunicorn.log", "ab") as log:
            proc = subprocess.Popen(
                [
                    PY,
                    "-m",
                    "gunicorn",
                    "backupsite.wsgi",
                    "-b",
                    f"127.0.0.1:{port}",
                    "-w",
                    workers,
                    "--threads",
                    "4",
                    "--log-level",
                    "warning",
                    "--timeout",
                    "120",
                ],
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self.processes.append(proc)
        wait_port(port)
        return proc, port

    def concurrent(self, pages):
        from bench import catalog_data

        proc, port = self.start_gunicorn()
        try:
            # Warm every worker (imports, templates) before measuring: a production server is warm.
            catalog_data.hammer(port, pages, clients=self.args.clients, per_client=len(pages))
            return catalog_data.hammer(port, pages, clients=self.args.clients, per_client=self.args.requests)
        finally:
            proc.terminate()
            proc.wait(20)

    def run(self):
        only = set(self.args.only.split(",")) if self.args.only else {"backup", "restore", "verify", "dashboard"}
        self.setup_django()
        self.results["machine"] = machine()
        if only & {"backup", "restore", "verify"}:
            t0 = time.perf_counter()
            self.results["dataset"] = self.args.dataset
            self.results["source_db_bytes"] = make_source(self.src_db, self.args.scale, self.args.dataset)
            self.results["small_db_bytes"] = make_source(self.small_db, self.args.small_scale, self.args.dataset)
            self.results["generate_seconds"] = time.perf_counter() - t0
            print(
                f"source database: {self.results['source_db_bytes'] / 2**20:.0f} MB "
                f"(small: {self.results['small_db_bytes'] / 2**20:.0f} MB)",
                flush=True,
            )
            endpoint, s3, moto = self.start_moto()
            plan_local, plan_both, plan_small = self.plans(endpoint)
            backup_id, gz = self.backups(plan_local, plan_both, plan_small, s3)
            if "restore" in only:
                self.restores(backup_id, gz)
            if "verify" in only:
                self.verify(backup_id)
            moto.terminate()
            moto.wait(10)
        if "dashboard" in only:
            self.dashboard()
        self.results["targets"] = targets(self.results)
        self.results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        return self.results


def wait_port(port, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def fmt(m):
    return ", ".join(f"{k}={v:.2f}" for k, v in m.items() if isinstance(v, float))


def version(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True).stdout.strip().splitlines()[0]
    except Exception:
        return "?"


def machine():
    import django
    import zstandard

    with psycopg.connect(**PG, dbname="postgres") as conn:
        server = conn.execute("SHOW server_version").fetchone()[0]
    disk = shutil.disk_usage(tempfile.gettempdir())
    return {
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line), "?"),
        "disk_free_gb": round(disk.free / 2**30),
        "postgresql_server": server,
        "pg_dump": version(["pg_dump", "-V"]),
        "python": sys.version.split()[0],
        "django": django.get_version(),
        "zstandard": zstandard.__version__,
        "zstd_lib": zstandard.ZSTD_VERSION,
        "gzip": version(["gzip", "--version"]),
    }


def targets(r):
    """Issue 22's goals (and the dashboard's from issue 10): name → (measured, met)."""
    t = {}
    if "backup" in r:
        b = r["backup"]["ratios"]
        t["backup <= 1.15x floor"] = (b["local_vs_floor"], b["local_vs_floor"] <= 1.15)
        if "local_vs_floor_directory" in b:
            t["backup <= 1.15x directory floor"] = (
                b["local_vs_floor_directory"],
                b["local_vs_floor_directory"] <= 1.15,
            )
        t["backup <= 0.5x guide"] = (b["local_vs_guide"], b["local_vs_guide"] <= 0.5)
        t["stored size <= 0.9x guide"] = (b["stored_size_vs_guide"], b["stored_size_vs_guide"] <= 0.9)
        m = r["memory"]
        t["peak RSS < 150 MB at both scales"] = (
            [round(m["rss_mb_large"], 1), round(m["rss_mb_small"], 1)],
            max(m["rss_mb_large"], m["rss_mb_small"]) < 150,
        )
        s3 = r["backup"]["medians"]["strongroom_local_s3"]["rss_mb"]
        t["peak RSS < 150 MB, local + S3"] = (round(s3, 1), s3 < 150)
    if "restore" in r:
        for name, x in r["restore"]["ratios"].items():
            t[f"restore ({name.replace('j', 'RESTORE_JOBS=')}) <= 1.0x pg_restore -j 2"] = (
                x["vs_pg_restore_j2"],
                x["vs_pg_restore_j2"] <= 1.0,
            )
            t[f"restore ({name.replace('j', 'RESTORE_JOBS=')}) <= 0.6x guide"] = (x["vs_guide"], x["vs_guide"] <= 0.6)
    if "verify" in r:
        v = r["verify"]["ratios"]
        t["verify <= 1.0x sha256sum time (in process)"] = (v["time_vs_sha256sum"], v["time_vs_sha256sum"] <= 1.0)
        t["verify <= 1.0x sha256sum time (whole process)"] = (
            v["process_time_vs_sha256sum"],
            v["process_time_vs_sha256sum"] <= 1.0,
        )
    if "dashboard" in r:
        d = r["dashboard"]
        worst = max(p["p95_ms"] for p in d["serial"].values())
        t["every page p95 < 100 ms (serial)"] = (round(worst, 1), worst < 100)
        constant = all(p["queries_constant"] for p in d["serial"].values())
        t["query count constant (no query per row)"] = (constant, constant)
        c = d["concurrent"]
        t["20 concurrent clients, no errors"] = (c["errors"], c["errors"] == 0)
        t["every page p95 < 100 ms (concurrent)"] = (round(c["p95_ms"], 1), c["p95_ms"] < 100)
    return t


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=40, help="pgbench scale (40 is about 1 GB with the text table)")
    parser.add_argument(
        "--dataset",
        choices=sorted(DATASETS),
        default="pgbench",
        help="pgbench (compressible: blank filler plus a text table) or orders (uuid, md5, jsonb: less compressible)",
    )
    parser.add_argument("--small-scale", type=int, help="second scale for the memory check (default scale/10)")
    parser.add_argument("--format", choices=["custom", "directory"], default="custom", help="the plans' format")
    parser.add_argument("--dump-jobs", type=int, default=2, help="pg_dump's jobs for --format directory")
    parser.add_argument("--level", type=int, help="the plans' compression level (default: the product's, zstd 3)")
    parser.add_argument(
        "--restore-jobs", default="2,4", help="RESTORE_JOBS values to measure (1 streams into one pg_restore)"
    )
    parser.add_argument("--runs", type=int, default=3, help="alternating runs per measurement (medians)")
    parser.add_argument("--only", default="", help="comma list of backup,restore,verify,dashboard")
    parser.add_argument("--backups", type=int, default=100_000, help="generated backups for the dashboard")
    parser.add_argument("--requests", type=int, default=30, help="requests per page (serial) and per client")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--gunicorn-workers", type=int, default=4)
    parser.add_argument("--json", help="write the results here as JSON")
    args = parser.parse_args(argv)
    if args.small_scale is None:
        args.small_scale = max(1, args.scale // 10)
    bench = Bench(args)
    try:
        results = bench.run()
    finally:
        bench.close()
    text = json.dumps(results, indent=2, default=str)
    if args.json:
        Path(args.json).write_text(text)
    print(text)
    return results


if __name__ == "__main__":
    main()

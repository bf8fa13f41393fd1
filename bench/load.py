"""Load while backing up: two backups run at once through a production setup
(gunicorn, a real django-q2 cluster with 2 workers, a throwaway PostgreSQL
metadata database), once idle and once while concurrent clients use the
dashboard and the API. Reports errors, request latency, and each backup's
throughput idle and under load (see bench/RESULTS.md).

The clients behave as people and scripts do (users_script): browsers going
from page to page, --think seconds on each, polling the running backup's
progress every second while on its page; every fourth client a script polling
the API every two seconds. --pace instead makes every client cycle over every
page at a fixed rate: --pace 1 (a request a second each, as fast as a progress
poll) and --pace 0 (no pause: a stress test that saturates the server) are in
bench/RESULTS.md too; --web-cpu-shares shows what a lower CPU weight for the
web server (systemd's CPUWeight=) does then.

    python -m bench.load --scale 100 --rounds 3 --clients 20 --seconds 120
    python -m bench.load --scale 100 --rounds 3 --clients 20 --pace 1 --no-assert
    python -m bench.load --scale 1 --rounds 1 --clients 2 --seconds 5 --no-assert

Exits 1 when a request failed, a backup did not succeed, or the loaded
throughput fell below --min-ratio (0.8) of the idle one; --no-assert only
reports. Everything is throwaway, as in bench.run (whose helpers it reuses).
"""

import argparse
import contextlib
import http.client
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from bench.run import PG, PY, ROOT, Bench, machine, make_source, median, ratio

HERE = Path(__file__).resolve().parent
CGROUP_CPU = Path("/sys/fs/cgroup/cpu")  # cgroup v1's CPU controller, where it is mounted


class LoadBench(Bench):
    def __init__(self, args):
        super().__init__(args)
        self.clusters = []
        self.web_cgroup = None

    def close(self):
        stop_groups(self.clusters)
        if self.web_cgroup:
            remove_cgroup(self.web_cgroup)
        summary = self.results.get("summary", {})
        if not summary or summary["errors"] or summary["backups_succeeded"] != summary["backups"]:
            # The logs go with the temporary directory: show their ends first.
            for log in sorted(self.tmp.glob("*.log")):
                print(f"--- {log.name} (end)\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
        super().close()

    def plans(self):
        from catalog import services
        from catalog.models import BackupPlan, Destination, Source

        source = services.save_source(
            "bench",
            Source(
                name="Bench source",
                engine="postgresql",
                host=PG["host"],
                port=PG["port"],
                dbname=self.src_db,
                user=PG["user"],
            ),
            secrets={"password": None},
        )
        plans = []
        for name in ("A", "B"):
            destination = services.save_destination(
                "bench", Destination(name=f"Local {name}", kind="local", path=str(self.tmp / f"local-{name}"))
            )
            plans.append(
                services.save_plan(
                    "bench",
                    BackupPlan(name=f"Load {name}", source=source, format="custom", compression="zstd", encrypt=True),
                    destinations=[destination],
                )
            )
        return plans

    def start_cluster(self, name=None):
        """`manage.py qcluster` as production runs it (README), in a process
        group of its own so that its workers stop with it."""
        env = {**self.env, "Q_WORKERS": str(self.args.q_workers)}
        if name:
            env["Q_CLUSTER_NAME"] = name
        with open(self.tmp / f"qcluster-{name or 'work'}.log", "ab") as log:
            proc = subprocess.Popen(
                [PY, "manage.py", "qcluster"],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.clusters.append(proc)
        return proc

    def api(self, method, path, token, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(
                method,
                path,
                body=json.dumps(body) if body is not None else None,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            conn.close()

    def start_backups(self):
        """Both plans' backups, queued through the API as automation would."""
        ids = []
        for plan in self.plan_objects:
            status, data = self.api("POST", "/api/v1/backups", self.backup_token, {"plan": plan.pk, "label": "load"})
            if status != 202:
                raise RuntimeError(f"POST /api/v1/backups for plan {plan.pk} answered {status}: {data}")
            ids.append(data["id"])
        return ids

    def wait_for(self, ids, on_deadline=None, deadline=None):
        """Polls the catalog until every backup is over, bounded by --timeout;
        calls `on_deadline` once when `deadline` (monotonic) passes first."""
        from catalog.models import Backup

        give_up = time.monotonic() + self.args.timeout
        while time.monotonic() < give_up:
            if deadline is not None and on_deadline is not None and time.monotonic() >= deadline:
                on_deadline()
                on_deadline = None
            if not Backup.objects.filter(pk__in=ids).active().exists():
                return
            time.sleep(0.2)
        raise RuntimeError(f"backups {ids} still running after {self.args.timeout} s; see {self.tmp}/qcluster-work.log")

    def settle(self):
        """Waits until the work queue is empty: each good backup queues its
        checksum verification and retention, which would otherwise run beside
        the next round's backups (the ORM broker deletes a task once done)."""
        from django.conf import settings
        from django_q.models import OrmQ

        give_up = time.monotonic() + self.args.timeout
        while OrmQ.objects.filter(key=settings.WORK_CLUSTER).exists():
            if time.monotonic() > give_up:
                raise RuntimeError(f"the work queue did not empty in {self.args.timeout} s")
            time.sleep(0.2)

    def figures(self, ids):
        from catalog.models import Backup

        out = []
        for backup in Backup.objects.filter(pk__in=ids).order_by("pk"):
            seconds = (backup.finished_at - backup.started_at).total_seconds() if backup.started_at else None
            # Throughput: the source database's size over the backup's own run
            # (claimed by a worker → finished), so queueing is not counted.
            out.append(
                {
                    "id": backup.pk,
                    "plan": backup.plan.name,
                    "status": backup.status,
                    "error": backup.error,
                    "raw_bytes": backup.raw_bytes,
                    "stored_bytes": backup.stored_bytes,
                    "seconds": seconds,
                    "mb_per_s": self.results["source_db_bytes"] / 2**20 / seconds if seconds else None,
                }
            )
        return out

    def pages(self, ids=()):
        plan = self.plan_objects[0]
        pages = {
            "dashboard": "/",
            "backups": "/backups/",
            "plans": "/plans/",
            "plan": f"/plans/{plan.pk}/",
            "api_backups": "/api/v1/backups",
            "api_status": "/api/v1/status",
        }
        if ids:
            pages |= {
                "backup": f"/backups/{ids[0]}/",
                "backup_progress": f"/backups/{ids[0]}/progress/",
                "api_backup": f"/api/v1/backups/{ids[-1]}",
            }
        return pages

    def round(self, kind):
        from bench import catalog_data

        self.settle()
        cpu0, t0 = self.cpu(), time.perf_counter()
        ids = self.start_backups()
        load = None
        if kind == "loaded":
            # The clients run as long as the backups do, never longer than --seconds.
            stop, box = threading.Event(), {}
            pages = self.pages(ids)
            script = (
                uniform_script(list(pages.values()), self.args.pace)
                if self.args.pace is not None
                else users_script(pages, self.args.think)
            )
            clients = threading.Thread(
                target=lambda: box.update(
                    catalog_data.hammer(self.port, pages, self.args.clients, stop=stop, auth=self.auth, script=script)
                )
            )
            clients.start()
            try:
                self.wait_for(ids, on_deadline=stop.set, deadline=time.monotonic() + self.args.seconds)
            finally:
                stop.set()
                clients.join()
            load = box
        else:
            self.wait_for(ids)
        wall, cpu = time.perf_counter() - t0, self.cpu()
        result = {
            "kind": kind,
            "wall": wall,
            "backups": self.figures(ids),
            "load": load,
            "cpu_seconds": {k: cpu[k] - cpu0[k] for k in cpu} | {"available": wall * psutil.cpu_count()},
        }
        speeds = ", ".join(f"{b['status']} {b['mb_per_s'] or 0:.1f} MB/s" for b in result["backups"])
        extra = f"; {load['requests']} requests, {load['errors']} errors, p95 {load['p95_ms']:.0f} ms" if load else ""
        print(f"  {kind}: {speeds}{extra}", flush=True)
        return result

    def cpu(self):
        """CPU seconds used so far by the web server, the task clusters (with
        their reaped pg_dump children), this process (the clients), and the
        whole machine (the rest is mostly PostgreSQL, and anyone else)."""
        times = psutil.cpu_times()
        return {
            "web": tree_cpu(self.gunicorn),
            "workers": sum(tree_cpu(p) for p in self.clusters),
            "clients": sum(os.times()[:2]),
            "machine": sum(times) - times.idle - getattr(times, "iowait", 0),
        }

    def run(self):
        t0 = time.perf_counter()
        self.setup_django()
        from django.contrib.auth.models import User

        from bench import catalog_data
        from catalog.api import tokens

        self.results["machine"] = machine()
        t1 = time.perf_counter()
        self.results["source_db_bytes"] = make_source(self.src_db, self.args.scale)
        t2 = time.perf_counter()
        print(f"source database: {self.results['source_db_bytes'] / 2**20:.0f} MB", flush=True)
        self.plan_objects = self.plans()
        _, session, read_token = catalog_data.credentials()
        self.auth = (session, read_token)
        bench_user = User.objects.get(username="bench")  # made by catalog_data.credentials() just above
        self.backup_token = tokens.create_token("bench", "bench-load", ["backup"], owner=bench_user)[1]
        self.gunicorn, self.port = self.start_gunicorn()
        if self.args.web_cpu_shares:
            self.web_cgroup = cpu_cgroup(f"strongroom-bench-web-{self.tag}", self.args.web_cpu_shares, self.gunicorn)
        self.start_cluster()
        self.start_cluster(name="strongroom-monitor")  # production runs both (README)
        # Warm every gunicorn worker before measuring: a production server is warm.
        catalog_data.hammer(self.port, self.pages(), self.args.clients, per_client=len(self.pages()), auth=self.auth)
        t3 = time.perf_counter()
        rounds = []
        for i in range(self.args.rounds):
            # Alternate the order, so that neither kind always runs on a warmer cache.
            for kind in ("idle", "loaded") if i % 2 == 0 else ("loaded", "idle"):
                rounds.append(self.round(kind))
        self.results["rounds"] = rounds
        self.results["summary"] = summary(rounds, self.args.min_ratio)
        self.results["seconds"] = {
            "migrate": t1 - t0,
            "source": t2 - t1,
            "start_and_warm": t3 - t2,
            "rounds": time.perf_counter() - t3,
        }
        self.results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        return self.results


# An automation script waiting for its backup asks for its state this often.
API_POLL_SECONDS = 2
# The running backup's page polls its progress partial this often (hx-trigger "every 1s").
PROGRESS_POLL_SECONDS = 1


def users_script(pages, think):
    """What people and scripts do: every fourth client is an automation
    script polling the API (status, backups, its backup) every
    API_POLL_SECONDS; the others are browsers going from page to page,
    staying `think` seconds on each; on the running backup's page the browser
    polls its progress every PROGRESS_POLL_SECONDS meanwhile, as htmx does."""
    api = [pages["api_status"], pages["api_backups"], pages["api_backup"]]
    visits = [pages[name] for name in ("dashboard", "backups", "backup", "plans", "plan")]
    polls = max(int(think / PROGRESS_POLL_SECONDS) - 1, 0)  # after the page itself, while on it

    def browser(index):
        for i in itertools.count(index):
            page = visits[i % len(visits)]
            if page == pages["backup"]:
                yield page, PROGRESS_POLL_SECONDS
                for _ in range(polls):
                    yield pages["backup_progress"], PROGRESS_POLL_SECONDS
            else:
                yield page, think

    def script(index):
        if index % 4 == 3:
            return ((api[i % len(api)], API_POLL_SECONDS) for i in itertools.count(index))
        return browser(index)

    return script


def uniform_script(paths, pace):
    """Every client cycles over every page, a request every `pace` seconds (0: at once)."""
    return lambda index: ((paths[i % len(paths)], pace) for i in itertools.count(index))


def tree_cpu(proc):
    total = 0.0
    try:
        root = psutil.Process(proc.pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return total
    for process in procs:
        try:
            t = process.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:  # it just ended
            pass
    return total


def cpu_cgroup(name, shares, proc):
    """Moves `proc` and its children (gunicorn's workers) into a new cgroup-v1
    CPU group with `shares` (the root's are 1024): what `CPUWeight=` on a
    systemd unit does, so a busy web server yields the CPU to the backups."""
    group = CGROUP_CPU / name
    group.mkdir()
    (group / "cpu.shares").write_text(str(shares))
    root = psutil.Process(proc.pid)
    for process in [root, *root.children(recursive=True)]:
        (group / "cgroup.procs").write_text(str(process.pid))
    return group


def remove_cgroup(group):
    """Moves what is left in `group` back to the root group, then removes it."""
    for pid in (group / "cgroup.procs").read_text().split():
        with contextlib.suppress(OSError):  # it just ended
            (CGROUP_CPU / "cgroup.procs").write_text(pid)
    try:
        group.rmdir()
    except OSError as exc:
        print(f"could not remove {group}: {exc}", file=sys.stderr)


def stop_groups(procs):
    """Stops process groups this benchmark started: SIGTERM to each leader
    (django-q2 then stops its own workers; a signal to the whole group makes
    it hang), then SIGKILL for whatever is left in those groups."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.poll()


def summary(rounds, min_ratio):
    def speeds(kind):
        return [b["mb_per_s"] or 0 for r in rounds if r["kind"] == kind for b in r["backups"]]

    loads = [r["load"] for r in rounds if r["load"]]
    latencies = {k: median([x[k] for x in loads]) for k in ("p50_ms", "p95_ms")}
    idle, loaded = median(speeds("idle")), median(speeds("loaded"))
    backups = [b for r in rounds for b in r["backups"]]
    out = {
        "pair_ratios": pair_ratios(rounds),
        "backups": len(backups),
        "backups_succeeded": sum(b["status"] == "succeeded" for b in backups),
        "requests": sum(x["requests"] for x in loads),
        "errors": sum(x["errors"] for x in loads),
        "error_samples": [e for x in loads for e in x["error_samples"]][:10],
        "keepalive_retries": sum(x["keepalive_retries"] for x in loads),
        "retry_samples": [e for x in loads for e in x["retry_samples"]][:10],
        "requests_per_s": median([x["requests_per_s"] for x in loads]),
        **latencies,
        "max_ms": max((x["max_ms"] for x in loads), default=None),
        "idle_source_mb_per_s": idle,
        "loaded_source_mb_per_s": loaded,
        "ratio": ratio(loaded, idle),
        "min_ratio": min_ratio,
    }
    out["passed"] = (
        out["errors"] == 0
        and out["backups_succeeded"] == out["backups"]
        and out["ratio"] is not None
        and out["ratio"] >= min_ratio
    )
    return out


def pair_ratios(rounds):
    """Each loaded round's mean throughput over that of the idle round run
    right beside it (the order idle, loaded, loaded, idle, ... gives every
    loaded round one): the machine's own speed drifts between rounds on a
    shared host, and a neighbour has drifted least."""

    def mean_speed(r):
        return sum(b["mb_per_s"] or 0 for b in r["backups"]) / len(r["backups"])

    out = []
    for i, r in enumerate(rounds):
        if r["kind"] != "loaded":
            continue
        neighbours = [rounds[j] for j in (i - 1, i + 1) if 0 <= j < len(rounds) and rounds[j]["kind"] == "idle"]
        if neighbours:
            out.append(ratio(mean_speed(r), mean_speed(neighbours[0])))
    return out


def render(r):
    """The markdown for bench/RESULTS.md."""
    a, s, m = r["args"], r["summary"], r["machine"]
    # Runs from before --think/--pace existed had clients that never paused.
    options = (
        f" --pace {a['pace']:g}"
        if a.get("pace") is not None
        else f" --think {a['think']:g}"
        if "think" in a
        else " --pace 0"
    )
    options += f" --web-cpu-shares {a['web_cpu_shares']}" if a.get("web_cpu_shares") else ""
    out = [
        f"Run {r['started']} → {r['finished']}; `python -m bench.load --scale {a['scale']} --rounds {a['rounds']} "
        f"--clients {a['clients']} --seconds {a['seconds']:g}{options}`. Machine: {m['cores']} cores ({m['cpu']}), "
        f"PostgreSQL {m['postgresql_server'].split()[0]}. "
        f"Source database: {r['source_db_bytes'] / 2**20:,.0f} MB.\n",
        "| Round | backups s (A, B) | MB/s (A, B) | requests | errors | req/s | p50 / p95 / max ms "
        "| CPU s: web / workers / clients / rest, of available |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, x in enumerate(r["rounds"], 1):
        b, load, cpu = x["backups"], x["load"] or {}, x["cpu_seconds"]
        other = cpu["machine"] - cpu["web"] - cpu["workers"] - cpu["clients"]
        out.append(
            "| "
            + " | ".join(
                [
                    f"{i} {x['kind']}",
                    ", ".join(f"{y['seconds']:.1f}" for y in b),
                    ", ".join(f"{y['mb_per_s']:.0f}" for y in b),
                    str(load.get("requests", "–")),
                    str(load.get("errors", "–")),
                    f"{load['requests_per_s']:.1f}" if load else "–",
                    f"{load['p50_ms']:.0f} / {load['p95_ms']:.0f} / {load['max_ms']:.0f}" if load else "–",
                    f"{cpu['web']:.0f} / {cpu['workers']:.0f} / {cpu['clients']:.0f} / {other:.0f}, "
                    f"of {cpu['available']:.0f}",
                ]
            )
            + " |"
        )
    pairs = ""
    if s.get("pair_ratios"):
        p = s["pair_ratios"]
        pairs = f"; each loaded round ÷ the idle round beside it: median {median(p)}, {min(p)}–{max(p)}"
    out.append(
        f"\nMedian throughput per backup: idle {s['idle_source_mb_per_s']:.0f} MB/s, loaded "
        f"{s['loaded_source_mb_per_s']:.0f} MB/s: **ratio {s['ratio']}** (target ≥ {s['min_ratio']}){pairs}. "
        f"Requests under load: {s['requests']}, **{s['errors']} errors**, median of rounds "
        f"{s['requests_per_s']:.1f} requests/s, p50 {s['p50_ms']:.0f} ms, p95 {s['p95_ms']:.0f} ms, "
        f"max {s['max_ms']:.0f} ms; GETs retried on a keep-alive connection the server had just closed: "
        f"{s['keepalive_retries']}. Backups succeeded: {s['backups_succeeded']} of {s['backups']}. "
        f"Passed: {'yes' if s['passed'] else '**no**'}."
    )
    return "\n".join(out) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=60, help="pgbench scale of the source (60: ~1.3 GB)")
    parser.add_argument("--rounds", type=int, default=2, help="idle + loaded pairs, order alternating (medians)")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=120, help="longest the clients run in one loaded round")
    parser.add_argument(
        "--think",
        type=float,
        default=5,
        help="seconds a browser client stays on a page (polling progress on the backup's page)",
    )
    parser.add_argument(
        "--pace",
        type=float,
        metavar="SECONDS",
        help="instead: every client cycles over every page, one request every SECONDS (0: no pause)",
    )
    parser.add_argument(
        "--web-cpu-shares",
        type=int,
        metavar="SHARES",
        help="run gunicorn in a cgroup-v1 CPU group with these shares (root's: 1024; needs root)",
    )
    parser.add_argument("--timeout", type=float, default=900, help="longest a round's backups may take")
    parser.add_argument("--gunicorn-workers", type=int, default=4)
    parser.add_argument("--q-workers", type=int, default=2)
    parser.add_argument("--min-ratio", type=float, default=0.8, help="loaded ÷ idle throughput that passes")
    parser.add_argument("--no-assert", action="store_true", help="report only; exit 0 whatever the figures")
    parser.add_argument("--json", default=str(HERE / "results-load.json"), help="where to write the results")
    parser.add_argument("--report", metavar="JSON", help="only print the markdown tables of an earlier run")
    args = parser.parse_args(argv)
    if args.report:
        print(render(json.loads(Path(args.report).read_text())))
        return 0
    bench = LoadBench(args)
    try:
        results = bench.run()
    finally:
        bench.close()
    Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    print(render(results))
    return 0 if args.no_assert or results["summary"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

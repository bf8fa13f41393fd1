"""The benchmarks still run: bench.run at a tiny scale, one run, a few hundred
generated backups; bench.load at scale 1 with two clients; bench.rpo once;
bench.hosts with six sources and a worker on each of its two hosts. They
check that every figure was produced (and, under load or across hosts, that
nothing failed), never how fast."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import redis as redis_harness

ROOT = Path(__file__).resolve().parent.parent


def run_bench(argv, pg_server, timeout=300):
    """Runs a benchmark module against the test PostgreSQL; on timeout it is
    interrupted (Ctrl-C), so that it still drops its databases and stops its
    servers, before it is killed."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "STRONGROOM_DATA_DIR")
    }
    env.update(BENCH_PG_HOST=pg_server["host"], BENCH_PG_PORT=str(pg_server["port"]))
    proc = subprocess.Popen(
        [sys.executable, "-m", *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        raise AssertionError(f"{argv[0]} took over {timeout} s: {err[-3000:]}") from None
    assert proc.returncode == 0, err[-3000:]
    return out


def test_it_runs_every_benchmark_at_a_tiny_scale(tmp_path, pg_server):
    out = tmp_path / "results.json"
    run_bench(
        [
            "bench.run",
            "--scale",
            "1",
            "--runs",
            "1",
            "--backups",
            "300",
            "--requests",
            "3",
            "--clients",
            "4",
            "--gunicorn-workers",
            "2",
            "--dataset",
            "orders",
            "--restore-jobs",
            "1,2",
            "--format",
            "directory",
            "--dump-jobs",
            "2",
            "--json",
            str(out),
        ],
        pg_server,
    )

    figures = json.loads(out.read_text())
    assert figures["dataset"] == "orders"
    backup = figures["backup"]["medians"]
    assert set(backup) == {"guide", "floor", "floor_directory", "strongroom_local", "strongroom_local_s3"}
    assert figures["backup"]["ratios"]["local_vs_floor_directory"] > 0
    assert all(b["wall"] > 0 and b["rss_mb"] > 0 for b in backup.values())
    assert backup["strongroom_local"]["size_mb"] > 0
    assert figures["memory"]["rss_mb_small"] > 0
    assert set(figures["restore"]["medians"]) == {"guide", "pg_restore_j2", "strongroom_j1", "strongroom_j2"}
    assert figures["restore"]["ratios"]["j1"]["vs_pg_restore_j2"] > 0
    assert figures["verify"]["medians"]["strongroom"]["mb_per_s"] > 0
    assert figures["verify"]["ratios"]["process_time_vs_sha256sum"] > 0
    dashboard = figures["dashboard"]
    assert dashboard["backups"] >= 300 and dashboard["copies"] >= 900
    assert set(dashboard["serial"]) >= {
        "home",
        "backups_first_page",
        "backups_filtered",
        "backup_detail",
        "api_backups",
    }
    assert dashboard["concurrent"]["requests"] > 0
    assert dashboard["concurrent"]["errors"] == 0
    assert "stored size <= 0.9x guide" in figures["targets"]
    report = subprocess.run(
        [sys.executable, "-m", "bench.report", str(out), str(out)], cwd=ROOT, capture_output=True, text=True
    )
    assert report.returncode == 0, report.stderr
    assert "RESTORE_JOBS=1" in report.stdout and "| Goal |" in report.stdout


def test_it_runs_the_load_benchmark_at_a_tiny_scale(tmp_path, pg_server):
    out = tmp_path / "load.json"
    run_bench(
        [
            "bench.load",
            "--scale",
            "1",
            "--rounds",
            "1",
            "--clients",
            "2",
            "--seconds",
            "5",
            "--gunicorn-workers",
            "1",
            "--timeout",
            "60",
            "--no-assert",
            "--json",
            str(out),
        ],
        pg_server,
    )

    figures = json.loads(out.read_text())
    assert [r["kind"] for r in figures["rounds"]] == ["idle", "loaded"]
    backups = [b for r in figures["rounds"] for b in r["backups"]]
    assert [b["status"] for b in backups] == ["succeeded"] * 4, backups
    assert all(b["mb_per_s"] > 0 for b in backups)
    summary = figures["summary"]
    assert summary["requests"] > 0 and summary["errors"] == 0, summary["error_samples"]
    loaded = figures["rounds"][1]["load"]
    assert set(loaded["statuses"]) == {"200"}
    assert summary["idle_source_mb_per_s"] > 0 and summary["ratio"] > 0


def test_it_runs_the_rpo_benchmark_once(tmp_path, pg_server):
    out = tmp_path / "rpo.json"
    run_bench(["bench.rpo", "--runs", "1", "--no-assert", "--json", str(out)], pg_server)

    figures = json.loads(out.read_text())
    [run] = figures["rpo"]["runs"]
    assert run["seconds"] > 0 and run["kind"] == "partial"  # stored before its segment ended
    assert figures["targets"]


def test_it_runs_the_hosts_benchmark_with_six_sources(tmp_path, pg_server):
    if not redis_harness.answers("redis://127.0.0.1:6379/0") and not shutil.which("redis-server"):
        pytest.skip("no Redis answers at 127.0.0.1:6379 and there is no redis-server binary to start one")
    out = tmp_path / "hosts.json"
    run_bench(
        [
            "bench.hosts",
            "--sources",
            "6",
            "--workers-per-host",
            "1",
            "--runs",
            "1",
            "--solo",
            "1",
            "--stats-wait",
            "0",
            "--no-tick-wait",
            "--timeout",
            "60",
            "--json",
            str(out),
        ],
        pg_server,
        timeout=120,
    )

    figures = json.loads(out.read_text())
    assert figures["failures"] == []
    assert figures["solo"]["count"] == 1
    [run] = figures["runs"]
    assert run["succeeded"] == run["backups"] == 6
    assert run["verifications_passed"] >= 6
    assert {b["host"] for b in run["per_backup"]} == {"host-a", "host-b"}
    assert all(host["backups"] > 0 for host in run["hosts"].values()), run["hosts"]
    assert run["backups_per_minute"] > 0 and run["queue_latency_seconds"]["max"] >= 0
    assert run["resources"]["metadata_db"]["xact_commit"] > 0
    assert run["resources"]["cpu_seconds"]["postgresql"] > 0
    report = subprocess.run(
        [sys.executable, "-m", "bench.hosts", "--report", str(out)], cwd=ROOT, capture_output=True, text=True
    )
    assert report.returncode == 0, report.stderr
    assert "| host-a / host-b |" in report.stdout

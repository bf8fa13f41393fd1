"""The benchmarks still run: bench.run at a tiny scale, one run, a few hundred
generated backups. It checks that every figure was produced, never how fast."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_it_runs_every_benchmark_at_a_tiny_scale(tmp_path, pg_server):
    out = tmp_path / "results.json"
    argv = [sys.executable, "-m", "bench.run", "--scale", "1", "--runs", "1", "--backups", "300", "--requests", "3",
            "--clients", "4", "--gunicorn-workers", "2", "--json", str(out)]
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "STRONGROOM_DATA_DIR")}
    env.update(BENCH_PG_HOST=pg_server["host"], BENCH_PG_PORT=str(pg_server["port"]))
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]

    figures = json.loads(out.read_text())
    backup = figures["backup"]["medians"]
    assert set(backup) == {"guide", "floor", "strongroom_local", "strongroom_local_s3"}
    assert all(b["wall"] > 0 and b["rss_mb"] > 0 for b in backup.values())
    assert backup["strongroom_local"]["size_mb"] > 0
    assert figures["memory"]["rss_mb_small"] > 0
    assert set(figures["restore"]["medians"]) == {"guide", "pg_restore_j2", "strongroom"}
    assert figures["verify"]["medians"]["strongroom"]["mb_per_s"] > 0
    dashboard = figures["dashboard"]
    assert dashboard["backups"] >= 300 and dashboard["copies"] >= 900
    assert set(dashboard["serial"]) >= {"home", "backups_first_page", "backups_filtered", "backup_detail", "api_backups"}
    assert dashboard["concurrent"]["requests"] > 0
    assert dashboard["concurrent"]["errors"] == 0
    assert figures["targets"]

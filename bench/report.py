"""Markdown tables from bench.run JSON files, for bench/RESULTS.md.

python -m bench.report results.json [more.json ...]

With several files (say, two data sets at two sizes), each run's tables come
first, then one table of every goal across the runs.
"""

import json
import sys


def row(cells):
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def num(value, digits=2):
    return "–" if value is None else f"{value:.{digits}f}"


def render(r):
    out = []
    m = r["machine"]
    out.append(f"Run {r['started']} → {r['finished']}; `{' '.join(argv(r['args']))}`.\n")
    out.append(
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['ram_gb']} GB RAM; PostgreSQL server {m['postgresql_server']}, "
        f"{m['pg_dump']}; Python {m['python']}, Django {m['django']}, python-zstandard {m['zstandard']} "
        f"(zstd {m['zstd_lib']}), {m['gzip']}.\n"
    )
    if "backup" in r:
        b = r["backup"]
        out.append(
            f"Source database: {r['source_db_bytes'] / 2**20:.0f} MB ({describe(r)}); small one for the memory "
            f"check: {r['small_db_bytes'] / 2**20:.0f} MB (scale {r['args']['small_scale']}). Format: "
            f"{plan_format(r['args'])}. Compression: zstd level {r['args'].get('level') or 'default (1)'}.\n"
        )
        out.append(
            row(
                [
                    f"Backup (median of {b['medians']['floor']['runs']:d})",
                    "wall s",
                    "CPU s",
                    "stored MB",
                    "peak RSS MB (tree)",
                    "wall ÷ floor",
                    "wall ÷ guide",
                ]
            )
        )
        out.append(row(["---"] * 7))
        floor, guide = b["medians"]["floor"]["wall"], b["medians"]["guide"]["wall"]
        names = {
            "guide": "guide: pg_dump | gzip, sha256sum",
            "floor": "floor: pg_dump -Fc -Z0 > /dev/null",
            "floor_directory": f"floor: pg_dump -Fd -j {r['args'].get('dump_jobs')} -Z0 (files)",
            "strongroom_local": "Strongroom → local",
            "strongroom_local_s3": "Strongroom → local + S3 (moto)",
        }
        for key, label in names.items():
            if key not in b["medians"]:
                continue
            x = b["medians"][key]
            out.append(
                row(
                    [
                        label,
                        num(x["wall"]),
                        num(x["cpu"]),
                        num(x.get("size_mb")),
                        num(x["rss_mb"], 1),
                        num(x["wall"] / floor),
                        num(x["wall"] / guide),
                    ]
                )
            )
        sr = b["medians"]["strongroom_local"]
        out.append(
            f"\nStrongroom's wall and CPU are those of the backup service call in a worker process "
            f"(the process itself, with Python start-up and django.setup(), took {num(sr['process_wall'])} s).\n"
        )
        mem = r["memory"]
        out.append(
            f"Memory scaling: peak RSS {num(mem['rss_mb_large'], 1)} MB at scale {mem['scale_large']}, "
            f"{num(mem['rss_mb_small'], 1)} MB at scale {mem['scale_small']}.\n"
        )
    if "restore" in r:
        x = r["restore"]
        out.append(row(["Restore into a new database", "wall s", "CPU s", "peak RSS MB (tree)"]))
        out.append(row(["---"] * 4))
        names = {
            "guide": "guide: gunzip -c | psql",
            "pg_restore_j2": "pg_restore -j 2 (local custom file, default compression)",
        }
        for n in x["jobs"]:
            how = "streamed into one pg_restore" if n == 1 else f"spooled, pg_restore -j {n}"
            names[f"strongroom_j{n}"] = f"Strongroom, RESTORE_JOBS={n} (fetch, verify, decrypt, {how})"
        for key, label in names.items():
            y = x["medians"][key]
            out.append(row([label, num(y["wall"]), num(y["cpu"]), num(y["rss_mb"], 1)]))
        for n in x["jobs"]:
            recorded = x["medians"][f"strongroom_j{n}"].get("steps", {})  # not in runs before they were recorded
            steps = ", ".join(f"{step} {num(sec)} s" for step, sec in recorded.items()) or "not recorded"
            out.append(f"\nRESTORE_JOBS={n}, the job's steps (medians): {steps}.")
        ratios = "; ".join(
            f"RESTORE_JOBS={name[1:]}: ÷ guide {v['vs_guide']}, ÷ pg_restore -j 2 {v['vs_pg_restore_j2']} "
            f"(the fetch, verify and restore step alone {v.get('restore_step_vs_pg_restore_j2', '–')}; whole process "
            f"{v['process_vs_pg_restore_j2']})"
            for name, v in x["ratios"].items()
        )
        out.append(f"\nRatios: {ratios}.\n")
    if "verify" in r:
        v = r["verify"]
        out.append(
            row([f"Checksum of a {v['file_mb']:.0f} MB stored copy ({v['object']})", "wall s", "MB/s", "peak RSS MB"])
        )
        out.append(row(["---"] * 4))
        for key, label in {"sha256sum": "sha256sum", "strongroom": "Strongroom checksum verification"}.items():
            y = v["medians"][key]
            out.append(row([label, num(y["wall"]), num(y["mb_per_s"], 0), num(y["rss_mb"], 1)]))
        sr = v["medians"]["strongroom"]
        out.append(
            f"\nTime ratio Strongroom ÷ sha256sum: {v['ratios']['time_vs_sha256sum']} in the worker process, "
            f"{v['ratios']['process_time_vs_sha256sum']} for the whole process ({num(sr['process_wall'])} s "
            f"with Python start-up and django.setup()).\n"
        )
    if "dashboard" in r:
        d = r["dashboard"]
        out.append(
            f"Catalog: {d['backups']:,} backups, {d['copies']:,} copies (generated in "
            f"{r['dashboard_generate_seconds']:.1f} s).\n"
        )
        out.append(
            row(["Page (one client, Django test client)", "p50 ms", "p95 ms", "queries", "queries with 60 backups"])
        )
        out.append(row(["---"] * 5))
        for name, p in d["serial"].items():
            out.append(
                row(
                    [
                        f"{name} `{p['path']}`",
                        num(p["p50_ms"], 1),
                        num(p["p95_ms"], 1),
                        p["queries"],
                        p["queries_at_small_catalog"],
                    ]
                )
            )
        c = d["concurrent"]
        out.append(
            f"\ngunicorn on loopback, {c['clients']} concurrent clients: {c['requests']} requests, "
            f"{c['errors']} errors, {c['requests_per_s']:.1f} requests/s, p50 {c['p50_ms']:.0f} ms, "
            f"p95 {c['p95_ms']:.0f} ms.\n"
        )
        out.append(row(["Path (concurrent)", "p50 ms", "p95 ms"]))
        out.append(row(["---"] * 3))
        for path, p in c["per_page"].items():
            out.append(row([f"`{path}`", num(p["p50_ms"], 0), num(p["p95_ms"], 0)]))
        out.append("")
    out.append(row(["Target", "measured", "met"]))
    out.append(row(["---"] * 3))
    for name, (value, met) in r["targets"].items():
        out.append(row([name, value, "yes" if met else "**no**"]))
    return "\n".join(out) + "\n"


def describe(r):
    if r.get("dataset", "pgbench") == "orders":
        return f"pgbench scale {r['args']['scale']} plus {r['args']['scale'] * 28_000:,} orders"
    return f"pgbench scale {r['args']['scale']} plus bench_notes"


def across(runs):
    """One table: each goal (rows) in each run (columns)."""
    heads = [
        f"{r.get('dataset', 'pgbench')}, {r['source_db_bytes'] / 2**20:.0f} MB"
        + (", directory" if r["args"].get("format") == "directory" else "")
        for r in runs
    ]
    goals = list(dict.fromkeys(name for r in runs for name in r["targets"]))
    out = [row(["Goal", *heads]), row(["---"] * (len(runs) + 1))]
    for goal in goals:
        cells = []
        for r in runs:
            if goal not in r["targets"]:
                cells.append("–")
                continue
            value, met = r["targets"][goal]
            cells.append(f"{value} {'yes' if met else '**no**'}")
        out.append(row([goal, *cells]))
    return "\n".join(out) + "\n"


def plan_format(args):
    if args.get("format") == "directory":
        return f"directory, {args['dump_jobs']} dump jobs"
    return "custom"


def argv(args):
    return [
        "python -m bench.run",
        *([f"--dataset {args['dataset']}"] if args.get("dataset", "pgbench") != "pgbench" else []),
        f"--scale {args['scale']}",
        *([f"--format directory --dump-jobs {args['dump_jobs']}"] if args.get("format") == "directory" else []),
        *([f"--level {args['level']}"] if args.get("level") else []),
        *([f"--restore-jobs {args['restore_jobs']}"] if args.get("restore_jobs") else []),
        f"--runs {args['runs']}",
        *([f"--only {args['only']}"] if args["only"] else []),
        f"--backups {args['backups']}",
        f"--requests {args['requests']}",
        f"--clients {args['clients']}",
    ]


if __name__ == "__main__":
    runs = []
    for path in sys.argv[1:]:
        with open(path) as results:
            runs.append(json.load(results))
    for run in runs:
        print(render(run))
    if len(runs) > 1:
        print(across(runs))

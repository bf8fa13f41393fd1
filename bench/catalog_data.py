"""A large catalog for the dashboard benchmark: backups and copies inserted
with bulk SQL (generate_series), then the pages timed through Django's test
client (with query counts) and through gunicorn under concurrent clients."""

import http.client
import itertools
import statistics
import threading
import time

from django.db import connection

FILL = {
    "boolean": "false",
    "integer": "0",
    "bigint": "0",
    "smallint": "0",
    "double precision": "0",
    "jsonb": "'{}'",
    "timestamp with time zone": "now()",
    "date": "current_date",
}

BACKUP_COLUMNS = {
    "source_id": "(SELECT id FROM sources ORDER BY id OFFSET (g %% (SELECT count(*) FROM sources)) LIMIT 1)",
    "status": "(ARRAY['succeeded','succeeded','succeeded','succeeded','failed','partial'])[1 + g %% 6]",
    "format": "'custom'",
    "compression": "'zstd'",
    "encrypted": "true",
    "trigger": "'schedule'",
    "raw_bytes": "(1000000 + g * 37)::bigint",
    "stored_bytes": "(300000 + g * 11)::bigint",
    "sha256": "md5(g::text) || md5((g+1)::text)",
    "object_key": "'bench/' || g || '.dump.zst.enc'",
    "table_counts": "'{\"public.pgbench_accounts\": 100000}'",
    "created_at": "now() - g * interval '10 minutes'",
    "started_at": "now() - g * interval '10 minutes'",
    "finished_at": "now() - g * interval '10 minutes' + interval '42 seconds'",
    "server_version": "'16.4'",
    "tool_version": "'pg_dump (PostgreSQL) 16.4'",
    "label": "''",
}


def not_null_columns(table):
    with connection.cursor() as cur:
        cur.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s "
            "AND is_nullable = 'NO' AND column_default IS NULL AND column_name <> 'id' "
            "AND is_identity = 'NO'",
            [table],
        )
        return cur.fetchall()


def values_for(table, wanted):
    columns = dict(wanted)
    for name, data_type in not_null_columns(table):
        columns.setdefault(name, FILL.get(data_type, "''"))
    return columns


def generate(count, copies_per_backup=3):
    """Inserts `count` backups over the existing sources and plans, and
    `copies_per_backup` copies of each over the existing destinations."""
    from catalog import services
    from catalog.models import BackupPlan, Destination, Source

    sources = list(Source.objects.all())
    if len(sources) < 5:
        for i in range(5 - len(sources)):
            sources.append(
                services.save_source(
                    "bench",
                    Source(
                        name=f"Generated {i}",
                        engine="postgresql",
                        host="127.0.0.1",
                        port=5432,
                        dbname=f"gen{i}",
                        user="postgres",
                    ),
                    secrets={"password": None},
                )
            )
    destinations = list(Destination.objects.all())
    for i in range(max(0, copies_per_backup - len(destinations))):
        destinations.append(
            services.save_destination(
                "bench", Destination(name=f"Generated dest {i}", kind="local", path=f"/nonexistent/{i}")
            )
        )
    plans = list(BackupPlan.objects.filter(source__in=sources))
    if not plans:
        plans.append(
            services.save_plan("bench", BackupPlan(name="Generated", source=sources[0]), destinations=destinations[:1])
        )
    backup_cols = values_for("catalog_backup", BACKUP_COLUMNS)
    backup_cols["source_id"] = f"(ARRAY{[s.pk for s in sources]})[1 + g % {len(sources)}]"
    backup_cols["plan_id"] = f"(ARRAY{[p.pk for p in plans]})[1 + g % {len(plans)}]"
    # A plan belongs to one source; keep the pair consistent where a plan exists for it.
    plan_by_source = {p.source_id: p.pk for p in plans}
    source_ids = [s.pk for s in sources]
    plan_ids = ", ".join(str(plan_by_source.get(pk, "NULL")) for pk in source_ids)
    backup_cols["plan_id"] = f"(ARRAY[{plan_ids}]::bigint[])[1 + g % {len(sources)}]"
    names = ", ".join(backup_cols)
    exprs = ", ".join(v.replace("%%", "%").replace("%", "%%") for v in backup_cols.values())
    dest_ids = [d.pk for d in destinations[:copies_per_backup]]
    copy_cols = values_for(
        "catalog_copy",
        {
            "backup_id": "b.id",
            "destination_id": "d.id",
            "status": "CASE WHEN b.status = 'failed' THEN 'failed' ELSE 'durable' END",
            "key": "b.object_key",
            "manifest_key": "b.object_key || '.manifest.json'",
            "size": "b.stored_bytes",
            "sha256": "b.sha256",
            "durable_at": "b.finished_at",
            "error": "''",
        },
    )
    with connection.cursor() as cur:
        cur.execute(
            f"INSERT INTO catalog_backup ({names}) SELECT {exprs} FROM generate_series(1, %s) AS g RETURNING id",
            [count],
        )
        ids = [row[0] for row in cur.fetchall()]
        cur.execute(
            f"INSERT INTO catalog_copy ({', '.join(copy_cols)}) SELECT {', '.join(copy_cols.values())} "
            f"FROM catalog_backup b CROSS JOIN catalog_destination d "
            f"WHERE b.id >= %s AND d.id = ANY(%s)",
            [min(ids), dest_ids],
        )
        cur.execute("ANALYZE catalog_backup; ANALYZE catalog_copy")
    return ids


def pages(ids, count):
    from catalog.models import Source

    source = Source.objects.order_by("pk").first()
    last_page = min(500, max(1, count // 50))
    return {
        "home": "/",
        "backups_first_page": "/backups/",
        "backups_filtered": f"/backups/?source={source.pk}&status=failed",
        f"backups_page_{last_page}": f"/backups/?page={last_page}",
        "backup_detail": f"/backups/{ids[len(ids) // 2]}/",
        "api_backups": "/api/v1/backups",
    }


def credentials():
    """A superuser's session cookie for the pages and a read token for the API."""
    from django.contrib.auth.models import User
    from django.test import Client

    from catalog.api import tokens

    user = User.objects.filter(username="bench").first() or User.objects.create_superuser("bench", "b@example.org", "x")
    client = Client()
    client.force_login(user)
    _, raw = tokens.create_token("bench", "bench", ["read"], owner=user)
    return client, client.cookies["sessionid"].value, raw


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def serial_timings(pages, repeats):
    from django.test.utils import CaptureQueriesContext

    client, _, raw = credentials()
    out = {}
    for name, path in pages.items():
        headers = {"HTTP_AUTHORIZATION": f"Bearer {raw}"} if path.startswith("/api/") else {}
        times, queries = [], []
        for _ in range(repeats + 1):
            with CaptureQueriesContext(connection) as captured:
                t0 = time.perf_counter()
                response = client.get(path, **headers)
                elapsed = time.perf_counter() - t0
            assert response.status_code == 200, (path, response.status_code)
            times.append(elapsed * 1000)
            queries.append(len(captured.captured_queries))
        times = times[1:]  # the first request warms caches and templates
        out[name] = {
            "path": path,
            "p50_ms": statistics.median(times),
            "p95_ms": percentile(times, 0.95),
            "queries": queries[-1],
            "queries_constant": len(set(queries[1:])) == 1,
            "bytes": len(response.content),
        }
    return out


def query_counts(pages):
    """One request per page, counting queries: run at a small and at the large
    catalog, equal counts mean no query per row."""
    from django.test.utils import CaptureQueriesContext

    client, _, raw = credentials()
    counts = {}
    for name, path in pages.items():
        headers = {"HTTP_AUTHORIZATION": f"Bearer {raw}"} if path.startswith("/api/") else {}
        client.get(path, **headers)
        with CaptureQueriesContext(connection) as captured:
            response = client.get(path, **headers)
        assert response.status_code == 200, (path, response.status_code)
        counts[name] = len(captured.captured_queries)
    return counts


def hammer(port, pages, clients, per_client=None, stop=None, auth=None, script=None):
    """`clients` threads, each on its own keep-alive connection: `per_client`
    requests each, or until `stop` (a threading.Event) is set. By default a
    client cycles over `pages` and asks again at once; `script(index)` gives
    client `index` its own endless (path, seconds) steps instead, each
    request starting `seconds` after the one before it started (as a page's
    htmx poll or a person reading does). Pages go with a superuser's session
    cookie, /api/ paths with a read token (`auth`: (session, token), made here
    when not given). Anything but a 2xx, or no answer, is an error: no page
    redirects a logged-in user."""
    assert per_client is not None or stop is not None, "a client loop needs a bound"
    session, raw = auth or credentials()[1:]
    paths = list(pages.values())
    script = script or (lambda index: ((paths[(index + i) % len(paths)], 0) for i in itertools.count()))
    latencies, errors, retries, statuses, lock = [], [], [], {}, threading.Lock()

    def get(conn, path, headers):
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status

    def one_client(index):
        conn, reused, last = http.client.HTTPConnection("127.0.0.1", port, timeout=60), False, time.perf_counter()
        steps = script(index)
        i = 0
        while (per_client is None or i < per_client) and not (stop is not None and stop.is_set()):
            path, pause = next(steps)
            i += 1
            headers = (
                {"Authorization": f"Bearer {raw}"} if path.startswith("/api/") else {"Cookie": f"sessionid={session}"}
            )
            t0 = time.perf_counter()
            try:
                try:
                    status = get(conn, path, headers)
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    if not reused:
                        raise
                    # The server closed this keep-alive connection (idle past its
                    # keep-alive timeout) as the request went out: like a browser
                    # (RFC 9112, 9.3.1), retry the GET once on a new connection; counted.
                    with lock:
                        retries.append(f"{path}: after {t0 - last:.1f} s idle")
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    status = get(conn, path, headers)
                ok, outcome, reused = 200 <= status < 300, str(status), True
            except Exception as exc:  # counted, not raised
                ok, outcome, reused = False, type(exc).__name__, False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            last = time.perf_counter()
            elapsed = (last - t0) * 1000
            with lock:
                latencies.append((path, elapsed))
                statuses[outcome] = statuses.get(outcome, 0) + 1
                if not ok:
                    errors.append(f"{path}: {outcome}")
            if pause and (wait := t0 + pause - time.perf_counter()) > 0:
                if stop is not None:
                    stop.wait(wait)
                else:
                    time.sleep(wait)
        conn.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=one_client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - t0
    all_ms = [ms for _, ms in latencies] or [0.0]
    per_page = {}
    for path in dict.fromkeys(p for p, _ in latencies):
        ms = [m for p, m in latencies if p == path]
        if ms:
            per_page[path] = {"requests": len(ms), "p50_ms": statistics.median(ms), "p95_ms": percentile(ms, 0.95)}
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": len(errors),
        "error_samples": errors[:5],
        "keepalive_retries": len(retries),
        "retry_samples": retries[:5],
        "statuses": statuses,
        "seconds": wall,
        "requests_per_s": len(latencies) / wall,
        "p50_ms": statistics.median(all_ms),
        "p95_ms": percentile(all_ms, 0.95),
        "max_ms": max(all_ms),
        "per_page": per_page,
    }

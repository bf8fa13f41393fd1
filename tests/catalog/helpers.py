"""Building catalog objects for tests through the same services the UI uses,
and the few waits and threads the tests share."""

import hashlib
import subprocess
import sys
import threading
import time
from pathlib import Path

from catalog import keyring, services
from catalog.models import BackupPlan, Destination, Source


def pg_source(conninfo, name="Inventory DB", password=None):
    source = Source(
        name=name,
        engine="postgresql",
        host=conninfo["host"],
        port=conninfo["port"],
        dbname=conninfo["dbname"],
        user=conninfo["user"],
    )
    return services.save_source("test", source, secrets={"password": password or conninfo.get("password")})


def local_destination(path, name="Local disk"):
    return services.save_destination("test", Destination(name=name, kind="local", path=str(path)))


def s3_destination(bucket, name="Off-site S3"):
    destination = Destination(
        name=name,
        kind="s3",
        bucket=bucket["bucket"],
        prefix="strongroom",
        endpoint_url=bucket["endpoint_url"],
        region=bucket["region"],
        access_key_id=bucket["access_key_id"],
        offsite=True,
    )
    return services.save_destination("test", destination, secrets={"secret_access_key": bucket["secret_access_key"]})


def make_plan(source, destinations, name="Nightly", **fields):
    plan = BackupPlan(name=name, source=source, **fields)
    return services.save_plan("test", plan, destinations=destinations)


def files_under(path):
    return sorted(str(p.relative_to(path)) for p in Path(path).rglob("*") if p.is_file())


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def decrypt(stored_path, out_path, *extra):
    """The standalone decrypt command, as a person would run it."""
    key_files = [str(keyring.key_path(key_id)) for key_id in keyring_ids()]
    argv = [sys.executable, "-m", "catalog.engine.decrypt"]
    for key_file in key_files:
        argv += ["--key-file", key_file]
    return subprocess.run(argv + list(extra) + [str(stored_path), str(out_path)], capture_output=True, text=True)


def keyring_ids():
    from catalog.models import Key

    return list(Key.objects.values_list("key_id", flat=True))


def in_thread(function, *args):
    """Starts `function(*args)` in a thread that closes its database connection
    when done (it would otherwise outlive the test database)."""

    def run():
        from django.db import connection

        try:
            function(*args)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def wait_for(condition, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def log_in(page, live_server, user, password="correct horse battery"):
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")


def restore_now(backup, **options):
    """Requests a restore and runs it here, as a worker would."""
    from restore import services as restores

    job = restores.request_restore("test", backup, enqueue=False, **options)
    return restores.run_restore(job.pk)


def execute_sql(conninfo, statement):
    import psycopg

    with psycopg.connect(**conninfo, autocommit=True) as conn:
        conn.execute(statement)

"""What tests do besides building objects: run a restore as a worker would,
run SQL, decrypt as a person would, look at files, wait, run in a thread, log
in through a browser."""

import hashlib
import subprocess
import sys
import threading
import time
from pathlib import Path

from catalog import keyring


def restore_now(backup, **options):
    """Requests a restore and runs it here, as a worker would."""
    from restore import services as restores

    job = restores.request_restore("test", backup, enqueue=False, **options)
    return restores.run_restore(job.pk)


def execute_sql(conninfo, statement):
    import psycopg

    with psycopg.connect(**conninfo, autocommit=True) as conn:
        conn.execute(statement)


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


def files_under(path):
    return sorted(str(p.relative_to(path)) for p in Path(path).rglob("*") if p.is_file())


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def database_exists(server, name):
    import psycopg

    with psycopg.connect(**{**server, "dbname": "postgres"}) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


class NewFiles:
    """The files matching the glob `pattern` under `directory` that were not there when this was made."""

    def __init__(self, directory, pattern):
        self.directory = Path(directory)
        self.pattern = pattern
        self.before = set(self.directory.glob(pattern))

    def __call__(self):
        return sorted(path for path in self.directory.glob(self.pattern) if path not in self.before)


class ScratchDatabases:
    """Called with a server: the scratch databases this test made that are
    still on it. `start` (from a module's autouse fixture) records every
    scratch name given out and every ScratchDatabase made from then on, so
    that the databases on the shared server that are not this test's (left
    by a killed run, or another run's, at work meanwhile) are not counted."""

    def __init__(self):
        self.names = []

    def start(self, monkeypatch):
        from catalog.engine import restorers

        self.names = names = []
        scratch_name, init = restorers.scratch_name, restorers.ScratchDatabase.__init__

        def recorded_name(*args, **kwargs):
            name = scratch_name(*args, **kwargs)
            names.append(name)
            return name

        def recorded_init(database, params, name, *args, **kwargs):
            names.append(name)
            init(database, params, name, *args, **kwargs)

        monkeypatch.setattr(restorers, "scratch_name", recorded_name)
        monkeypatch.setattr(restorers.ScratchDatabase, "__init__", recorded_init)

    def __call__(self, server):
        import psycopg

        with psycopg.connect(**{**server, "dbname": "postgres"}) as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database WHERE datname = ANY(%s) ORDER BY 1", [sorted(set(self.names))]
            ).fetchall()
        return [name for (name,) in rows]

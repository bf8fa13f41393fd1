"""A real PostgreSQL for the tests.

Uses the server at 127.0.0.1:5432 (or STRONGROOM_TEST_PG_HOST/PORT) when it
answers; otherwise, or when STRONGROOM_TEST_PG=throwaway, starts a throwaway
cluster with initdb/pg_ctl as a non-root user and stops it at exit.
"""

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile

import psycopg

_server = None

# The password of the throwaway cluster that insists on one; tests check it never leaks.
TEST_PASSWORD = "s3cr3t-Pa55-word"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reachable(host, port, user):
    try:
        with psycopg.connect(host=host, port=port, user=user, dbname="postgres", connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def pg_bin(name):
    """The newest server binary: Debian keeps them out of PATH."""
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return candidates[-1]
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: install the PostgreSQL server package")
    return found


def as_user(argv, user):
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", user, "--"] + argv


def throwaway_cluster(auth="trust", password=None):
    """initdb + pg_ctl in a temp dir, owned by a non-root user when we are root.
    Returns (server dict, stop function)."""
    user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    root = tempfile.mkdtemp(prefix="strongroom-pg-")
    datadir = os.path.join(root, "data")
    initdb = [pg_bin("initdb"), "-D", datadir, "-U", "postgres", f"--auth={auth}", "-E", "UTF8", "--no-sync"]
    if password:
        pwfile = os.path.join(root, "pw")
        with open(pwfile, "w") as handle:
            handle.write(password)
        initdb.append(f"--pwfile={pwfile}")
    if os.geteuid() == 0:
        for path in os.listdir(root):
            shutil.chown(os.path.join(root, path), user)
        shutil.chown(root, user)
    port = free_port()
    subprocess.run(as_user(initdb, user), check=True, capture_output=True)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
    pg_ctl = [pg_bin("pg_ctl"), "-D", datadir, "-o", options, "-l", os.path.join(root, "log"), "-w", "start"]
    subprocess.run(as_user(pg_ctl, user), check=True, capture_output=True)

    def stop():
        subprocess.run(as_user([pg_bin("pg_ctl"), "-D", datadir, "-m", "immediate", "stop"], user), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)

    server = {"host": "127.0.0.1", "port": port, "user": "postgres"}
    if password:
        server["password"] = password
    return server, stop


def start_throwaway_cluster():
    server, stop = throwaway_cluster()
    atexit.register(stop)
    return server


def ensure_server():
    global _server
    if _server is None:
        host = os.environ.get("STRONGROOM_TEST_PG_HOST", "127.0.0.1")
        port = int(os.environ.get("STRONGROOM_TEST_PG_PORT", "5432"))
        forced = os.environ.get("STRONGROOM_TEST_PG") == "throwaway"
        if not forced and reachable(host, port, "postgres"):
            _server = {"host": host, "port": port, "user": "postgres"}
        else:
            _server = start_throwaway_cluster()
    return _server


def create_database(name):
    server = ensure_server()
    with psycopg.connect(**server, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return {**server, "dbname": name}


def drop_database(name):
    server = ensure_server()
    with psycopg.connect(**server, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


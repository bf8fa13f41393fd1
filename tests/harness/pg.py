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


class Cluster:
    """A test-owned PostgreSQL cluster made with initdb and run with pg_ctl
    as a non-root OS user (postgres when the tests run as root).

    `settings`: extra server settings, e.g. {"archive_mode": "on"};
    `initdb_args`: e.g. ("--wal-segsize=1",) for 1 MB WAL segments. The
    defaults already allow replication connections from 127.0.0.1 (initdb's
    pg_hba.conf with trust, wal_level replica, max_wal_senders 10)."""

    def __init__(self, auth="trust", password=None, settings=None, initdb_args=()):
        self.os_user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self.root = tempfile.mkdtemp(prefix="strongroom-pg-")
        self.datadir = os.path.join(self.root, "data")
        self.log_path = os.path.join(self.root, "log")
        self.settings = dict(settings or {})
        initdb = [
            pg_bin("initdb"),
            "-D",
            self.datadir,
            "-U",
            "postgres",
            f"--auth={auth}",
            "-E",
            "UTF8",
            "--no-sync",
            *initdb_args,
        ]
        if password:
            pwfile = os.path.join(self.root, "pw")
            with open(pwfile, "w") as handle:
                handle.write(password)
            initdb.append(f"--pwfile={pwfile}")
        if os.geteuid() == 0:
            for path in os.listdir(self.root):
                shutil.chown(os.path.join(self.root, path), self.os_user)
            shutil.chown(self.root, self.os_user)
        self.port = free_port()
        subprocess.run(as_user(initdb, self.os_user), check=True, capture_output=True)
        self.server = {"host": "127.0.0.1", "port": self.port, "user": "postgres"}
        if password:
            self.server["password"] = password
        self.start()

    def pg_ctl(self, *args, check=True):
        return subprocess.run(
            as_user([pg_bin("pg_ctl"), "-D", self.datadir, *args], self.os_user), check=check, capture_output=True
        )

    def start(self):
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off"
        options += "".join(f" -c {name}={value}" for name, value in self.settings.items())
        self.pg_ctl("-o", options, "-l", self.log_path, "-w", "start")

    def kill(self):
        """Immediate shutdown: no checkpoint, as if the machine lost power."""
        self.pg_ctl("-m", "immediate", "stop", check=False)

    def stop(self):
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def throwaway_cluster(auth="trust", password=None):
    """Returns (server dict, stop function) of a new Cluster."""
    cluster = Cluster(auth=auth, password=password)
    return cluster.server, cluster.stop


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

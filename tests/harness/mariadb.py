"""A real MariaDB server for the tests, started once per session.

Debian's mariadb-server, on its own free port and a data directory of its own
(mariadb-install-db), run as the `mysql` OS user when the tests run as root,
and stopped at exit. The tests connect over TCP as a user with a password
(TEST_PASSWORD), as Strongroom connects to a real server; the password never
appears in a test's output (the tests check that).
"""

import atexit
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid

import pymysql
import pytest

from tests.harness.pg import as_user, free_port

USER = "strongroom"
TEST_PASSWORD = "m4ria-Pa55-word"
SERVER_BINARY = "/usr/sbin/mariadbd"

_server = None


class MariaDBServer:
    """One mariadbd with its data directory, socket and log in a temporary directory."""

    def __init__(self):
        self.port = free_port()
        self.base = tempfile.mkdtemp(prefix="sr-mariadb-")
        self.datadir = os.path.join(self.base, "data")
        self.socket = os.path.join(self.base, "mariadb.sock")
        self.log = os.path.join(self.base, "server.log")
        self.process = None
        os_user = "mysql" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self.os_user = os_user
        if os.geteuid() == 0:
            shutil.chown(self.base, user=os_user)

    def start(self):
        subprocess.run(
            as_user(
                [
                    "mariadb-install-db",
                    f"--datadir={self.datadir}",
                    "--auth-root-authentication-method=socket",
                    "--skip-test-db",
                    f"--user={self.os_user}",
                ],
                self.os_user,
            ),
            check=True,
            capture_output=True,
        )
        argv = [
            SERVER_BINARY,
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self.socket}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--log-error={self.log}",
            f"--pid-file={os.path.join(self.base, 'server.pid')}",
            "--skip-name-resolve",
            # Small and quick: the tests' databases are small.
            "--innodb-buffer-pool-size=64M",
            "--innodb-log-file-size=16M",
            "--innodb-flush-log-at-trx-commit=2",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            # Routines in a dump need this unless the user has SUPER.
            "--log-bin-trust-function-creators=1",
        ]
        self.process = subprocess.Popen(
            as_user(argv, self.os_user), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mariadbd exited: {self.log_tail()}")
            try:
                with self.root() as connection, connection.cursor() as cursor:
                    cursor.execute(f"CREATE USER IF NOT EXISTS '{USER}'@'127.0.0.1' IDENTIFIED BY '{TEST_PASSWORD}'")
                    cursor.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'127.0.0.1' WITH GRANT OPTION")
                return self
            except pymysql.err.OperationalError:
                time.sleep(0.2)
        raise RuntimeError(f"mariadbd did not answer within a minute: {self.log_tail()}")

    def root(self, database=None):
        """The server's root, through its socket (root signs in by socket only)."""
        return pymysql.connect(unix_socket=self.socket, user="root", database=database, autocommit=True)

    def connect(self, database=None):
        return pymysql.connect(
            host="127.0.0.1", port=self.port, user=USER, password=TEST_PASSWORD, database=database, autocommit=True
        )

    def log_tail(self, lines=20):
        try:
            with open(self.log, encoding="utf-8", errors="replace") as log:
                return "".join(log.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.base, ignore_errors=True)

    def info(self):
        """What a Source or a test needs to reach the server."""
        return {"host": "127.0.0.1", "port": self.port, "user": USER, "password": TEST_PASSWORD}

    def create_database(self, name):
        with self.root() as connection, connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        return name

    def drop_database(self, name):
        with self.root() as connection, connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")


def ensure_server():
    """The session's server, started on first use and stopped at exit."""
    global _server
    if _server is None:
        if not os.path.exists(SERVER_BINARY):
            pytest.skip("MariaDB's server is not installed (apt-get install mariadb-server)")
        _server = MariaDBServer().start()
        atexit.register(_server.stop)
    return _server


@pytest.fixture(scope="session")
def mariadb_server():
    return ensure_server()


@pytest.fixture
def mariadb_database(mariadb_server):
    """A fresh, empty database on the session's MariaDB server; dropped afterwards."""
    name = f"sr_test_{uuid.uuid4().hex[:10]}"
    yield mariadb_server.create_database(name)
    mariadb_server.drop_database(name)

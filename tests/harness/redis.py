"""A Redis database of the test's own, and qcluster worker processes on it.

The shared server at 127.0.0.1:6379 is used when it answers: the test claims
a database number nobody else holds keys in (with a marker key that expires
by itself) and deletes every key in it afterwards. Otherwise a throwaway
`redis-server` runs on a free port; without that binary the test is skipped.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from catalog.engine.wal import stop_process
from tests.harness.pg import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
SHARED = ("127.0.0.1", 6379)
CLAIM_KEY = "strongroom-test-claim"
CLAIM_SECONDS = 900


def connect(url):
    import redis

    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)


def answers(url):
    import redis

    try:
        return connect(url).ping()
    except redis.RedisError:
        return False


def claim_database(host, port):
    """The URL of a database of the shared server that holds no keys, claimed
    with a marker; None when all are in use."""
    token = uuid.uuid4().hex
    for number in range(15, 0, -1):  # 0 is everybody's default: leave it alone
        url = f"redis://{host}:{port}/{number}"
        conn = connect(url)
        if conn.set(CLAIM_KEY, token, nx=True, ex=CLAIM_SECONDS):
            if conn.dbsize() == 1:
                return url
            conn.delete(CLAIM_KEY)  # someone holds keys here without a claim
    return None


def start_server(directory):
    """A throwaway redis-server on a free port; returns (process, url)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no Redis answers at 127.0.0.1:6379 and there is no redis-server binary to start one")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", directory],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not answers(url):
        if time.monotonic() > deadline or process.poll() is not None:
            stop_process(process)
            raise RuntimeError("redis-server did not start")
        time.sleep(0.1)
    return process, url


@pytest.fixture
def redis_url(tmp_path):
    shared = f"redis://{SHARED[0]}:{SHARED[1]}/0"
    if answers(shared):
        url = claim_database(*SHARED)
        if url is None:
            pytest.skip("every database of the shared Redis holds keys; none to claim")
        try:
            yield url
        finally:
            connect(url).flushdb()  # all ours: claimed empty
        return
    process, url = start_server(str(tmp_path))
    try:
        yield url
    finally:
        stop_process(process)


def enqueue_through(monkeypatch, url):
    """This process queues tasks into Redis at `url` as a web process with
    REDIS_URL set would (the test settings run tasks inline, on the ORM broker)."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "SYNC", False)
    monkeypatch.setattr(Conf, "REDIS", url)
    monkeypatch.setattr(Conf, "BROKER_CLASS", "catalog.brokers.RedisWithHeartbeat")


def qcluster(redis_url, database_url, workers=1):
    """Starts `manage.py qcluster` on the Redis broker and the given metadata
    database, in its own process group; its output goes to a temporary file
    (see `output`)."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(
        REDIS_URL=redis_url, DATABASE_URL=database_url, Q_WORKERS=str(workers), DJANGO_SETTINGS_MODULE="tests.settings"
    )
    log = tempfile.TemporaryFile()  # noqa: SIM115 - outlives qcluster(): kept as process.log, read by output()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    process.log = log
    return process


def output(process):
    process.log.seek(0)
    return process.log.read().decode(errors="replace")


def stop_cluster(process):
    """SIGKILL to the cluster's whole process group: a test stops it once the
    work it checks is recorded, and django-q's graceful stop takes seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    process.log.close()


def ancestors(pid):
    """The pids above `pid` up to init, from /proc."""
    found = []
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                pid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        found.append(pid)
    return found

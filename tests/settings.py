"""Test settings: a throwaway data directory and a real PostgreSQL for the
metadata database (worker threads and the live server share it)."""

import os
import tempfile

from tests.harness import pg

os.environ.setdefault("STRONGROOM_DATA_DIR", tempfile.mkdtemp(prefix="strongroom-test-"))
_server = pg.ensure_server()
os.environ.setdefault(
    "DATABASE_URL", f"postgresql://{_server['user']}@{_server['host']}:{_server['port']}/strongroom"
)

from backupsite.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
Q_CLUSTER = {**Q_CLUSTER, "sync": True}  # noqa: F405 — tasks run inline unless a test starts a cluster

# One test database per run, so two checkouts (or CI and a developer) can
# run the suite against the same server at once.
DATABASES["default"]["TEST"] = {"NAME": f"test_strongroom_{os.getpid()}"}  # noqa: F405

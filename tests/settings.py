"""Test settings: a throwaway data directory and a real PostgreSQL for the
metadata database (worker threads and the live server share it)."""

import os
import tempfile
from pathlib import Path

from tests.harness import pg

os.environ.setdefault("STRONGROOM_DATA_DIR", tempfile.mkdtemp(prefix="strongroom-test-"))
_server = pg.ensure_server()
os.environ.setdefault("DATABASE_URL", f"postgresql://{_server['user']}@{_server['host']}:{_server['port']}/strongroom")

from backupsite.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
Q_CLUSTER = {**Q_CLUSTER, "sync": True}  # noqa: F405 — tasks run inline unless a test starts a cluster

# One test database per run, so two checkouts (or CI and a developer) can
# run the suite against the same server at once.
DATABASES["default"]["TEST"] = {"NAME": f"test_strongroom_{os.getpid()}"}  # noqa: F405
# Between transactional tests, tables are emptied with DELETE rather than TRUNCATE (faster: see its docstring).
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":  # noqa: F405
    DATABASES["default"]["ENGINE"] = "tests.harness.pg_backend"  # noqa: F405

# Continuous WAL protection runs Debian's pg_receivewal directly (not through pg_wrapper).
PG_RECEIVEWAL = pg.pg_bin("pg_receivewal")

# Point-in-time restores: the restored cluster runs as the same non-root user
# as the tests' own clusters (tests/harness/pg.py).
PG_CTL = pg.pg_bin("pg_ctl")
PITR_OS_USER = "postgres" if os.geteuid() == 0 else PITR_OS_USER  # noqa: F405

# Tests keep their local destinations in pytest's tmp_path, under the system temp directory.
LOCAL_DESTINATION_ROOTS = [Path(tempfile.gettempdir()).resolve()]

# Sign-in rate limiting stays on (tests/hardening/test_login_limits.py), but
# the test client's login() has no request for axes to count: let it through.
AUTHENTICATION_BACKENDS = ["tests.harness.auth.AxesBackendForTestClient", *AUTHENTICATION_BACKENDS[1:]]  # noqa: F405

# moto's S3 and the webhook test servers listen on 127.0.0.1 (the default,
# stated here because tests rely on it; tests of the refusal turn it off).
ALLOW_PRIVATE_ENDPOINTS = True

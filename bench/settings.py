"""Benchmark settings: the real settings, pointed by bench.run at a throwaway
metadata database (DATABASE_URL) and data directory (STRONGROOM_DATA_DIR)."""

from backupsite.settings import *  # noqa: F403

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

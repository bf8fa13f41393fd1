"""Serialising writers that must not interleave (the audit chain's append,
making the first master key)."""

from django.db import connection


def hold_until_commit(lock_id: int) -> None:
    """On PostgreSQL, queues on the transaction-level advisory lock `lock_id`,
    held until the caller's transaction ends, so what one writer committed is
    there for the next to read. On SQLite every transaction begins IMMEDIATE
    (see backupsite/envconfig.py), which serializes writers already. Call it
    inside transaction.atomic()."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [lock_id])

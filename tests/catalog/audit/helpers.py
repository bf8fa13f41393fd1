"""Building an audit trail for the tests, and tampering with it in SQL the way
someone with database access would."""

from contextlib import contextmanager
from datetime import UTC, datetime

import time_machine
from django.db import connection

from catalog import audit


def event_at(when, actor="scheduler", action="backup.start", obj=None, changes=None, ip=None):
    """An event recorded through audit.record at a chosen time (and client IP)."""
    if isinstance(when, str):
        when = datetime.fromisoformat(when).replace(tzinfo=UTC)
    token = audit.current_ip.set(ip)
    try:
        with time_machine.travel(when, tick=False):
            return audit.record(actor, action, obj, changes)
    finally:
        audit.current_ip.reset(token)


def some_events(count, actor="scheduler"):
    return [audit.record(actor, f"test.step{i % 3}", changes={"step": i}) for i in range(count)]


@contextmanager
def tampering():
    """The trigger stops even the table owner; a tamperer with superuser
    rights switches it off first (and we switch it back on)."""
    with connection.cursor() as cursor:
        # ALTER TABLE refuses while deferred foreign-key checks are pending in
        # the test's transaction: run them now.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("ALTER TABLE catalog_auditevent DISABLE TRIGGER USER")
        try:
            yield cursor
        finally:
            cursor.execute("ALTER TABLE catalog_auditevent ENABLE TRIGGER USER")
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")


def swap_ids(cursor, first, second):
    """Reorder: the two rows exchange places in id order, contents untouched."""
    cursor.execute("UPDATE catalog_auditevent SET id = -1 WHERE id = %s", [first])
    cursor.execute("UPDATE catalog_auditevent SET id = %s WHERE id = %s", [first, second])
    cursor.execute("UPDATE catalog_auditevent SET id = %s WHERE id = -1", [second])

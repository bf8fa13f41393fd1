"""Migration 0008 chains the events that existed before it and installs the
trigger; reversing it removes the trigger."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from catalog import audit
from catalog.models import AuditEvent

BEFORE = [("catalog", "0007_audit_chain_keys_and_drill_alerts")]


def migrate(targets=None):
    """To `targets`, or back to the latest migration of every app: going back
    to catalog 0007 also unapplies the later apps' migrations that depend on
    catalog, and the rest of the suite needs their tables."""
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets or executor.loader.graph.leaf_nodes())


def has_trigger():
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'catalog_auditevent_append_only'")
        return cursor.fetchone()[0] == 1


@pytest.mark.django_db(transaction=True)
def test_it_chains_existing_events_and_reverses_cleanly():
    assert has_trigger()
    migrate(BEFORE)
    try:
        assert not has_trigger()
        with connection.cursor() as cursor:  # events as the app wrote them before the chain existed
            for n in range(5):
                cursor.execute(
                    "INSERT INTO catalog_auditevent (created_at, actor_label, action, object_type, object_id,"
                    " object_repr, changes, ip, prev_hash, hash)"
                    " VALUES (now() - %s * interval '1 hour', 'alice', 'old.event', 'source', %s, 'Inventory',"
                    " %s, '127.0.0.1', '', '')",
                    [5 - n, str(n), f'{{"n": {n}, "ratio": 2.0}}'],
                )
    finally:
        migrate()
    assert has_trigger()
    result = audit.verify_chain()
    assert result.intact and result.count == 5
    event = audit.record("bob", "new.event")
    assert event.prev_hash == AuditEvent.objects.filter(action="old.event").order_by("id").last().hash
    assert audit.verify_chain().count == 6

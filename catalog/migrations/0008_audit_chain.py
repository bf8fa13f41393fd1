"""Chain the audit events that exist, then (PostgreSQL only) refuse UPDATE and
DELETE on the table with a trigger.

The one UPDATE allowed is Django's SET_NULL when a user is deleted: only
actor_id changes to NULL, and the hash covers actor_label, not actor_id.
TRUNCATE (the test suite's flush) is not a row operation and is left alone."""

import hashlib
import json
from datetime import timezone as dt_timezone

from django.db import migrations

GENESIS = "0" * 64

TRIGGER_SQL = """
CREATE OR REPLACE FUNCTION catalog_auditevent_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.actor_id IS NULL
       AND (to_jsonb(NEW) - 'actor_id') = (to_jsonb(OLD) - 'actor_id') THEN
        RETURN NEW;  -- the actor's user account was deleted (SET_NULL)
    END IF;
    RAISE EXCEPTION 'Audit events are append-only: % of audit event #% refused', TG_OP, OLD.id
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'The audit trail is tamper-evident; record a new event instead.';
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS catalog_auditevent_append_only ON catalog_auditevent;
CREATE TRIGGER catalog_auditevent_append_only
    BEFORE UPDATE OR DELETE ON catalog_auditevent
    FOR EACH ROW EXECUTE FUNCTION catalog_auditevent_append_only();
"""

DROP_TRIGGER_SQL = """
DROP TRIGGER IF EXISTS catalog_auditevent_append_only ON catalog_auditevent;
DROP FUNCTION IF EXISTS catalog_auditevent_append_only();
"""


def _stable(value):
    # Frozen copy of catalog.audit._stable: migrations must not import app code.
    if isinstance(value, dict):
        return {str(key): _stable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_stable(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def chain_hash(prev_hash, row):
    # Frozen copy of catalog.audit.canonical_content / chain_hash.
    content = {
        "actor_label": row.actor_label,
        "action": row.action,
        "object_type": row.object_type,
        "object_id": row.object_id,
        "object_repr": row.object_repr,
        "created_at": row.created_at.astimezone(dt_timezone.utc).isoformat(timespec="microseconds"),
        "ip": row.ip or None,
        "changes": _stable(row.changes or {}),
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


def chain_existing_events(apps, schema_editor):
    AuditEvent = apps.get_model("catalog", "AuditEvent")
    prev_hash = GENESIS
    for event in AuditEvent.objects.order_by("id").iterator(chunk_size=2000):
        digest = chain_hash(prev_hash, event)
        # A plain queryset update: the historical model has no append-only guard,
        # and the trigger does not exist yet.
        AuditEvent.objects.filter(pk=event.pk).update(prev_hash=prev_hash, hash=digest)
        prev_hash = digest


def add_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(TRIGGER_SQL, None)


def drop_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_TRIGGER_SQL, None)


class Migration(migrations.Migration):

    dependencies = [
        ("catalog", "0007_audit_chain_keys_and_drill_alerts"),
    ]

    operations = [
        migrations.RunPython(chain_existing_events, migrations.RunPython.noop),
        migrations.RunPython(add_trigger, drop_trigger),
    ]

"""The hash chain as audit.record writes it, and the check that walks it."""

import threading
from itertools import pairwise

import pytest
from django.contrib.auth.models import User
from django.db import DatabaseError, connection, connections, transaction

from catalog import audit
from catalog.models import AuditEvent
from tests.catalog.audit.helpers import event_at, some_events


@pytest.mark.django_db
def test_it_links_each_event_to_the_one_before():
    events = some_events(4)
    stored = list(AuditEvent.objects.order_by("id"))
    assert stored[0].prev_hash == audit.GENESIS
    for before, after in pairwise(stored):
        assert after.prev_hash == before.hash
    assert all(len(event.hash) == 64 and event.hash_matches() for event in stored)
    result = audit.verify_chain()
    assert result.intact and result.count == 4 and result.last_id == events[-1].pk
    assert result.summary() == "4 events, chain intact"
    assert result.head == stored[-1].hash


@pytest.mark.django_db
def test_it_hashes_what_the_database_gives_back():
    # Values that change shape on the way through jsonb / inet / timestamptz.
    awkward = {"ratio": 1.5, "big": 1e20, "whole": 3.0, "nested": {"b": [1, 2.25, None], "a": "ünïcödé ✓"}, "n": 10**18}
    event_at("2026-02-03T04:05:06.789012", action="odd.values", changes=awkward, ip="2001:DB8:0:0::1")
    event_at("2026-02-03T04:05:07", action="odd.values", changes={"when": "x"}, ip="192.0.2.10")
    audit.record(None, "no.changes")
    assert AuditEvent.objects.get(action="no.changes").actor_label == "system"
    assert all(event.hash_matches() for event in AuditEvent.objects.all())
    assert audit.verify_chain().intact


@pytest.mark.django_db
def test_it_records_the_client_address_of_the_request(admin_client):
    response = admin_client.post("/tokens/new/", {"name": "ci", "scopes": ["read"]}, REMOTE_ADDR="203.0.113.7")
    assert response.status_code in (200, 302)
    event = AuditEvent.objects.latest("id")
    assert event.actor_label == "alice"
    assert event.ip == "203.0.113.7"
    assert audit.current_ip.get() is None  # reset after the request
    assert audit.record("worker", "task.done").ip is None
    assert audit.verify_chain().intact


@pytest.mark.django_db
def test_the_application_cannot_change_or_delete_an_event():
    event = audit.record("someone", "thing.done")
    with pytest.raises(TypeError, match="append-only"):
        event.save()
    with pytest.raises(TypeError, match="append-only"):
        AuditEvent.objects.filter(pk=event.pk).update(action="x")


@pytest.mark.django_db
def test_the_trigger_refuses_update_and_delete_in_sql():
    event = audit.record("someone", "thing.done")
    for statement in (
        "UPDATE catalog_auditevent SET action = 'forged' WHERE id = %s",
        "DELETE FROM catalog_auditevent WHERE id = %s",
    ):
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(statement, [event.pk])
    assert AuditEvent.objects.get(pk=event.pk).action == "thing.done"


@pytest.mark.django_db
def test_the_trigger_refuses_changing_the_actor_to_someone_else(admin_user, auditor_user):
    event = audit.record(admin_user, "thing.done")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE catalog_auditevent SET actor_id = %s WHERE id = %s", [auditor_user.pk, event.pk])


@pytest.mark.django_db
def test_a_user_with_events_can_still_be_deleted(admin_user):
    event = audit.record(admin_user, "thing.done")
    audit.record("system", "other.thing")
    admin_user.delete()
    assert not User.objects.filter(username="alice").exists()
    kept = AuditEvent.objects.get(pk=event.pk)
    assert kept.actor_id is None and kept.actor_label == "alice"
    assert audit.verify_chain().intact


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_keep_one_chain():
    threads, per_thread = 6, 15
    start = threading.Barrier(threads)
    errors = []

    def write(n):
        try:
            start.wait()
            for i in range(per_thread):
                with transaction.atomic():  # as a service would: the event inside the change's transaction
                    audit.record(f"writer-{n}", "test.concurrent", changes={"i": i})
        except Exception as exc:  # noqa: BLE001 — reported below
            errors.append(exc)
        finally:
            connections.close_all()

    workers = [threading.Thread(target=write, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert errors == []
    assert AuditEvent.objects.count() == threads * per_thread
    prev_hashes = list(AuditEvent.objects.values_list("prev_hash", flat=True))
    assert len(set(prev_hashes)) == len(prev_hashes)  # no two events follow the same one: no fork
    result = audit.verify_chain(chunk_size=7)
    assert result.intact, result.message
    assert result.count == threads * per_thread

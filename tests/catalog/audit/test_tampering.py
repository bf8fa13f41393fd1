"""Tampering done directly in SQL is detected and located, by the command
(its output and exit code) and by the auditor page."""

import json
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection

from catalog import audit
from tests.catalog.audit.helpers import some_events, swap_ids, tampering


def run_verify_audit():
    """The command in its own process, against the test database."""
    db = settings.DATABASES["default"]
    url = f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    return subprocess.run(
        [sys.executable, "manage.py", "verify_audit"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def command_failure():
    with pytest.raises(CommandError) as failure:
        call_command("verify_audit")
    assert failure.value.returncode == 1
    return str(failure.value)


@pytest.mark.django_db(transaction=True)
def test_the_command_exits_0_on_an_intact_chain_and_1_on_an_edited_row():
    events = some_events(5)
    ok = run_verify_audit()
    assert ok.returncode == 0, ok.stderr
    assert "5 events, chain intact" in ok.stdout
    assert f"latest event #{events[-1].pk}, hash {events[-1].hash}" in ok.stdout

    with tampering() as cursor:
        cursor.execute("UPDATE catalog_auditevent SET object_repr = 'nothing to see' WHERE id = %s", [events[2].pk])
    broken = run_verify_audit()
    assert broken.returncode == 1
    assert (
        f"event #{events[2].pk} (scheduler test.step2 nothing to see) does not match its hash: edited" in broken.stderr
    )


@pytest.mark.django_db
def test_an_edited_row_is_detected_and_located(auditor_client):
    events = some_events(5)
    with tampering() as cursor:
        cursor.execute("UPDATE catalog_auditevent SET changes = '{\"step\": 99}' WHERE id = %s", [events[3].pk])
    message = command_failure()
    assert message == f"event #{events[3].pk} (scheduler test.step0) does not match its hash: edited"

    page = auditor_client.get("/audit/verify/")
    assert page.status_code == 200
    body = page.content.decode()
    assert "Chain broken" in body and "does not match its hash: edited" in body
    assert f'href="/audit/{events[3].pk}/"' in body
    detail = auditor_client.get(f"/audit/{events[3].pk}/").content.decode()
    assert "does not match its hash: edited" in detail


@pytest.mark.django_db
def test_an_edited_timestamp_or_ip_is_detected():
    events = some_events(3)
    with tampering() as cursor:
        cursor.execute("UPDATE catalog_auditevent SET ip = '10.0.0.1' WHERE id = %s", [events[0].pk])
    assert audit.verify_chain().broken_id == events[0].pk
    with tampering() as cursor:
        cursor.execute(
            "UPDATE catalog_auditevent SET ip = NULL, created_at = created_at + interval '1 microsecond' WHERE id = %s",
            [events[0].pk],
        )
    result = audit.verify_chain()
    assert (result.broken_id, result.problem) == (events[0].pk, "edited")


@pytest.mark.django_db
def test_a_deleted_row_is_detected_and_located(auditor_client):
    events = some_events(6)
    with tampering() as cursor:
        cursor.execute("DELETE FROM catalog_auditevent WHERE id = %s", [events[2].pk])
    assert command_failure() == f"the event before #{events[3].pk} is missing: deleted"
    result = audit.verify_chain()
    assert (result.broken_id, result.problem, result.count, result.last_id) == (
        events[3].pk,
        "deleted",
        3,
        events[1].pk,
    )

    body = auditor_client.get("/audit/verify/", HTTP_HX_REQUEST="true").content.decode()
    assert body.startswith('<div id="verify-result"')  # the htmx partial, not the whole page
    assert f"the event before #{events[3].pk} is missing: deleted" in body
    assert f'href="/audit/{events[3].pk}/"' in body


@pytest.mark.django_db
def test_deleting_the_first_row_is_detected():
    events = some_events(3)
    with tampering() as cursor:
        cursor.execute("DELETE FROM catalog_auditevent WHERE id = %s", [events[0].pk])
    assert command_failure() == f"the event before #{events[1].pk} is missing: deleted"


@pytest.mark.django_db
def test_swapped_rows_are_detected_and_located(auditor_client):
    events = some_events(6)
    with tampering() as cursor:
        swap_ids(cursor, events[2].pk, events[3].pk)
    assert command_failure() == f"events #{events[2].pk} and #{events[3].pk} are out of order: reordered"
    body = auditor_client.get("/audit/verify/").content.decode()
    assert "out of order: reordered" in body and f'href="/audit/{events[2].pk}/"' in body


@pytest.mark.django_db
def test_a_row_moved_further_back_is_detected():
    events = some_events(6)
    with tampering() as cursor:
        swap_ids(cursor, events[1].pk, events[4].pk)
    result = audit.verify_chain()
    assert (result.broken_id, result.problem) == (events[1].pk, "reordered")


@pytest.mark.django_db
def test_a_forged_event_chained_to_an_old_one_is_detected():
    events = some_events(4)
    forged = {**events[1].hashed_fields(), "action": "forged"}
    forged_hash = audit.chain_hash(events[1].hash, forged)
    with connection.cursor() as cursor:  # INSERT is allowed: the forger gets a valid hash but a wrong place
        cursor.execute(
            "INSERT INTO catalog_auditevent (created_at, actor_label, action, object_type, object_id, object_repr,"
            " changes, ip, prev_hash, hash) VALUES (%s, %s, 'forged', '', '', '', %s, NULL, %s, %s) RETURNING id",
            [forged["created_at"], forged["actor_label"], json.dumps(forged["changes"]), events[1].hash, forged_hash],
        )
        forged_id = cursor.fetchone()[0]
    result = audit.verify_chain()
    assert (result.broken_id, result.problem) == (forged_id, "reordered")
    assert (
        result.message == f"event #{forged_id} follows #{events[1].pk}, not #{events[3].pk}: rows reordered or inserted"
    )

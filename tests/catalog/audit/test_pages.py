"""The Audit trail page as auditors and administrators use it: filters,
exports of exactly the filtered events, the chain check, no way to write."""

import csv
import hashlib
import io
import json
from itertools import pairwise

import pytest

from catalog import audit
from catalog.models import AuditEvent, Source
from tests.catalog.audit.helpers import event_at, some_events
from tests.factories import local_destination, make_plan

pytestmark = pytest.mark.django_db


@pytest.fixture
def history(admin_user):
    """Known events over three days, by three actors, about two kinds of object."""
    return {
        "create": event_at(
            "2026-03-01T09:00:00", admin_user, "source.create", admin_user, {"name": "Inventory"}, "198.51.100.1"
        ),
        "backup1": event_at("2026-03-01T23:00:00", "scheduler", "backup.start", changes={"plan": "Nightly"}),
        "update": event_at(
            "2026-03-02T10:30:00", admin_user, "source.update", admin_user, {"port": 5433}, "198.51.100.2"
        ),
        "backup2": event_at("2026-03-02T23:00:00", "scheduler", "backup.start"),
        "prune": event_at("2026-03-03T01:00:00", "retention", "backup.prune", changes={"kept": 30}),
        "restore": event_at(
            "2026-03-03T12:00:00", "bob", "restore.start", changes={"mode": "preview"}, ip="2001:db8::7"
        ),
    }


def ids_of(*events):
    return sorted(event.pk for event in events)


def listed_ids(response):
    return sorted(event.pk for event in response.context["page"].object_list)


def test_it_shows_the_trail_to_auditors_with_the_ip(auditor_client, history):
    response = auditor_client.get("/audit/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "198.51.100.1" in body and "2001:db8::7" in body
    assert "Verify the chain" in body
    assert listed_ids(response) == ids_of(*history.values())


@pytest.mark.parametrize(
    "query, expected",
    [
        ({"actor": "scheduler"}, ["backup1", "backup2"]),
        ({"action": "backup.start"}, ["backup1", "backup2"]),
        ({"object_type": "user"}, ["create", "update"]),
        ({"object": "alice"}, ["create", "update"]),
        ({"since": "2026-03-02"}, ["update", "backup2", "prune", "restore"]),
        ({"until": "2026-03-01"}, ["create", "backup1"]),
        ({"since": "2026-03-02", "until": "2026-03-02", "actor": "scheduler"}, ["backup2"]),
        ({"since": "2026-03-04"}, []),
    ],
)
def test_filters_and_both_exports_return_exactly_the_filtered_events(auditor_client, history, query, expected):
    wanted = ids_of(*(history[name] for name in expected))
    assert listed_ids(auditor_client.get("/audit/", query)) == wanted

    response = auditor_client.get("/audit/export.csv", query)
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [int(row["id"]) for row in rows] == wanted

    response = auditor_client.get("/audit/export.jsonl", query)
    assert response.status_code == 200 and response.streaming
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert [json.loads(line)["id"] for line in lines] == wanted


def recompute(row):
    """An outside party's check of one exported event, from the documented recipe."""
    content = {name: row[name] for name in audit.HASHED_FIELDS}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((row["prev_hash"] + canonical).encode()).hexdigest()


def test_the_exports_carry_what_it_takes_to_reverify_the_chain(auditor_client, history):
    lines = b"".join(auditor_client.get("/audit/export.jsonl").streaming_content).decode().splitlines()
    rows = [json.loads(line) for line in lines]
    assert rows[0]["prev_hash"] == audit.GENESIS
    for before, after in pairwise(rows):
        assert after["prev_hash"] == before["hash"]
    assert all(recompute(row) == row["hash"] for row in rows)
    assert rows[-1]["ip"] == "2001:db8::7" and rows[-1]["created_at"] == "2026-03-03T12:00:00.000000+00:00"

    text = b"".join(auditor_client.get("/audit/export.csv").streaming_content).decode()
    for row in csv.DictReader(io.StringIO(text)):
        row = {**row, "changes": json.loads(row["changes"]), "ip": row["ip"] or None}
        assert recompute(row) == row["hash"]


def test_the_page_uses_the_same_number_of_queries_however_many_events(auditor_client, django_assert_max_num_queries):
    some_events(3)
    with django_assert_max_num_queries(12) as few:
        auditor_client.get("/audit/?action=test.step1")
    some_events(60, actor="someone else")
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = auditor_client.get("/audit/?action=test.step1")
    assert len(response.context["page"].object_list) == 21


def test_the_filter_form_answers_htmx_with_the_results_only(auditor_client, history):
    response = auditor_client.get("/audit/", {"actor": "bob"}, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="audit-results")
    body = response.content.decode()
    assert body.startswith('<div id="audit-results">') and "<html" not in body
    assert "restore.start" in body and "backup.start" not in body
    assert "/audit/export.csv?actor=bob" in body


def test_bad_filters_are_explained_and_never_mean_everything(auditor_client, history):
    response = auditor_client.get("/audit/", {"since": "2026-03-03", "until": "2026-03-01"})
    assert "“From” is after “To”" in response.content.decode()
    assert listed_ids(response) == []
    response = auditor_client.get("/audit/", {"actor": "nobody-by-that-name"})
    assert "Select a valid choice" in response.content.decode() and listed_ids(response) == []

    response = auditor_client.get("/audit/export.jsonl", {"since": "not a date"})
    assert response.status_code == 400
    assert "Nothing exported, the filters are not valid (since: Enter a valid date.)" in response.content.decode()


def test_the_chain_check_page_for_an_intact_trail(auditor_client, history):
    response = auditor_client.get("/audit/verify/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "Chain intact" in body and "6 events, chain intact" in body
    assert history["restore"].hash in body


def test_the_event_page_shows_its_hashes(auditor_client, history):
    event = history["update"]
    body = auditor_client.get(f"/audit/{event.pk}/").content.decode()
    assert event.hash in body and event.prev_hash in body and "matches its hash" in body
    assert "198.51.100.2" in body


def test_nobody_can_write_through_the_audit_pages(auditor_client, admin_client, history):
    event = history["create"]
    urls = ["/audit/", "/audit/verify/", "/audit/export.csv", "/audit/export.jsonl", f"/audit/{event.pk}/"]
    for client, refused in ((auditor_client, 403), (admin_client, 405)):  # auditors never write; nothing here writes
        for url in urls:
            assert client.get(url).status_code == 200
            assert client.post(url).status_code == refused
    assert AuditEvent.objects.count() == 6


def test_the_admin_is_read_only(client, admin_user, history):
    admin_user.is_superuser = admin_user.is_staff = True
    admin_user.save()
    client.force_login(admin_user)
    event = history["create"]
    listing = client.get("/admin/catalog/auditevent/")
    assert listing.status_code == 200 and "198.51.100.1" in listing.content.decode()
    assert "delete_selected" not in listing.content.decode()
    page = client.get(f"/admin/catalog/auditevent/{event.pk}/change/")
    assert page.status_code == 200 and 'name="action"' not in page.content.decode()  # view only, no inputs
    assert client.post(f"/admin/catalog/auditevent/{event.pk}/change/", {"action": "forged"}).status_code == 403
    assert client.post(f"/admin/catalog/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert client.get("/admin/catalog/auditevent/add/").status_code == 403
    assert AuditEvent.objects.get(pk=event.pk).action == "source.create"
    assert audit.verify_chain().intact


def test_it_names_object_types_in_words_and_filters_by_the_stored_name(auditor_client, admin_user, tmp_path):
    source = Source.objects.create(name="Wiki", engine="sqlite", sqlite_path=str(tmp_path / "wiki.sqlite3"))
    plan = make_plan(source, [local_destination(tmp_path / "backups")])
    audit.record(admin_user, "plan.update", plan, {"schedule": "0 3 * * *"})
    body = auditor_client.get("/audit/").content.decode()
    assert '<span class="muted small">backup plan</span>' in body and ">backupplan<" not in body
    assert '<option value="backupplan">backup plan</option>' in body
    response = auditor_client.get("/audit/", {"object_type": "backupplan"})
    assert [event.action for event in response.context["page"].object_list] == ["plan.update", "plan.create"]

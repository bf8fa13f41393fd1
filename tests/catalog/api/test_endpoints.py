"""What each endpoint answers, and the 400s and 404s for bad requests."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from catalog.alerts.models import Alert
from catalog.models import AuditEvent, Backup, Source, Verification
from tests.catalog.api.helpers import bearer, make_token
from tests.factories import recorded_backup, sqlite_plan, sqlite_source

pytestmark = pytest.mark.django_db


@pytest.fixture
def reader():
    return bearer(make_token(scopes=["read"])[1])


@pytest.fixture
def operator():
    return bearer(make_token(scopes=["read", "backup"], name="deploy")[1])


def post_json(client, url, body, headers):
    return client.post(url, body, content_type="application/json", headers=headers)


# --- status -------------------------------------------------------------------


def test_it_reports_each_source_and_the_worst_status(client, reader, tmp_path):
    plan = sqlite_plan(tmp_path)
    backup = recorded_backup(plan)
    verification = Verification.objects.create(
        backup=backup, source=plan.source, kind="checksum", status="passed", finished_at=timezone.now()
    )
    since = timezone.now() - timedelta(hours=3)
    Source.objects.filter(pk=plan.source.pk).update(
        status="late", status_since=since, status_reason="No backup in 25 h", rpo_minutes=1440
    )
    Alert.objects.create(
        kind=Alert.SOURCE_HEALTH,
        key=f"source:{plan.source.pk}",
        source=plan.source,
        title="Shop is late",
        url=plan.source.get_absolute_url(),
    )
    Alert.objects.create(kind=Alert.STUCK_JOB, key="backup:1", title="Stuck", resolved_at=timezone.now())
    quiet = sqlite_source(tmp_path, name="Archive")
    Source.objects.filter(pk=quiet.pk).update(status="down", paused=True)  # paused: not counted

    body = client.get("/api/v1/status", headers=reader).json()

    assert body["status"] == "late"
    shop = next(s for s in body["sources"] if s["name"] == "Shop")
    assert shop["status"] == "late" and shop["reason"] == "No backup in 25 h" and shop["rpo_minutes"] == 1440
    assert shop["last_backup"] == {
        "id": backup.pk,
        "status": "succeeded",
        "created_at": shop["last_backup"]["created_at"],
        "finished_at": shop["last_backup"]["finished_at"],
    }
    assert shop["last_verification"]["id"] == verification.pk and shop["last_verification"]["status"] == "passed"
    archive = next(s for s in body["sources"] if s["name"] == "Archive")
    assert archive["last_backup"] is None and archive["paused"] is True
    [alert] = body["open_alerts"]  # the resolved one is not
    assert alert["title"] == "Shop is late" and alert["severity"] == "critical"
    assert alert["source"] == {"id": plan.source.pk, "name": "Shop"}
    assert alert["url"] == f"http://testserver/sources/{plan.source.pk}/"
    [disk] = body["destinations"]
    assert disk["used_bytes"] == 1000 and disk["quota_bytes"] is None and disk["share"] is None


def test_it_says_up_when_every_watched_source_is_up_or_new(client, reader, tmp_path):
    Source.objects.filter(pk=sqlite_source(tmp_path, "A").pk).update(status="up")
    sqlite_source(tmp_path, "B")  # new

    assert client.get("/api/v1/status", headers=reader).json()["status"] == "up"


def test_it_reads_status_in_the_same_number_of_queries_for_many_sources(client, reader, tmp_path):
    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/api/v1/status", headers=reader).status_code == 200
        return len(captured)

    recorded_backup(sqlite_plan(tmp_path, "P1", sqlite_source(tmp_path, "S1")))
    few = queries()
    for n in range(2, 6):
        recorded_backup(sqlite_plan(tmp_path, f"P{n}", sqlite_source(tmp_path, f"S{n}")))
    assert queries() == few


# --- listing backups --------------------------------------------------------------


def test_it_lists_backups_newest_first_with_filters(client, reader, tmp_path):
    plan = sqlite_plan(tmp_path)
    other = sqlite_plan(tmp_path, "Nightly", sqlite_source(tmp_path, "Ledger"))
    old = recorded_backup(plan, minutes_ago=120, label="before")
    failed = recorded_backup(plan, status=Backup.FAILED, minutes_ago=60)
    new = recorded_backup(plan, minutes_ago=1, label="pre-migration-backup")
    elsewhere = recorded_backup(other)

    def ids(query=""):
        response = client.get(f"/api/v1/backups{query}", headers=reader)
        assert response.status_code == 200, response.content
        return [item["id"] for item in response.json()["results"]]

    assert ids() == [elsewhere.pk, new.pk, failed.pk, old.pk]
    assert ids(f"?plan={plan.pk}") == [new.pk, failed.pk, old.pk]
    assert ids(f"?source={other.source.pk}") == [elsewhere.pk]
    assert ids("?status=failed") == [failed.pk]
    assert ids("?label=pre-migration-backup") == [new.pk]
    assert ids("?label=") == [elsewhere.pk, failed.pk]  # no label
    assert ids("?label=a%00b") == []  # found by schemathesis: PostgreSQL refuses NUL characters
    since = (timezone.now() - timedelta(minutes=90)).isoformat()
    until = (timezone.now() - timedelta(minutes=30)).isoformat()
    assert ids(f"?since={since.replace('+', '%2B')}&until={until.replace('+', '%2B')}") == [failed.pk]
    assert ids(f"?since={since}&until={until}") == [failed.pk]  # "+00:00" unencoded arrives as " 00:00"
    assert ids("?until=0001-01-01T00:00:00%2B05:00") == []  # before year 1 in UTC: nothing, and no 500
    assert ids("?until=9999-12-31T23:00:00-05:00") == ids()
    assert ids("?since=2000-01-01") == [elsewhere.pk, new.pk, failed.pk, old.pk]


def test_it_pages_through_backups(client, reader, tmp_path):
    plan = sqlite_plan(tmp_path)
    made = [recorded_backup(plan, minutes_ago=10 - n) for n in range(5)]

    first = client.get("/api/v1/backups?limit=2", headers=reader).json()
    assert first["count"] == 5 and first["previous"] is None
    assert [b["id"] for b in first["results"]] == [made[4].pk, made[3].pk]
    second = client.get(first["next"], headers=reader).json()
    assert [b["id"] for b in second["results"]] == [made[2].pk, made[1].pk]
    last = client.get(second["next"], headers=reader).json()
    assert [b["id"] for b in last["results"]] == [made[0].pk] and last["next"] is None
    assert "offset=2" in last["previous"]


def test_it_lists_a_page_in_the_same_number_of_queries_whatever_its_size(client, reader, tmp_path):
    plan = sqlite_plan(tmp_path)
    for n in range(30):
        recorded_backup(plan, minutes_ago=n)

    def queries(limit):
        with CaptureQueriesContext(connection) as captured:
            response = client.get(f"/api/v1/backups?limit={limit}", headers=reader)
        assert len(response.json()["results"]) == limit
        return len(captured)

    assert queries(2) == queries(30)


@pytest.mark.parametrize(
    "query, message",
    [
        ("?limit=0", "limit must be between 1 and 500"),
        ("?limit=501", "limit must be between 1 and 500"),
        ("?limit=ten", "limit must be a whole number"),
        ("?offset=-1", "offset must be between 0"),
        ("?source=abc", "source must be a whole number"),
        ("?plan=1.5", "plan must be a whole number"),
        ("?plan=99999999999999999999999", "plan must be between 1 and"),
        ("?status=great", "status must be one of queued, running"),
        ("?since=yesterday", "since must be an ISO 8601 date-time"),
        ("?until=2026-13-45T00:00:00", "until must be an ISO 8601 date-time"),
        ("?label=" + "x" * 101, "label must be at most 100 characters"),
        ("?since=", "since must be an ISO 8601 date-time"),
        ("?plan=", "plan must be a whole number"),
        ("?status=", "status must be one of"),
        ("?stauts=failed", "Unknown parameter 'stauts'; the filters are source, plan"),
    ],
)
def test_it_refuses_bad_filters(client, reader, query, message):
    response = client.get(f"/api/v1/backups{query}", headers=reader)

    assert response.status_code == 400
    assert message in response.json()["error"]


# --- one backup ---------------------------------------------------------------------


def test_it_shows_a_backup_with_its_copies(client, reader, tmp_path):
    backup = recorded_backup(sqlite_plan(tmp_path), label="pre-migration-backup")
    Backup.objects.filter(pk=backup.pk).update(pinned=True, hold_reason="before the upgrade")

    body = client.get(f"/api/v1/backups/{backup.pk}", headers=reader).json()

    assert body["id"] == backup.pk and body["label"] == "pre-migration-backup" and body["pinned"] is True
    assert body["sha256"] == "ab" * 32 and body["stored_bytes"] == 1000 and body["raw_bytes"] == 3000
    assert body["table_counts"] == {"main.items": 2} and body["duration_seconds"] == 42
    assert body["source"]["name"] == "Shop" and body["plan"]["name"] == "Hourly"
    [copy] = body["copies"]
    assert copy["destination"]["name"] == "Disk Hourly" and copy["destination"]["kind"] == "local"
    assert copy["status"] == "durable" and copy["size"] == 1000 and copy["verified_at"] is None
    assert body["links"]["page"] == f"http://testserver/backups/{backup.pk}/"
    assert body["links"]["self"] == f"http://testserver/api/v1/backups/{backup.pk}"


def test_it_answers_404_in_json(client, reader):
    for url in (
        "/api/v1/backups/999999",
        "/api/v1/backups/99999999999999999999999",
        "/api/v1/nothing/here",
        "/api/v1/backups/abc",
        "/api/v1/backups/%C2%AAN%0A/verify",
    ):  # a line break: found by schemathesis
        response = client.get(url, headers=reader)
        assert response.status_code == 404, url
        assert response.json()["error"]


def test_it_answers_405_in_json(client, reader):
    response = client.delete("/api/v1/backups", headers=reader)

    assert response.status_code == 405
    assert response["Allow"] == "GET, POST"
    assert "DELETE is not allowed" in response.json()["error"]


# --- starting backups and verifications ----------------------------------------------


def test_it_queues_a_backup_with_a_label(client, operator, tmp_path):
    plan = sqlite_plan(tmp_path)

    response = post_json(client, "/api/v1/backups", {"plan": plan.pk, "label": "pre-migration-backup"}, operator)

    assert response.status_code == 202, response.content
    backup = Backup.objects.get()
    assert response.json() == {
        "id": backup.pk,
        "status": "queued",
        "label": "pre-migration-backup",
        "trigger": "api",
        "url": f"http://testserver/api/v1/backups/{backup.pk}",
    }
    assert response["Location"] == response.json()["url"]
    assert (backup.plan, backup.label, backup.trigger) == (plan, "pre-migration-backup", "api")
    assert AuditEvent.objects.get(action="backup.queue").actor_label == "api token deploy"


def test_it_takes_a_plan_id_written_as_a_whole_float(client, operator, tmp_path):
    plan = sqlite_plan(tmp_path)

    response = client.post(
        "/api/v1/backups", f'{{"plan": {plan.pk}.0}}', content_type="application/json", headers=operator
    )

    assert response.status_code == 202 and Backup.objects.get().plan == plan


def test_it_refuses_a_second_backup_while_one_is_queued(client, operator, tmp_path):
    plan = sqlite_plan(tmp_path)
    assert post_json(client, "/api/v1/backups", {"plan": plan.pk}, operator).status_code == 202

    response = post_json(client, "/api/v1/backups", {"plan": plan.pk}, operator)

    assert response.status_code == 409
    assert "already queued or running" in response.json()["error"]
    assert Backup.objects.count() == 1


@pytest.mark.parametrize(
    "body, message",
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"{}", "plan is required"),
        (b'{"plan": "1"}', "plan is required"),
        (b'{"plan": true}', "plan is required"),
        (b'{"plan": "{plan}", "label": 5}', "label must be a string"),
        (b'{"plan": "{plan}", "label": null}', "label must be a string"),
        (b'{"plan": "{plan}", "lable": "typo"}', "Unknown member 'lable'; expected plan, label"),
        (b'{"plan": 1.5}', "plan is required"),
        (b'{"plan": "{plan}", "label": "two words"}', "label may use letters, digits"),
        (b'{"plan": "{plan}", "label": "' + b"x" * 101 + b'"}', "label may use letters, digits"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_it_refuses_bad_backup_requests(client, operator, tmp_path, body, message):
    plan = sqlite_plan(tmp_path)
    body = body.replace(b'"{plan}"', str(plan.pk).encode())

    response = client.post("/api/v1/backups", body, content_type="application/json", headers=operator)

    assert response.status_code == 400
    assert message in response.json()["error"]
    assert not Backup.objects.exists()


@pytest.mark.parametrize("plan_id", [999999, -1, 0, 99999999999999999999999])
def test_it_answers_404_for_an_unknown_plan(client, operator, plan_id):
    response = post_json(client, "/api/v1/backups", {"plan": plan_id}, operator)

    assert response.status_code == 404
    assert response.json() == {"error": f"No plan with id {plan_id}."}
    assert not Backup.objects.exists()


def test_it_queues_a_verification(client, operator, tmp_path):
    backup = recorded_backup(sqlite_plan(tmp_path))

    response = post_json(client, f"/api/v1/backups/{backup.pk}/verify", {"kind": "restore"}, operator)

    assert response.status_code == 202, response.content
    job = Verification.objects.get()
    assert (job.backup, job.kind, job.status, job.trigger) == (backup, "restore", "queued", "api")
    assert response.json()["id"] == job.pk and response.json()["kind"] == "restore"
    assert AuditEvent.objects.get(action="verification.queue").actor_label == "api token deploy"


def test_it_verifies_by_checksum_unless_told_otherwise(client, operator, tmp_path):
    backup = recorded_backup(sqlite_plan(tmp_path))

    response = client.post(f"/api/v1/backups/{backup.pk}/verify", content_type="application/json", headers=operator)

    assert response.status_code == 202
    assert Verification.objects.get().kind == "checksum"


def test_it_refuses_verifications_that_cannot_run(client, operator, tmp_path):
    plan = sqlite_plan(tmp_path)
    failed = recorded_backup(plan, status=Backup.FAILED)

    assert post_json(client, f"/api/v1/backups/{failed.pk}/verify", {}, operator).status_code == 409
    bad_kind = post_json(client, f"/api/v1/backups/{failed.pk}/verify", {"kind": "vibes"}, operator)
    assert bad_kind.status_code == 400 and "kind must be one of checksum, restore" in bad_kind.json()["error"]
    for kind in ({"name": "checksum"}, ["checksum"], None, 1):  # found by schemathesis: a dict was a 500
        odd = post_json(client, f"/api/v1/backups/{failed.pk}/verify", {"kind": kind}, operator)
        assert odd.status_code == 400, kind
    typo = post_json(client, f"/api/v1/backups/{failed.pk}/verify", {"knd": "restore"}, operator)
    assert typo.status_code == 400 and "Unknown member 'knd'" in typo.json()["error"]
    missing = post_json(client, "/api/v1/backups/999999/verify", {}, operator)
    assert missing.status_code == 404 and missing.json() == {"error": "No backup with id 999999."}
    assert not Verification.objects.exists()


def test_it_refuses_a_body_that_is_too_large(client, operator, tmp_path, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    plan = sqlite_plan(tmp_path)

    response = post_json(client, "/api/v1/backups", {"plan": plan.pk, "label": "x" * 200}, operator)

    assert response.status_code == 400
    assert response.json() == {"error": "The request body is too large."}

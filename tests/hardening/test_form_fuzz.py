"""Every form the app serves, fuzzed: hypothesis puts hostile values into
each field (very long strings, NUL and other control characters, SQL and
HTML fragments, invalid cron expressions, negative, huge, float and NaN
numbers, paths with `..`, right-to-left marks and emoji, empty values) and
posts them as a signed-in administrator (GET forms get them in the query).

Whatever comes in, the answer is never a 500 (the test client re-raises any
unhandled exception), it is a redirect after a save or a page that says what
is wrong, and no submitted markup comes back unescaped.

The FORMS table names each form with its URL, a valid set of values and the
fields to fuzz; a new form is one more row. Saved objects roll back with the
test's transaction, and nothing here reaches beyond 127.0.0.1."""

import base64
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

import pytest
from django.conf import settings as django_settings
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from catalog.alerts.models import Channel
from catalog.engine.crypto import KEY_FILE_HEADER
from catalog.keyring import KEY_ID
from catalog.models import Key
from catalog.services import Refused
from drills.models import Drill
from pitr.models import ContinuousProtection
from restore import services as restores
from restore.models import RestoreJob
from restore.wizard import SESSION_KEY
from tests.factories import make_plan, pg_source, recorded_backup, sqlite_plan
from tests.harness import pg
from tests.support import execute_sql

MARKUP = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "<svg/onload=alert(1)>"]
HOSTILE = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\x00" * 3,
    "\r\n",
    "\t\x0b\x0c",
    "\x1b[31mred",
    "\x7f\x08",
    "%00",
    "\u202egnp.exe",
    "'; DROP TABLE catalog_source; --",
    "1 OR 1=1",
    '" OR ""="',
    "%' OR '1'='1",
    "${jndi:ldap://127.0.0.1/x}",
    "{{ 7*7 }}",
    "{% debug %}",
    *MARKUP,
    "../../../../etc/passwd",
    "/../../etc",
    "/tmp/../../root",
    "..",
    "~/x",
    "x" * 10_000,
    "é" * 5_000,
    "😀" * 300,
    "\u05d0\u05d1\u05d2 mixed \u202b",
    "\ufeff",
    "\U0010fffd",
    "-1",
    "0",
    "-0",
    "1.5",
    "1e309",
    "-1e309",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "0x1F",
    "9" * 30,
    "-" + "9" * 30,
    "2147483648",
    "9223372036854775808",
    "1_000",
    "* * * *",
    "61 * * * *",
    "*/0 * * * *",
    "@reboot",
    "* * * * * * *",
    "0 0 31 2 *",
    "a b c d e",
    "1-100 * * * *",
    "0001-01-01",
    "9999-12-31",
    "2026-02-30",
    "0001-01-01T00:00",
    "9999-12-31T23:59",
    "2026-13-01 25:61",
    "null",
    "[]",
    "{}",
    "true",
]
EVERY_FIELD = [
    "a\x00b",
    "x" * 10_000,
    "'; DROP TABLE catalog_source; --" + MARKUP[0],
    "../../../../etc/passwd",
    "-1e309",
]
hostile_text = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(max_size=40),  # any encodable unicode, control characters included
    st.tuples(st.sampled_from(HOSTILE), st.text(max_size=8), st.sampled_from(HOSTILE)).map("".join),
)


@dataclass
class Form:
    name: str
    url: Callable  # world -> path
    valid: Callable  # world -> {field: value}
    fuzzed: list  # the fields hypothesis fills
    method: str = "post"
    prepare: Callable = None  # (client, world) before each request
    examples: int = 5  # drawn by hypothesis, besides the EVERY_FIELD examples
    valid_status: int = None  # what the valid values get: 302 (saved) for a POST, 200 for a GET, unless said
    extra: dict = field(default_factory=dict)


def wizard_at(*steps):
    """Puts the restore wizard's session where `steps` leave it."""

    def prepare(client, world):
        session = client.session
        data = {"source": world["source"].pk, "backup": world["backup"].pk}
        if "where" in steps:
            data.update(target="existing", database="", server="source")
        if "scope" in steps:
            data["tables"] = []
        session[SESSION_KEY] = data
        session.save()

    return prepare


PLAN_FIELDS = [
    "name",
    "source",
    "schedule",
    "format",
    "compression",
    "compression_level",
    "dump_jobs",
    "destinations",
    "size_tolerance_percent",
    "retention_mode",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
    "keep_last",
    "keep_days",
    "keep_minimum",
    "restore_test_days",
    "checksum_all_days",
    "plan_id",
]


def plan_values(w):
    return {
        "name": "Fuzzed plan",
        "source": w["source"].pk,
        "schedule": "0 3 * * *",
        "format": "sqlite",
        "compression": "zstd",
        "compression_level": "",
        "dump_jobs": "2",
        "destinations": w["destination"].pk,
        "size_tolerance_percent": "50",
        "retention_mode": "gfs",
        "keep_daily": "30",
        "keep_weekly": "12",
        "keep_monthly": "12",
        "keep_yearly": "5",
        "keep_last": "10",
        "keep_days": "30",
        "keep_minimum": "1",
        "verify_new_backups": "on",
        "restore_test_days": "7",
        "checksum_all_days": "30",
        "enabled": "on",
    }


def export_plan_values(w):
    return {
        **plan_values(w),
        "name": "Fuzzed export",
        "source": w["pg_source"].pk,
        "format": "jsonl",
        "export_picker": "1",
        "export_table": "public.items",
        "where:public.items": "id > 0",
        "set_label": "audit",
        "set_pattern": "public.audit_*",
    }


SOURCE_FIELDS = [
    "name",
    "engine",
    "host",
    "port",
    "dbname",
    "user",
    "password",
    "dsn",
    "sslmode",
    "sqlite_path",
    "rpo_minutes",
    "rto_minutes",
    "grace_minutes",
    "source_id",
]


def source_values(w):
    return {
        "name": "Fuzzed PG",
        "engine": "postgresql",
        "host": "127.0.0.1",
        "port": "5432",
        "dbname": "shop",
        "user": "shop",
        "password": "",
        "dsn": "",
        "sslmode": "",
        "sqlite_path": "",
        "rpo_minutes": "60",
        "rto_minutes": "240",
        "grace_minutes": "120",
    }


DESTINATION_FIELDS = [
    "name",
    "kind",
    "path",
    "bucket",
    "prefix",
    "endpoint_url",
    "region",
    "access_key_id",
    "secret_access_key",
    "immutable_days",
    "lock_mode",
    "quota_gb",
]


def destination_values(w):
    return {
        "name": "Fuzzed disk",
        "kind": "local",
        "path": str(w["tmp_path"] / "fuzzed"),
        "bucket": "",
        "prefix": "",
        "endpoint_url": "",
        "region": "",
        "access_key_id": "",
        "secret_access_key": "",
        "immutable_days": "",
        "lock_mode": "",
        "quota_gb": "10",
    }


def channel_values(w):
    return {
        "name": "Fuzzed hook",
        "kind": "webhook",
        "email_to": "",
        "url": "http://127.0.0.1:9/hook",
        "slack_url": "",
        "webhook_secret": "s3cret",
        "routing_key": "",
        "events": "source_health",
        "enabled": "on",
    }


def pk(name):
    return lambda w: w[name].pk


FORMS = [
    # --- sources, destinations, plans (catalog/forms.py)
    Form("source_new", lambda w: "/sources/new/", source_values, SOURCE_FIELDS),
    Form(
        "source_edit",
        lambda w: f"/sources/{w['source'].pk}/edit/",
        lambda w: {**source_values(w), "name": "Fuzzed SQLite", "engine": "sqlite", "sqlite_path": w["sqlite_path"]},
        SOURCE_FIELDS,
    ),
    # The connection test runs for real: the host stays on loopback, a SQLite path is only opened read-only.
    Form(
        "source_test",
        lambda w: "/sources/test/",
        lambda w: {**source_values(w), "engine": "sqlite", "sqlite_path": w["sqlite_path"]},
        [f for f in SOURCE_FIELDS if f != "host"],
        valid_status=200,
    ),
    Form("destination_new", lambda w: "/destinations/new/", destination_values, DESTINATION_FIELDS),
    Form(
        "destination_edit",
        lambda w: f"/destinations/{w['destination'].pk}/edit/",
        destination_values,
        DESTINATION_FIELDS,
    ),
    # The probe writes for real: the kind and place stay fixed (escaping paths are refused by their own tests).
    Form(
        "destination_test",
        lambda w: "/destinations/test/",
        destination_values,
        ["name", "prefix", "bucket", "region", "immutable_days", "lock_mode", "quota_gb", "destination_id"],
        valid_status=200,
    ),
    Form(
        "destination_remove_orphans",
        lambda w: f"/destinations/{w['destination'].pk}/orphans/remove/",
        lambda w: {"orphan": "backup:nothing"},
        ["orphan"],
    ),
    Form("plan_new", lambda w: "/plans/new/", plan_values, PLAN_FIELDS),
    Form("plan_new_prefilled", lambda w: "/plans/new/", lambda w: {"source": w["source"].pk}, ["source"], method="get"),
    Form("plan_edit", lambda w: f"/plans/{w['plan'].pk}/edit/", plan_values, PLAN_FIELDS),
    Form(
        "plan_new_export",
        lambda w: "/plans/new/",
        export_plan_values,
        ["name", "export_table", "where:public.items", "set_label", "set_pattern"],
        examples=8,
    ),
    Form(
        "export_tables",
        lambda w: "/plans/tables/",
        lambda w: {
            "format": "jsonl",
            "source": w["pg_source"].pk,
            "plan_id": "",
            "export_picker": "1",
            "export_table": "public.items",
            "where:public.items": "",
            "set_label": "a",
            "set_pattern": "b",
        },
        ["format", "source", "plan_id", "export_table", "set_label", "set_pattern"],
        method="get",
    ),
    Form(
        "cron_preview",
        lambda w: "/plans/cron-preview/",
        lambda w: {"schedule": "0 3 * * *"},
        ["schedule"],
        method="get",
        examples=10,
    ),
    Form(
        "retention_preview",
        lambda w: "/plans/retention-preview/",
        lambda w: {**plan_values(w), "plan_id": w["plan"].pk},
        [
            "plan_id",
            "retention_mode",
            "keep_daily",
            "keep_weekly",
            "keep_monthly",
            "keep_yearly",
            "keep_last",
            "keep_days",
            "keep_minimum",
        ],
        valid_status=200,
    ),
    Form(
        "plan_run",
        lambda w: f"/plans/{w['plan'].pk}/run/",
        lambda w: {"label": "pre-migration", "next": ""},
        ["label", "next"],
    ),
    # --- backups, verifications, audit trail: pins and list filters
    Form(
        "backup_pin",
        lambda w: f"/backups/{w['backup'].pk}/pin/",
        lambda w: {"reason": "audit", "legal_hold": ""},
        ["reason", "legal_hold"],
    ),
    Form(
        "backup_list",
        lambda w: "/backups/",
        lambda w: {"source": "", "plan": "", "status": "", "since": "", "until": "", "page": "1"},
        ["source", "plan", "status", "since", "until", "page"],
        method="get",
    ),
    Form(
        "verification_list",
        lambda w: "/verifications/",
        lambda w: {"source": "", "kind": "", "status": "", "page": "1"},
        ["source", "kind", "status", "page"],
        method="get",
    ),
    Form(
        "audit_list",
        lambda w: "/audit/",
        lambda w: {"actor": "", "action": "", "object_type": "", "object": "", "since": "", "until": "", "page": ""},
        ["actor", "action", "object_type", "object", "since", "until", "page"],
        method="get",
    ),
    Form(
        "audit_export_csv",
        lambda w: "/audit/export.csv",
        lambda w: {"object": "", "since": ""},
        ["object", "since", "until", "actor"],
        method="get",
        examples=3,
    ),
    Form("restore_list", lambda w: "/restores/", lambda w: {"page": "1"}, ["page"], method="get", examples=3),
    # --- alert channels, API tokens, master keys
    Form(
        "channel_new",
        lambda w: "/channels/new/",
        channel_values,
        ["name", "kind", "email_to", "url", "slack_url", "webhook_secret", "routing_key", "events", "enabled"],
    ),
    Form(
        "channel_edit",
        lambda w: f"/channels/{w['channel'].pk}/edit/",
        lambda w: {"name": "Walk mail", "kind": "email", "email_to": "oncall@example.org", "events": "source_health"},
        ["name", "kind", "email_to", "url", "events", "new_webhook_secret"],
    ),
    Form(
        "channel_new_enable",
        lambda w: "/channels/new/",
        lambda w: {"enable": "1"},
        ["enable"],
        method="get",
        examples=2,
    ),
    Form(
        "token_new",
        lambda w: "/tokens/new/",
        lambda w: {"name": "CI", "scopes": "read", "expires_in_days": "30"},
        ["name", "scopes", "expires_in_days"],
        valid_status=200,
    ),  # the page that shows the new token
    Form(
        "key_rotate_paste",
        lambda w: "/keys/rotate/",
        lambda w: {"source": "paste", "pasted_key": base64.b64encode(b"k" * 31).decode()},
        ["source", "pasted_key"],
        extra={"never_generate": True},
        valid_status=400,
    ),  # 31 bytes: a key must never be imported here
    Form(
        "key_destroy",
        lambda w: f"/keys/{w['key'].pk}/destroy/",
        lambda w: {"confirm_key_id": "mk-other"},
        ["confirm_key_id"],
    ),
    # --- the restore wizard (restore/views.py reads request.POST itself)
    Form(
        "restore_start",
        lambda w: "/restores/new/",
        lambda w: {"backup": w["backup"].pk},
        ["backup"],
        method="get",
        valid_status=302,
    ),
    Form(
        "restore_backup_choices",
        lambda w: "/restores/new/backups/",
        lambda w: {"source": w["source"].pk},
        ["source"],
        method="get",
    ),
    Form(
        "restore_what",
        lambda w: "/restores/new/what/",
        lambda w: {"backup": w["backup"].pk},
        ["backup"],
        prepare=wizard_at(),
    ),
    Form(
        "restore_what_source",
        lambda w: "/restores/new/what/",
        lambda w: {"source": w["source"].pk},
        ["source"],
        method="get",
        prepare=wizard_at(),
    ),
    Form(
        "restore_where",
        lambda w: "/restores/new/where/",
        lambda w: {"target": "new", "database": "restored_db", "server": "source"},
        ["target", "database", "server"],
        prepare=wizard_at(),
    ),
    Form(
        "restore_scope",
        lambda w: "/restores/new/scope/",
        lambda w: {"scope": "some", "tables": "main.items"},
        ["scope", "tables"],
        prepare=wizard_at("where"),
    ),
    Form(
        "restore_mode",
        lambda w: "/restores/new/mode/",
        lambda w: {"mode": "preview"},
        ["mode"],
        prepare=wizard_at("where", "scope"),
    ),
    Form(
        "restore_review",
        lambda w: "/restores/new/review/",
        lambda w: {"confirm": "nothing"},
        ["confirm"],
        prepare=wizard_at("where", "scope"),
        valid_status=200,
    ),  # the name is not typed: nothing starts
    # --- drills, compliance report, point-in-time recovery
    Form(
        "drill_schedule",
        lambda w: f"/drills/sources/{w['source'].pk}/schedule/",
        lambda w: {"checksum_every_days": "7", "partial_every_days": "30", "full_every_days": "90", "automatic": "on"},
        ["checksum_every_days", "partial_every_days", "full_every_days", "automatic"],
    ),
    Form(
        "drill_record",
        lambda w: f"/drills/sources/{w['source'].pk}/record/",
        lambda w: {
            "kind": Drill.FULL,
            "performed_at": "2026-01-02T03:04",
            "minutes": "42",
            "outcome": "passed",
            "notes": "restored into scratch",
        },
        ["kind", "performed_at", "minutes", "outcome", "notes"],
    ),
    Form(
        "compliance_report",
        lambda w: "/compliance/",
        lambda w: {"start": "2026-01-01", "end": "2026-01-31", "sources": w["source"].pk},
        ["start", "end", "sources"],
        method="get",
    ),
    Form(
        "compliance_report_csv",
        lambda w: "/compliance/report.csv",
        lambda w: {"start": "2026-01-01", "end": "2026-01-31"},
        ["start", "end", "sources"],
        method="get",
        examples=3,
    ),
    Form(
        "pitr_protection_enable",
        lambda w: f"/pitr/sources/{w['pg_source'].pk}/protection/enable/",
        lambda w: {"mode": "archive", "destinations": w["destination"].pk, "recovery_window_days": "14"},
        ["mode", "destinations", "recovery_window_days"],
    ),
    Form(
        "pitr_restore_start",
        lambda w: f"/pitr/sources/{w['pg_source'].pk}/restore/",
        lambda w: {
            "target_kind": "time",
            "target_time": "2026-01-02T03:04:05",
            "restore_point": "",
            "data_directory": str(django_settings.PITR_RESTORE_ROOT / "fuzz"),
            "port": "15432",
        },
        ["target_kind", "target_time", "restore_point", "data_directory", "port"],
        valid_status=200,
    ),  # no base backup yet: refused with a reason, nothing starts
    Form(
        "pitr_restore_plan",
        lambda w: f"/pitr/sources/{w['pg_source'].pk}/restore/plan/",
        lambda w: {"target_kind": "time", "target_time": "2026-01-02T03:04:05"},
        ["target_kind", "target_time", "restore_point", "port"],
        method="get",
    ),
]

# A page that says what is wrong, or the result of a test or preview (htmx partials).
SAYS_SOMETHING = (
    'class="error"',
    "flash-error",
    "has-error",
    "test-result",
    "cron-preview",
    "retention-summary",
    "flash-success",
    'class="muted"',
    "<form",
)
TEXT_ANSWERS = ("text/csv", "text/plain", "application/json", "application/jsonl")


@pytest.fixture(scope="module")
def shop_database(pg_server):
    """One PostgreSQL database for the whole module: making one per test costs seconds."""
    name = f"sr_fuzz_{uuid.uuid4().hex[:10]}"
    conninfo = pg.create_database(name)
    execute_sql(conninfo, "CREATE TABLE items (id int PRIMARY KEY, name text)")
    yield conninfo
    pg.drop_database(name)


@pytest.fixture
def world(db, tmp_path, admin_user, shop_database):
    plan = sqlite_plan(tmp_path)
    backup = recorded_backup(plan, label="before-fuzz")
    postgres = pg_source(shop_database, name="Fuzz PG source")
    ContinuousProtection.objects.create(source=postgres, enabled=True, mode=ContinuousProtection.ARCHIVE)
    make_plan(postgres, [plan.destinations.first()], name="Fuzz PG nightly", format="custom")
    channel = Channel.objects.create(
        name="Walk mail", kind=Channel.EMAIL, email_to="oncall@example.org", events=["source_health"]
    )
    retired = Key.objects.create(key_id="mk-fuzz-retired", fingerprint="0" * 64)
    return {
        "tmp_path": tmp_path,
        "source": plan.source,
        "sqlite_path": plan.source.sqlite_path,
        "plan": plan,
        "destination": plan.destinations.first(),
        "backup": backup,
        "pg_source": postgres,
        "channel": channel,
        "key": retired,
    }


@pytest.fixture
def browser_client(admin_client):
    admin_client.raise_request_exception = True  # an unhandled exception fails the test, not a quiet 500
    return admin_client


def check_answer(form, response, submitted):
    """Never a 500; a redirect, or a page that says something; no markup reflected."""
    assert response.status_code < 500
    status = response.status_code
    assert status in (200, 302, 400, 404), f"{form.name}: unexpected {status}"
    body = b"".join(response.streaming_content) if response.streaming else response.content
    text = body.decode("utf-8", "replace")
    content_type = response.get("Content-Type", "")
    # A text/plain, CSV or JSON answer is never rendered as HTML (nosniff): markup there is only text.
    if content_type.startswith("text/html"):
        for markup in MARKUP:
            if any(markup in str(value) for value in submitted.values()):
                assert markup not in text, f"{form.name}: {markup!r} is reflected unescaped"
    if status == 302:
        return
    if form.method == "post" and not content_type.startswith(TEXT_ANSWERS):
        assert any(marker in text for marker in SAYS_SOMETHING), f"{form.name}: a {status} page that says nothing"


def send(client, form, world, values):
    if form.prepare:
        form.prepare(client, world)
    url = form.url(world)
    if form.method == "get":
        return client.get(url, values)
    return client.post(url, values)


@pytest.mark.parametrize("form", FORMS, ids=lambda f: f.name)
def test_it_survives_hostile_values_in_every_field(browser_client, world, form):
    # The baseline each example starts from is itself a good answer, so that
    # a hostile value in one field meets valid values in the others.
    values = form.valid(world)
    response = send(browser_client, form, world, values)
    check_answer(form, response, values)
    assert response.status_code == (form.valid_status or (302 if form.method == "post" else 200)), form.name

    @settings(
        max_examples=form.examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.fixed_dictionaries({}, optional={name: hostile_text for name in form.fuzzed}))
    def fuzz(changes):
        values = {**form.valid(world), **changes}
        if form.extra.get("never_generate") and values.get("source") == "generate":
            values["source"] = "paste"  # a generated key is a real key file, not input to fuzz
        response = send(browser_client, form, world, values)
        check_answer(form, response, values)

    for value in EVERY_FIELD:  # tried first, in every field at once, whatever hypothesis draws
        fuzz = example({name: value for name in form.fuzzed})(fuzz)
    fuzz()


@settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(step=st.from_regex(r"\A[-a-zA-Z0-9_]{1,60}\Z"), kind=hostile_text.filter(lambda k: k and "/" not in k))
def test_it_answers_unknown_wizard_steps_and_drill_kinds(browser_client, world, step, kind):
    """Parts of the path a user can edit: the wizard's step and a drill's kind."""
    response = browser_client.get(f"/restores/new/{step}/")
    known = step in ("what", "where", "scope", "mode", "review")
    assert response.status_code in ((200, 302) if known else (404,))
    response = browser_client.post(f"/drills/sources/{world['source'].pk}/run/{quote(kind, safe='')}/")
    assert response.status_code in (302, 404)
    if response.status_code == 302:
        assert {str(m) for m in get_messages(response.wsgi_request)} == {"Unknown kind of drill."}
    assert not Drill.objects.filter(source=world["source"]).exists()


@pytest.mark.parametrize(
    "field, message",
    [
        ("set_label", "A named set&#x27;s label or pattern cannot hold a NUL character."),
        ("set_pattern", "A named set&#x27;s label or pattern cannot hold a NUL character."),
        ("where:public.items", "A row filter cannot hold a NUL character."),
    ],
)
def test_a_nul_in_an_export_choice_is_refused_on_the_form(browser_client, world, field, message):
    """Found by the fuzzing: the plan keeps its export choice as JSON, which
    PostgreSQL refuses with a NUL in it (a 500, before the form said so)."""
    values = {**export_plan_values(world), field: "audit\x00log"}
    response = browser_client.post("/plans/new/", values)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not world["pg_source"].plans.filter(name="Fuzzed export").exists()
    values[field] = "id > 0" if field.startswith("where") else "audit_log"
    assert browser_client.post("/plans/new/", values).status_code == 302  # the same choice without it is saved
    assert world["pg_source"].plans.get(name="Fuzzed export").export_sets


GOOD_KEY = base64.b64encode(bytes(range(32))).decode()
key_files = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda key_id, key: f"{KEY_FILE_HEADER}\nid: {key_id}\nkey: {key}\n".encode("utf-8", "surrogatepass"),
        hostile_text,
        st.one_of(hostile_text, st.just(GOOD_KEY)),
    ),
)


@settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(content=key_files)
@example(content=f"{KEY_FILE_HEADER}\nid: mk-\x00-nul\nkey: {GOOD_KEY}\n".encode())
@example(content=b"\xff\xfe" + b"x" * 10_000)
def test_it_refuses_any_uploaded_key_file_that_is_not_one(browser_client, world, content):
    """The key import's file upload: bytes that are not a key file, or a key
    file with a hostile id or key, are refused on the form; no key is added."""
    key_id = (
        dict(line.split(": ", 1) for line in content.decode("utf-8", "replace").splitlines()[1:] if ": " in line)
        .get("id", "")
        .strip()
    )
    assume(not (KEY_ID.match(key_id) and GOOD_KEY in content.decode("utf-8", "replace")))  # a real import
    keys = Key.objects.count()
    response = browser_client.post(
        "/keys/rotate/",
        {"source": "upload", "key_file": SimpleUploadedFile("mk.key", content, "application/octet-stream")},
    )
    assert response.status_code == 400
    assert 'class="error"' in response.content.decode() or "flash-error" in response.content.decode()
    assert Key.objects.count() == keys


@pytest.mark.parametrize(
    "next_value",
    ["https://evil.example/", "//evil.example/", "/\\evil.example/", "evil", "javascript:alert(1)", " ", "\x00"],
)
def test_a_refused_run_goes_back_to_this_site_only(browser_client, world, next_value):
    """Found by the fuzzing: a refused "Back up now" went wherever its `next`
    said (an open redirect; a word that is no URL was a 500)."""
    plan = world["plan"]
    assert browser_client.post(f"/plans/{plan.pk}/run/").status_code == 302  # queued; the next one is refused
    response = browser_client.post(f"/plans/{plan.pk}/run/", {"next": next_value})
    assert response.status_code == 302
    assert response["Location"] == plan.get_absolute_url()
    assert "already queued or running" in str(list(get_messages(response.wsgi_request))[-1])
    assert plan.backups.count() == 2  # the recorded one and the queued one
    source_page = plan.source.get_absolute_url()
    assert browser_client.post(f"/plans/{plan.pk}/run/", {"next": source_page})["Location"] == source_page


@pytest.mark.parametrize(
    "method, url, data",
    [
        ("get", "/plans/new/", {"source": "1 OR 1=1"}),
        ("get", "/plans/tables/", {"format": "jsonl", "source": "x", "plan_id": "²"}),
        ("post", "/plans/retention-preview/", {"plan_id": "-1", "retention_mode": "gfs"}),
        ("post", "/sources/test/", {"source_id": "abc", "engine": "sqlite", "name": "x"}),
        ("post", "/destinations/test/", {"destination_id": "1.5", "kind": "local", "name": "x"}),
        ("get", "/restores/new/", {"backup": "\x00"}),
        ("get", "/restores/new/backups/", {"source": "../1"}),
        ("post", "/restores/new/what/", {"backup": "1e3"}),
    ],
)
def test_an_id_that_is_no_number_names_nothing(browser_client, world, method, url, data):
    """Found by the fuzzing: views that look a row up by an id from the form
    or the query raised on one that is not a number (a 500)."""
    response = getattr(browser_client, method)(url, data)
    assert response.status_code in (200, 302)
    if url == "/restores/new/what/":
        assert "Pick a backup that still has a stored copy." in response.content.decode()
    if url == "/restores/new/":
        assert browser_client.session.get(SESSION_KEY) is None  # no backup chosen


@pytest.mark.parametrize("name", ["copy.db\n", "copy.db\x00", "../copy.db", "copy db", ""])
def test_a_new_file_name_with_a_line_break_is_refused(world, name):
    """Found while reading the wizard's fields: the name check ended in "$",
    which also matches before a final line break, so "copy.db\\n" passed where
    the wizard does not strip it (the restore command, a script)."""
    with pytest.raises(Refused, match="Name the new file"):
        restores.request_restore("test", world["backup"], target="new", database=name, enqueue=False)
    assert restores.DATABASE_NAME.match("shop_copy\n") is None
    assert not RestoreJob.objects.exists()

"""No secret anywhere, over a full flow that succeeds and fails.

Every kind of secret Strongroom holds is put to work: a source database
password (and a wrong one), S3 secret keys (one that works, one the bucket
refuses), a webhook signing secret and a Slack URL (one receiver answering,
one answering 500, one unreachable), an API token, and the master key. Then
every place a secret could surface is searched for each of them: every page of
the URL walk and of the admin, the API and its OpenAPI document, the metrics,
every log record, every row of every table (audit events, error fields,
django-q tasks, schedules and queue), every manifest on disk and in S3, and the
messages of the failures themselves. tests/catalog/test_secrets.py is the
short version of this for one good backup."""

import base64
import hashlib
import hmac
import logging
import uuid
from io import StringIO

import pytest
from django.apps import apps
from django.conf import settings as django_settings
from django.contrib import admin
from django.urls import reverse

from catalog import backup_runs, keyring, queues, services
from catalog.alerts.models import Alert, Channel, Notification
from catalog.api.models import ApiToken
from catalog.models import AuditEvent, Backup, Copy, Destination, Key, Source, Verification
from restore.models import RestoreJob
from tests.catalog.alerts.channel_helpers import ALL_EVENTS, free_port
from tests.factories import local_destination, make_plan, pg_source, s3_destination
from tests.harness import pg, s3, s3_auth
from tests.support import restore_now
from tests.test_url_walk import fill, patterns

pytestmark = pytest.mark.django_db(transaction=True)

WRONG_PASSWORD = "wrong-Pa55-" + uuid.uuid4().hex
WRONG_DSN_PASSWORD = "wrong-dsn-" + uuid.uuid4().hex
WRONG_VERIFY_PASSWORD = "wrong-verify-" + uuid.uuid4().hex
S3_SECRET = "S3-secret-" + uuid.uuid4().hex
WEBHOOK_SECRET = "whsec-" + uuid.uuid4().hex
SLACK_TOKEN = "slackTOKEN" + uuid.uuid4().hex
APPRISE_TOKEN = "appriseTOKEN" + uuid.uuid4().hex


@pytest.fixture
def denied_bucket():
    """A bucket on an IAM-enforcing moto whose user may do nothing."""
    process, endpoint_url = s3_auth.start_auth_server()
    try:
        key_id, secret = s3_auth.bucket_with_powerless_user(endpoint_url, "locked")
        yield {
            "endpoint_url": endpoint_url,
            "bucket": "locked",
            "region": "us-east-1",
            "access_key_id": key_id,
            "secret_access_key": secret,
        }
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def every_log_line():
    """Every record of every logger at DEBUG, formatted with its traceback, as
    the root logger's console handler would write it."""
    stream = StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG)
    # The test's own fake Slack (pytest-httpserver, werkzeug) logs the paths it serves, secret ones included.
    handler.addFilter(
        lambda record: (
            record.name != "werkzeug" or not any(p in record.getMessage() for p in ("/services/", "/apprise/"))
        )
    )
    loggers = [logging.getLogger()] + [
        logging.getLogger(name)
        for name in list(logging.root.manager.loggerDict)
        if not logging.getLogger(name).propagate
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
    logging.getLogger().setLevel(logging.DEBUG)
    yield stream
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


def master_key_forms():
    """The active master key as the strings it could leak as."""
    key_id, key = keyring.active_key()
    file_text = keyring.key_path(key_id).read_text()
    return key, {
        "master key (base64)": base64.b64encode(key).decode(),
        "master key (urlsafe base64)": base64.urlsafe_b64encode(key).decode().rstrip("="),
        "master key (hex)": key.hex(),
        "master key (HEX)": key.hex().upper(),
        "master key file line": file_text.splitlines()[-1],
    }


def channel_form(kind, name, **fields):
    return {"name": name, "kind": kind, "events": ALL_EVENTS, "enabled": "on", **fields}


def admin_pages(client):
    """Every admin changelist, and the change page of every object (a few per model)."""
    urls = [reverse("admin:index")]
    for model in admin.site._registry:
        label = f"{model._meta.app_label}_{model._meta.model_name}"
        urls.append(reverse(f"admin:{label}_changelist"))
        for pk in model.objects.values_list("pk", flat=True)[:5]:
            urls.append(reverse(f"admin:{label}_change", args=[pk]))
    return {url: client.get(url) for url in urls}


def walked_pages(client, world, api_headers):
    """GET of every URL of the apps (tests/test_url_walk.py), filled with the
    flow's own objects; the API and metrics with the token."""
    pages = {}
    for name, route, entry in patterns():
        try:
            url = fill(name, route, entry, world)
        except (AssertionError, KeyError):
            continue  # an object kind this flow does not make (drills, PITR)
        headers = api_headers if url.startswith(("/api/", "/metrics")) else {}
        pages[url] = client.get(url, headers=headers)
    return pages


def test_no_secret_of_a_full_flow_leaks_anywhere(
    password_server, s3_bucket, denied_bucket, tmp_path, admin_client, admin_user, httpserver, settings, every_log_line
):
    settings.NOTIFY_RETRY_DELAYS = (0, 0, 0)
    settings.KEY_DIR = tmp_path / "keys"  # a master key of this test's own, made below
    admin_user.is_staff = admin_user.is_superuser = True  # to read the admin pages too
    admin_user.save()
    key, secrets = master_key_forms()
    secrets.update(
        {
            "source password": pg.TEST_PASSWORD,
            "wrong source password": WRONG_PASSWORD,
            "password in a DSN": WRONG_DSN_PASSWORD,
            "scratch server password": WRONG_VERIFY_PASSWORD,
            "S3 secret key": S3_SECRET,
            "denied S3 secret key": denied_bucket["secret_access_key"],
            "webhook signing secret": WEBHOOK_SECRET,
            "Slack URL token": SLACK_TOKEN,
            "Apprise URL token": APPRISE_TOKEN,
        }
    )
    raised = []  # the messages of what failed, as the user gets them

    # Forms that fail validation must not echo a secret typed into them.
    conninfo = {**password_server, "dbname": "postgres"}
    echoed = admin_client.post(
        "/sources/new/",
        {
            "name": "",
            "engine": "postgresql",
            "host": conninfo["host"],
            "port": "not-a-port",
            "user": conninfo["user"],
            "password": pg.TEST_PASSWORD,
        },
    ).content.decode()
    echoed += admin_client.post(
        "/destinations/new/", {"name": "", "kind": "s3", "bucket": "b", "secret_access_key": S3_SECRET}
    ).content.decode()
    echoed += admin_client.post(
        "/channels/new/", channel_form("slack", "", slack_url=f"http://x/{SLACK_TOKEN}")
    ).content.decode()
    assert "This field is required" in echoed

    # "Test connection" with a wrong password, "Test" on a bucket that refuses.
    raised.append(
        admin_client.post(
            "/sources/test/",
            {
                "name": "Probe",
                "engine": "postgresql",
                "host": conninfo["host"],
                "port": conninfo["port"],
                "dbname": "postgres",
                "user": conninfo["user"],
                "password": WRONG_PASSWORD,
                "grace_minutes": "120",
            },
        ).content.decode()
    )
    assert "Password authentication failed for user postgres" in raised[-1]
    raised.append(
        admin_client.post(
            "/destinations/test/",
            {
                "name": "Locked",
                "kind": "s3",
                "bucket": "locked",
                "endpoint_url": denied_bucket["endpoint_url"],
                "region": "us-east-1",
                "access_key_id": denied_bucket["access_key_id"],
                "secret_access_key": denied_bucket["secret_access_key"],
            },
        ).content.decode()
    )
    assert "✗" in raised[-1]

    # Channels: a webhook that answers (signed with our secret), a Slack URL
    # that answers, a webhook answering 500 and a Slack URL nobody listens on.
    httpserver.expect_request("/hook").respond_with_data("ok")
    httpserver.expect_request("/broken-hook").respond_with_data("upstream down", status=500)
    httpserver.expect_request(f"/services/T0/B0/{SLACK_TOKEN}").respond_with_data("ok")
    httpserver.expect_request(f"/apprise/{APPRISE_TOKEN}").respond_with_data("ok")
    channels = {
        "Ops hook": channel_form("webhook", "Ops hook", url=httpserver.url_for("/hook"), webhook_secret=WEBHOOK_SECRET),
        "Ops Slack": channel_form("slack", "Ops Slack", slack_url=httpserver.url_for(f"/services/T0/B0/{SLACK_TOKEN}")),
        "Broken hook": channel_form(
            "webhook", "Broken hook", url=httpserver.url_for("/broken-hook"), webhook_secret=WEBHOOK_SECRET
        ),
        "Gone Slack": channel_form(
            "slack", "Gone Slack", slack_url=f"http://127.0.0.1:{free_port()}/services/T0/B0/{SLACK_TOKEN}"
        ),
        "Ops Apprise": channel_form(
            "apprise", "Ops Apprise", apprise_url=f"json://127.0.0.1:{httpserver.port}/apprise/{APPRISE_TOKEN}"
        ),
    }
    for data in channels.values():
        assert admin_client.post("/channels/new/", data).status_code == 302
    for channel in Channel.objects.all():
        admin_client.post(reverse("channel_test", args=[channel.pk]))
    tests = {n.channel.name: n for n in Notification.objects.select_related("channel")}
    assert {name: n.status for name, n in tests.items()} == {
        "Ops hook": "sent",
        "Ops Slack": "sent",
        "Broken hook": "failed",
        "Gone Slack": "failed",
        "Ops Apprise": "sent",
    }
    raised += [n.error for n in tests.values() if n.error]
    assert "500" in tests["Broken hook"].error and "Could not reach" in tests["Gone Slack"].error
    # The secrets were put to work: the body is signed with ours, the Slack URL was used.
    received = {request.path: request for request, _ in httpserver.log}
    signature = hmac.new(WEBHOOK_SECRET.encode(), received["/hook"].get_data(), hashlib.sha256).hexdigest()
    assert received["/hook"].headers["X-Strongroom-Signature"] == f"sha256={signature}"
    assert f"/services/T0/B0/{SLACK_TOKEN}" in received
    assert f"/apprise/{APPRISE_TOKEN}" in received

    # An API token, shown once on the page that creates it.
    created = admin_client.post("/tokens/new/", {"name": "CI", "scopes": ["read", "backup"], "expires_in_days": "30"})
    raw_token = created.context["raw_token"]
    assert created.content.decode().count(raw_token) == 1
    secrets["API token"] = raw_token
    secrets["API token (after its prefix)"] = raw_token[len(ApiToken.objects.get().prefix) :]
    api = {"Authorization": f"Bearer {raw_token}"}

    # A good encrypted backup to disk and S3, started through the API; a
    # checksum verification and a restore of it.
    # The source and the S3 destination are typed into their forms, as an administrator does.
    assert (
        admin_client.post(
            "/sources/new/",
            {
                "name": "Inventory DB",
                "engine": "postgresql",
                "host": conninfo["host"],
                "port": conninfo["port"],
                "dbname": "postgres",
                "user": conninfo["user"],
                "password": pg.TEST_PASSWORD,
                "grace_minutes": "120",
            },
        ).status_code
        == 302
    )
    assert (
        admin_client.post(
            "/destinations/new/",
            {
                "name": "Off-site S3",
                "kind": "s3",
                "bucket": s3_bucket["bucket"],
                "prefix": "strongroom",
                "endpoint_url": s3_bucket["endpoint_url"],
                "region": s3_bucket["region"],
                "access_key_id": s3_bucket["access_key_id"],
                "secret_access_key": S3_SECRET,
                "offsite": "on",
            },
        ).status_code
        == 302
    )
    source = Source.objects.get(name="Inventory DB")
    plan = make_plan(
        source, [local_destination(tmp_path / "disk"), Destination.objects.get(name="Off-site S3")], encrypt=True
    )
    response = admin_client.post(
        "/api/v1/backups", {"plan": plan.pk, "label": "pre-migration"}, content_type="application/json", headers=api
    )
    assert response.status_code == 202, response.content
    good = Backup.objects.get(pk=response.json()["id"])
    assert good.status == Backup.SUCCEEDED, good.error
    assert good.copies.filter(status=Copy.DURABLE).count() == 2
    assert Verification.objects.get(backup=good, kind="checksum").status == "passed"
    restored = f"secrets_restored_{uuid.uuid4().hex[:6]}"
    try:
        job = restore_now(good, target=RestoreJob.NEW, database=restored)
    finally:
        drop_on(conninfo, restored)
    assert job.status == RestoreJob.SUCCEEDED, job.summary

    # Test restores on a scratch server named by a URL with a password in it:
    # the right one, then a wrong one.
    scratch = f"postgresql://{conninfo['user']}:{{}}@{conninfo['host']}:{conninfo['port']}/postgres"
    test_restores = []
    for password in (pg.TEST_PASSWORD, WRONG_VERIFY_PASSWORD):
        settings.VERIFY_SERVER_URL = scratch.format(password)
        admin_client.post(f"/backups/{good.pk}/test-restore/")
        test_restores.append(Verification.objects.filter(backup=good, kind="restore").latest("pk"))
    settings.VERIFY_SERVER_URL = ""
    assert [v.status for v in test_restores] == ["passed", "failed"], test_restores[0].summary
    assert "password authentication failed" in test_restores[1].summary.lower()
    raised.append(test_restores[1].summary)

    # Failures: the source's password changed under it; S3 refuses the keys.
    # (once as fields, once as a connection string with the password in it).
    wrong = pg_source(conninfo, name="Wrong password DB", password=WRONG_PASSWORD)
    wrong_disk = local_destination(tmp_path / "wrong", name="Wrong disk")
    failed = backup_runs.start_backup("test", make_plan(wrong, [wrong_disk], name="Wrong"))
    failed.refresh_from_db()
    assert failed.status == Backup.FAILED and "password authentication failed" in failed.error.lower()
    dsn = f"postgresql://{conninfo['user']}:{WRONG_DSN_PASSWORD}@{conninfo['host']}:{conninfo['port']}/postgres"
    assert (
        admin_client.post(
            "/sources/new/", {"name": "DSN DB", "engine": "postgresql", "dsn": dsn, "grace_minutes": "120"}
        ).status_code
        == 302
    )
    wrong_dsn = Source.objects.get(name="DSN DB")
    failed_dsn = backup_runs.start_backup("test", make_plan(wrong_dsn, [wrong_disk], name="Wrong DSN"))
    failed_dsn.refresh_from_db()
    assert failed_dsn.status == Backup.FAILED and "password authentication failed" in failed_dsn.error.lower()
    denied = backup_runs.start_backup(
        "test", make_plan(source, [s3_destination(denied_bucket, name="Locked S3")], name="Denied")
    )
    denied.refresh_from_db()
    assert denied.status == Backup.FAILED and "denied" in denied.error.lower()
    raised += [
        failed.error,
        failed_dsn.error,
        denied.error,
        services.test_source(wrong)[1],
        services.test_source(wrong_dsn)[1],
    ]
    assert Notification.objects.filter(event=Notification.OPENED).exists()  # the failures alerted the channels

    # Every place a secret could surface.
    world = {
        "source": source,
        "destination": plan.destinations.first(),
        "plan": plan,
        "backup": good,
        "copy": good.copies.first(),
        "verification": test_restores[1],
        "restore": job,
        "channel": Channel.objects.get(name="Broken hook"),
        "token": ApiToken.objects.get(),
        "key": Key.objects.get(),
        "audit": AuditEvent.objects.last(),
        "alert": Alert.objects.first(),
    }
    queues.record_heartbeat(django_settings.WORK_CLUSTER)  # /readyz: a worker runs (here, tasks run inline)
    pages = {**walked_pages(admin_client, world, api), **admin_pages(admin_client)}
    # The page of every object of the flow, and the edit forms of those holding secrets.
    for model in (Source, Destination, Backup, Verification, RestoreJob, Channel):
        for obj in model.objects.all():
            pages[obj.get_absolute_url()] = admin_client.get(obj.get_absolute_url())
    for name, model in (("source_edit", Source), ("destination_edit", Destination), ("channel_edit", Channel)):
        for pk in model.objects.values_list("pk", flat=True):
            pages[reverse(name, args=[pk])] = admin_client.get(reverse(name, args=[pk]))
    # The guide's cron status answers 503 by design while no scheduler runs (none does here), for monitors.
    failed = {url: r.status_code for url, r in pages.items() if r.status_code >= 500}
    assert failed in ({}, {"/api/cron/status": 503}), failed
    bodies = {url: body_of(r) for url, r in pages.items()}
    assert pages["/api/v1/openapi.json"].status_code == 200 and pages["/metrics"].status_code == 200
    assert pages["/api/v1/backups"].status_code == 200

    manifests = [p.read_bytes() for p in tmp_path.rglob("*.manifest.json")]
    client = s3.client(s3_bucket["endpoint_url"])
    manifests += [
        client.get_object(Bucket=s3_bucket["bucket"], Key=k)["Body"].read()
        for k in s3.all_keys(s3_bucket["endpoint_url"], s3_bucket["bucket"])
        if k.endswith(".manifest.json")
    ]
    assert len(manifests) == 2

    rows = {f"{m._meta.label} rows": str(list(m.objects.values())) for m in apps.get_models()}
    places = {
        **{f"page {url}": body.decode(errors="replace") for url, body in bodies.items()},
        "log records": every_log_line.getvalue(),
        **rows,
        "manifests": b"".join(manifests).decode(),
        "failure messages": "\n".join(raised),
        "form answers": echoed,
    }
    # The search looks where it should: many pages, DEBUG records of the libraries too.
    assert len(places) > 100 and "DEBUG botocore" in every_log_line.getvalue()
    leaks = [
        (what, place, excerpt(text, value))
        for what, value in secrets.items()
        for place, text in places.items()
        if value in text
    ]
    assert leaks == []
    # The raw key bytes, wherever bytes are kept.
    assert key not in b"".join(manifests) + b"".join(bodies.values())


def excerpt(text, value, around=200):
    at = text.index(value)
    return text[max(0, at - around) : at + len(value) + around]


def body_of(response):
    return b"".join(response.streaming_content) if response.streaming else response.content


def drop_on(conninfo, name):
    import psycopg

    with psycopg.connect(**conninfo, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

"""Walks EVERY URL pattern of the root URLconf (through its includes) and
checks who may do what: anonymous visitors are sent to log in, auditors can
read and can change nothing (every POST answers 403), and a POST without a
CSRF token is refused even for an administrator.

A new URL is walked as soon as it exists: its path parameters are filled from
a small world of objects made with the ORM, by URL name and parameter
(FILL_BY_NAME) or, for `pk`, by the object its name starts with (PK_BY_PREFIX).
A parameter it cannot fill fails the test with what to add, so no URL escapes
the walk."""

from dataclasses import dataclass

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from catalog import audit, keyring, queues
from catalog.alerts.models import Alert, Channel
from catalog.api import tokens
from catalog.models import (
    AuditEvent,
    Backup,
    BackupPlan,
    Copy,
    Destination,
    Key,
    KeyRotation,
    RestoreServer,
    Source,
    Verification,
)
from drills import schedule as drill_schedule
from drills.models import Drill, DrillSchedule
from pitr.models import PitrRestore
from restore.models import RestoreJob
from restore.wizard import STEPS

# The admin guards its own pages (staff only, its own login); auditors are not
# staff, so of its hundreds of patterns only the index is walked, below.
SKIPPED_NAMESPACES = {"admin"}

# Reachable without logging in.
PUBLIC = {
    "login": 200,
    "healthz": 200,
    "readyz": 200,
    "api_openapi": 200,
    "favicon": 301,
    # A set-password link (here a made-up one: the page says it no longer works).
    "password_reset_confirm": 200,
    # Single sign-on is off in the walk (tests/accounts/test_sso.py signs in through a real provider).
    "oidc_authentication_init": 404,
    "oidc_authentication_callback": 404,
    # A security key's challenge for the pending sign-in: fetched with a POST by static/js/webauthn.js.
    "login_second_factor_key_options": 405,
}
# Authenticated by API token, not by the session: no token means 401, so an
# auditor's (or anyone's) session grants nothing there, and they are exempt from
# CSRF because no browser sends their credentials by itself.
TOKEN_AUTHENTICATED_PREFIXES = ("/api/", "/metrics")
# Where a pattern has no name (the API's JSON 404 for anything else), the path to walk.
UNNAMED = {r"api/v1/^[\s\S]*$": "/api/v1/no-such-resource"}
# Logging in and out is what an auditor may POST, and their own two-factor (under
# /account/: catalog.middleware.ReadOnlyForViewers; tests/accounts/test_two_factor.py).
AUDITOR_MAY_POST = {
    "login",
    "logout",
    "two_factor",
    "two_factor_recovery_codes",
    "two_factor_disable",
    "two_factor_key_options",
    "two_factor_key_add",
    "two_factor_key_remove",
    "two_factor_confirm_options",
}

# What an auditor's GET may answer besides 200, and why.
AUDITOR_GET = {
    "logout": (405, "logging out is a POST"),
    "restore_start": (403, "starts the restore wizard: administrators only"),
    "restore_step": (403, "the restore wizard: administrators only"),
    "restore_backup_choices": (403, "the restore wizard: administrators only"),
    "login": (302, "a logged-in user is sent on to the dashboard"),
    "favicon": (301, "the icon in static/"),
    "pitr_restore_start": (403, "the point-in-time restore form: administrators only"),
    "pitr_restore_plan": (403, "the point-in-time restore form's plan: administrators only"),
    "pitr_drill_start": (403, "starts a PITR drill (POST only): administrators only"),
    "pitr_restore_stop_server": (403, "stops a restored server (POST only): administrators only"),
    "login_second_factor": (302, "a signed-in user is sent on to the dashboard"),
    "two_factor_recovery_codes": (405, "makes new recovery codes: POST only"),
    "two_factor_policy": (403, "the two-factor policy (POST only): administrators only"),
    "login_second_factor_key_options": (405, "a security key's challenge: POST only"),
    "two_factor_key_options": (405, "a security key's challenge: POST only"),
    "two_factor_confirm_options": (405, "a security key's challenge: POST only"),
    "two_factor_key_add": (405, "adds a security key: POST only"),
    "oidc_authentication_init": (404, "single sign-on is off in the walk"),
    "oidc_authentication_callback": (404, "single sign-on is off in the walk"),
}
# Names that say the URL changes something (or opens a form to): an auditor's
# GET of it may answer 403 (the form is for administrators) or 405 (POST only).
WRITE_WORDS = {
    "new",
    "edit",
    "delete",
    "test",
    "run",
    "cancel",
    "pin",
    "unpin",
    "verify",
    "scan",
    "remove",
    "revoke",
    "rotate",
    "destroy",
    "resume",
    "record",
    "schedule",
    "download",
    "prune",
    "preview",
    "tables",
    "enable",
    "disable",
    "check",
    "change",
    "deactivate",
    "reactivate",
    "reset",
    "import",
}


@dataclass
class Walked:
    name: str  # with its namespace, as reverse() takes it
    route: str
    url: str


@pytest.fixture
def world(db, tmp_path, admin_user):
    # Tables named like dict methods: a template's `counts.items` would look up the table "items".
    counts = {"items": 3, "keys": 1, "values": 2}
    queues.record_heartbeat(settings.WORK_CLUSTER)  # /readyz: a worker runs
    source = Source.objects.create(name="Walk DB", slug="walk", engine="sqlite", sqlite_path=str(tmp_path / "w.db"))
    destination = Destination.objects.create(name="Walk disk", kind="local", path=str(tmp_path / "backups"))
    plan = BackupPlan.objects.create(name="Walk nightly", source=source, format="sqlite")
    plan.destinations.set([destination])
    backup = Backup.objects.create(
        source=source, plan=plan, format="sqlite", compression="zstd", status=Backup.SUCCEEDED, table_counts=counts
    )
    copy = Copy.objects.create(backup=backup, destination=destination, status=Copy.DURABLE, key="walk/1")
    verification = Verification.objects.create(
        backup=backup,
        source=source,
        kind="checksum",
        status="passed",
        evidence={"rows": counts, "table_of_contents": counts},
    )
    restore = RestoreJob.objects.create(
        backup=backup,
        source=source,
        target_database="walk_restored",
        status="succeeded",
        report={"row_counts": {t: {"backup": n, "restored": n} for t, n in counts.items()}, "inserted": counts},
    )
    alert = Alert.objects.create(
        kind="source_health", key=f"source:{source.pk}", source=source, title="Walk DB is down"
    )
    channel = Channel.objects.create(
        name="Walk mail", kind=Channel.EMAIL, email_to="oncall@example.org", events=["source_health"]
    )
    token, _ = tokens.create_token("test", "Walk CI", ["read"], None, owner=admin_user)
    pitr_restore = PitrRestore.objects.create(
        source=source,
        target_kind="latest",
        status="failed",
        report={"expected_counts": counts, "restored_counts": counts},
    )
    drill = Drill.objects.create(source=source, kind=Drill.FULL, how=Drill.MANUAL, status=Drill.PASSED, seconds=60)
    DrillSchedule.objects.create(source=source)
    keyring.active_key()
    retired = Key.objects.create(key_id="mk-walk-retired", fingerprint="0" * 64)
    rotation = KeyRotation.objects.create(
        new_key=Key.objects.get(is_active=True), previous_key_id=retired.key_id, status="succeeded"
    )
    server = RestoreServer.objects.create(name="Walk standby", host="127.0.0.1", port=1, user="postgres")
    return {
        "source": source,
        "destination": destination,
        "plan": plan,
        "backup": backup,
        "copy": copy,
        "verification": verification,
        "restore": restore,
        "alert": alert,
        "channel": channel,
        "token": token,
        "drill": drill,
        "pitr_restore": pitr_restore,
        "key": retired,
        "key_rotation": rotation,
        "server": server,
        "audit": audit.record("test", "walk.prepare", source),
        "person": User.objects.create_user("walk-person", "walk@example.org", "correct horse battery"),
    }


# pk by the start of the URL name, longest first.
PK_BY_PREFIX = {
    "source": "source",
    "destination": "destination",
    "plan": "plan",
    "backup": "backup",
    "api_backup": "backup",
    "api_pitr_restore": "pitr_restore",
    "api_restore": "restore",
    "copy": "copy",
    "verification": "verification",
    "restore": "restore",
    "alert": "alert",
    "channel": "channel",
    "token": "token",
    "drill": "drill",
    "key_rotation": "key_rotation",
    "key": "key",
    "audit": "audit",
    "pitr_restore": "pitr_restore",
    "server": "server",
    "person": "person",
}
# (URL name, parameter): what fills it, when the name alone would mislead.
FILL_BY_NAME = {
    ("restore_step", "step"): lambda w: "what",
    ("drill_history", "pk"): lambda w: w["source"].pk,
    ("drill_schedule", "pk"): lambda w: w["source"].pk,
    ("drill_record", "pk"): lambda w: w["source"].pk,
    ("drill_run", "pk"): lambda w: w["source"].pk,
    ("drill_run", "kind"): lambda w: Drill.FULL,
    ("pitr_restore_start", "pk"): lambda w: w["source"].pk,
    ("pitr_restore_plan", "pk"): lambda w: w["source"].pk,
    ("pitr_drill_start", "pk"): lambda w: w["source"].pk,
    ("pitr_protection", "pk"): lambda w: w["source"].pk,
    ("pitr_protection_enable", "pk"): lambda w: w["source"].pk,
    ("pitr_protection_disable", "pk"): lambda w: w["source"].pk,
    ("pitr_wal_push", "pk"): lambda w: w["source"].pk,
    ("api_pitr_restores", "pk"): lambda w: w["source"].pk,
    ("pitr_wal_push", "name"): lambda w: "000000010000000000000001",
    ("password_reset_confirm", "uidb64"): lambda w: "MQ",
    ("password_reset_confirm", "token"): lambda w: "cz6a0v-0123456789abcdef0123456789abcdef",
    ("two_factor_reset", "pk"): lambda w: w["person"].pk,
    # Any number: the view (POST only) refuses a key that is not the signed-in person's own.
    ("two_factor_key_remove", "pk"): lambda w: 1,
}


# Parameters whose values lead to different views (the wizard's steps) or
# choices (a drill's kind): every value is walked, not only the one above.
EVERY_VALUE = {
    ("restore_step", "step"): lambda w: [step for step, _ in STEPS],
    ("drill_run", "kind"): lambda w: list(drill_schedule.KINDS),
}

# What an administrator's GET may answer besides 200, and why.
ADMIN_GET = {
    "login": (302, "a logged-in user is sent on to the dashboard"),
    "logout": (405, "logging out is a POST"),
    "favicon": (301, "the icon in static/"),
    "restore_start": (302, "resets the wizard and goes on to its first step"),
    "pitr_restore_start": (404, "the walk's source is SQLite: no point-in-time restore"),
    "pitr_restore_plan": (404, "the walk's source is SQLite: no point-in-time restore"),
    "pitr_drill_start": (405, "starts a PITR drill: POST only"),
    "pitr_restore_stop_server": (405, "stops a restored server: POST only"),
    "login_second_factor": (302, "a signed-in user is sent on to the dashboard"),
    "two_factor_recovery_codes": (405, "makes new recovery codes: POST only"),
    "two_factor_policy": (405, "sets the two-factor policy (a form on the people page): POST only"),
    "login_second_factor_key_options": (405, "a security key's challenge: POST only"),
    "two_factor_key_options": (405, "a security key's challenge: POST only"),
    "two_factor_confirm_options": (405, "a security key's challenge: POST only"),
    "two_factor_key_add": (405, "adds a security key: POST only"),
    "oidc_authentication_init": (404, "single sign-on is off in the walk"),
    "oidc_authentication_callback": (404, "single sign-on is off in the walk"),
}


def patterns(resolver=None, prefix="", namespace=""):
    """(name with namespace, route, pattern) of every URL pattern, through includes."""
    for entry in (resolver or get_resolver()).url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            if entry.namespace in SKIPPED_NAMESPACES:
                continue
            yield from patterns(entry, route, inner)
        elif isinstance(entry, URLPattern):
            yield (f"{namespace}{entry.name}" if entry.name else None), route, entry


def fill(name, route, entry, world, given=None):
    """The URL of the pattern, its parameters filled (`given` ones first)."""
    if name is None:
        assert route in UNNAMED, f"The URL pattern {route!r} has no name: give it one, or add it to UNNAMED."
        return UNNAMED[route]
    kwargs = {}
    # path() names its parameters in converters, re_path() in its regex's named groups.
    for parameter in getattr(entry.pattern, "converters", None) or entry.pattern.regex.groupindex:
        if parameter in (given or {}):
            kwargs[parameter] = given[parameter]
            continue
        if (name, parameter) in FILL_BY_NAME:
            kwargs[parameter] = FILL_BY_NAME[name, parameter](world)
            continue
        prefix = next((p for p in sorted(PK_BY_PREFIX, key=len, reverse=True) if name.startswith(p)), None)
        assert parameter == "pk" and prefix, (
            f"The URL walk cannot fill <{parameter}> of {name!r} ({route}): add ({name!r}, {parameter!r}) to "
            f"FILL_BY_NAME, or a name prefix to PK_BY_PREFIX, in tests/test_url_walk.py."
        )
        kwargs[parameter] = world[PK_BY_PREFIX[prefix]].pk
    return reverse(name, kwargs=kwargs)


def walked(world):
    urls = []
    for name, route, entry in patterns():
        every = [(parameter, values(world)) for (n, parameter), values in EVERY_VALUE.items() if n == name]
        variants = [{parameter: value} for parameter, values in every for value in values] or [None]
        urls += [Walked(name, route, fill(name, route, entry, world, given)) for given in variants]
    return urls


def token_authenticated(url):
    return url.startswith(TOKEN_AUTHENTICATED_PREFIXES)


def is_write_name(name):
    return bool(WRITE_WORDS & set(name.replace(":", "_").split("_")))


def test_it_walks_every_url_of_the_apps(world):
    urls = walked(world)
    names = {w.name for w in urls}
    # A sample from each app, so that a broken include does not shrink the walk unnoticed.
    assert {
        "dashboard",
        "backup_detail",
        "restore_detail",
        "drill_list",
        "compliance_report",
        "compliance_report_pdf",
        "api_backup",
        "metrics",
        "login",
    } <= names
    # Every step of the wizard (each its own view) and every kind of drill.
    assert {w.url for w in urls if w.name == "restore_step"} == {f"/restores/new/{step}/" for step, _ in STEPS}
    assert len([w for w in urls if w.name == "drill_run"]) == len(drill_schedule.KINDS)


def test_anonymous_visitors_are_sent_to_log_in(client, world):
    problems = []
    for w in walked(world):
        response = client.get(w.url)
        if w.name in PUBLIC:
            ok = response.status_code == PUBLIC[w.name]
        elif token_authenticated(w.url):
            ok = response.status_code in (401, 403, 404, 405)  # 405: the API's POST-only resources
        else:
            ok = response.status_code == 302 and response["Location"].startswith("/login/")
        if not ok:
            problems.append(f"GET {w.url} ({w.name}) as anonymous: {response.status_code}")
    assert client.get("/admin/").status_code == 302
    assert not problems, "\n".join(problems)


def test_auditors_can_read_everything(auditor_client, world):
    problems = []
    for w in walked(world):
        response = auditor_client.get(w.url)
        status = response.status_code
        if w.name in AUDITOR_GET:
            ok = status == AUDITOR_GET[w.name][0]
        elif w.name in PUBLIC:
            ok = status == 200
        elif token_authenticated(w.url):
            # No token, no entry (405: POST-only resources; 404: the walk's own unknown API path).
            ok = status in (401, 403, 404, 405)
        elif status in (403, 405):
            ok = is_write_name(w.name)
        else:
            ok = status == 200
        if not ok:
            problems.append(f"GET {w.url} ({w.name}) as auditor: {status}")
    assert auditor_client.get("/admin/")["Location"].startswith("/admin/login/")  # not staff
    assert not problems, "\n".join(problems)


def test_administrators_can_open_every_page(admin_client, world):
    """Every page an administrator may open answers 200: none fails on the
    walk's objects; POST-only URLs say 405; the API wants its token. And a
    GET changes nothing (no audit event but the record that a report was
    exported), or a link could do what a form does."""
    changes = AuditEvent.objects.exclude(action="report.export")
    events = changes.count()
    problems = []
    for w in walked(world):
        response = admin_client.get(w.url)
        status = response.status_code
        if w.name in ADMIN_GET:
            ok = status == ADMIN_GET[w.name][0]
        elif w.name in PUBLIC:
            ok = status == 200
        elif w.name == "restore_step":
            # The first step opens; a later one sends back to the first, as nothing is chosen yet.
            ok = status == 200 if w.url.endswith("/what/") else response.get("Location") == "/restores/new/what/"
        elif token_authenticated(w.url):
            ok = status in (401, 404, 405)
        elif status == 405:
            ok = is_write_name(w.name)
        else:
            ok = status == 200
        if not ok:
            problems.append(f"GET {w.url} ({w.name}) as administrator: {status}")
    assert not problems, "\n".join(problems)
    assert changes.count() == events


def test_auditors_can_change_nothing(auditor_client, world):
    """The test client skips CSRF checks: as a page's form would send a valid token."""
    events = AuditEvent.objects.count()
    problems = []
    for w in walked(world):
        if w.name in AUDITOR_MAY_POST:
            continue
        response = auditor_client.post(w.url, {"name": "changed by an auditor", "confirm": "yes"})
        if response.status_code != 403:
            problems.append(f"POST {w.url} ({w.name}) as auditor: {response.status_code}")
    assert auditor_client.post("/admin/").status_code in (302, 403)
    assert not problems, "\n".join(problems)
    assert AuditEvent.objects.count() == events
    assert Source.objects.get().name == "Walk DB"


def test_a_post_without_a_csrf_token_is_refused(admin_user, world):
    """An administrator's session alone must not be enough: a page elsewhere
    could make their browser post to us."""
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(admin_user)
    events = AuditEvent.objects.count()
    problems = []
    for w in walked(world):
        response = browser.post(w.url, {"name": "forged"})
        # A token-authenticated URL has no session there: a token or nothing.
        ok = response.status_code in (401, 403, 404, 405) if token_authenticated(w.url) else response.status_code == 403
        if not ok:
            problems.append(f"POST {w.url} ({w.name}) without CSRF token: {response.status_code}")
    # The Django admin (skipped by the walk) guards its forms the same way, for a superuser too.
    admin_user.is_staff = admin_user.is_superuser = True
    admin_user.save()
    for url in (
        "/admin/login/",
        "/admin/logout/",
        "/admin/catalog/source/add/",
        f"/admin/catalog/source/{world['source'].pk}/delete/",
    ):
        if browser.post(url, {"name": "forged", "post": "yes"}).status_code != 403:
            problems.append(f"POST {url} (admin) without CSRF token")
    assert not problems, "\n".join(problems)
    assert AuditEvent.objects.count() == events
    assert Source.objects.get().name == "Walk DB"


def test_a_url_it_cannot_fill_fails_the_walk(world):
    from django.urls import path

    new = path("widgets/<int:widget_id>/", lambda request, widget_id: None, name="widget_detail")
    with pytest.raises(AssertionError, match=r"cannot fill <widget_id> of 'widget_detail'.*FILL_BY_NAME"):
        fill("widget_detail", "widgets/<int:widget_id>/", new, world)
    unnamed = path("gadgets/", lambda request: None)
    with pytest.raises(AssertionError, match="has no name"):
        fill(None, "gadgets/", unnamed, world)

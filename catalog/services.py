"""Configuration, shared by views, tasks, the API and commands: sources,
destinations, restore servers and plans, and trying their connections.
Backup runs are in catalog/backup_runs.py.

Every state change happens in a transaction together with its audit event.
Functions take an `actor`: a User, or a string naming a system actor.
"""

import logging
import os
import sqlite3
from collections.abc import Collection, Iterable, Mapping
from typing import TypeVar, cast

import psycopg
from django.conf import settings
from django.db import transaction
from django.db.models import ProtectedError
from django.utils import timezone
from django.utils.text import slugify

from catalog import audit
from catalog.alerts import hooks as monitor
from catalog.engine import dumpers, mariadb_dump, mariadb_restore
from catalog.engine.errors import EngineError
from catalog.errors import Refused
from catalog.models import BackupPlan, Copy, Destination, Job, RestoreServer, SealedSecrets, Source, host_conflict
from catalog.schedules import remove_plan_schedule, sync_plan_schedule
from catalog.text import count_text

log = logging.getLogger(__name__)

S = TypeVar("S", bound=SealedSecrets)


# --- configuration ---------------------------------------------------------


def unique_slug(source: Source) -> str:
    base = slugify(source.name)[:90] or "source"
    slug, counter = base, 2
    while Source.objects.filter(slug=slug).exclude(pk=source.pk).exists():
        slug, counter = f"{base}-{counter}", counter + 1
    return slug


def save_sealed(
    actor: audit.Actor,
    thing: S,
    kind: str,
    changed_fields: Iterable[str],
    secrets: Mapping[str, str | None] | None,
) -> S:
    """Saves a SealedSecrets record with the non-empty `secrets` sealed in
    (empty ones keep what is stored) and audits it as `<kind>.create` or
    `<kind>.update`; the event names a changed secret, never its value."""
    created = thing.pk is None
    secrets = {k: v for k, v in (secrets or {}).items() if v}
    thing.set_secrets(**secrets)
    thing.save()
    changes = audit.describe_changes(thing, list(changed_fields) + sorted(secrets))
    audit.record(actor, f"{kind}.create" if created else f"{kind}.update", thing, changes)
    return thing


@transaction.atomic
def save_source(
    actor: audit.Actor,
    source: Source,
    *,
    changed_fields: Iterable[str] = (),
    secrets: Mapping[str, str | None] | None = None,
) -> Source:
    if not source.slug:
        source.slug = unique_slug(source)
    save_sealed(actor, source, "source", changed_fields, secrets)
    monitor.source_changed(source)
    return source


@transaction.atomic
def delete_source(actor: audit.Actor, source: Source) -> None:
    count = source.backups.count()
    if count:
        raise Refused(
            f"{source} has {count} backup(s) in the catalog. Backups are kept until "
            "retention removes them, so the source cannot be deleted yet."
        )
    for plan in source.plans.all():
        delete_plan(actor, plan)
    audit.record(actor, "source.delete", source, {"name": source.name})
    source.delete()


# Fields that make it another SFTP server: the host key pinned for the old one no longer holds.
SFTP_ADDRESS_FIELDS = ("server", "server_port")


@transaction.atomic
def save_destination(
    actor: audit.Actor,
    destination: Destination,
    *,
    changed_fields: Iterable[str] = (),
    secrets: Mapping[str, str | None] | None = None,
) -> Destination:
    destination.forget_other_kinds_secrets()
    changed_fields = list(changed_fields)
    if destination.host_key and set(changed_fields) & set(SFTP_ADDRESS_FIELDS):
        destination.host_key, destination.host_key_pinned_at = "", None
        changed_fields.append("host_key")
    return save_sealed(actor, destination, "destination", changed_fields, secrets)


@transaction.atomic
def pin_host_key(destination: Destination, key_line: str) -> str:
    """Pins an SFTP server's host key seen on the first connection, unless a
    connection elsewhere pinned one first; returns the key pinned now."""
    from catalog.engine.storage.sftp import fingerprint

    now = timezone.now()
    pinned = Destination.objects.filter(pk=destination.pk, host_key="").update(
        host_key=key_line, host_key_pinned_at=now
    )
    if pinned:
        destination.host_key, destination.host_key_pinned_at = key_line, now
        changes = {"server": f"{destination.server}:{destination.server_port or 22}", "host_key": fingerprint(key_line)}
        audit.record(None, "destination.host_key_pin", destination, changes)
        return key_line
    destination.host_key, destination.host_key_pinned_at = Destination.objects.values_list(
        "host_key", "host_key_pinned_at"
    ).get(pk=destination.pk)
    return destination.host_key


@transaction.atomic
def forget_host_key(actor: audit.Actor, destination: Destination) -> None:
    """Forgets an SFTP server's pinned host key (re-keyed legitimately): the
    next connection pins the key the server offers then."""
    if not destination.host_key:
        raise Refused(f"{destination} has no pinned host key to forget.")
    forgotten = destination.host_key_fingerprint()
    destination.host_key, destination.host_key_pinned_at = "", None
    destination.save(update_fields=["host_key", "host_key_pinned_at", "updated_at"])
    audit.record(actor, "destination.host_key_forget", destination, {"host_key": forgotten})


@transaction.atomic
def delete_destination(actor: audit.Actor, destination: Destination) -> None:
    count = destination.copies.exclude(status=Copy.PRUNED).count()
    if count:
        raise Refused(f"{destination} still holds {count} backup copies, so it cannot be deleted.")
    plans = list(destination.plans.values_list("name", flat=True))
    if plans:
        raise Refused(f"{destination} is used by the plan(s) {', '.join(plans)}. Remove it from them first.")
    audit.record(actor, "destination.delete", destination, {"name": destination.name})
    destination.delete()


# Fields that make it another server: the version recorded for the old one no longer holds.
SERVER_ADDRESS_FIELDS = ("engine", "host", "port")


@transaction.atomic
def save_restore_server(
    actor: audit.Actor,
    server: RestoreServer,
    *,
    changed_fields: Iterable[str] = (),
    secrets: Mapping[str, str | None] | None = None,
) -> RestoreServer:
    if set(changed_fields) & set(SERVER_ADDRESS_FIELDS):
        server.server_version, server.checked_at = "", None
    return save_sealed(actor, server, "restore_server", changed_fields, secrets)


@transaction.atomic
def delete_restore_server(actor: audit.Actor, server: RestoreServer) -> None:
    # The event goes first, while the row still has its id; a refusal below
    # rolls it back with everything else.
    audit.record(actor, "restore_server.delete", server, {"name": server.name})
    try:
        with transaction.atomic():
            server.delete()
    except ProtectedError as exc:
        raise Refused(restore_server_in_use(server, cast("set[Job]", exc.protected_objects))) from exc


def restore_server_in_use(server: RestoreServer, restores: Collection[Job]) -> str:
    """Why a server that restores name cannot go, in words. Those restores
    are jobs of the restore app (PROTECT keeps their record of where they
    went true), known here only as catalog Jobs."""
    active = [job for job in restores if job.is_active()]
    if active:
        names = ", ".join(f"{job} ({job.status})" for job in active)
        return f"{server} is the target of {names}; wait for it to finish, or cancel it, before deleting the server."
    return (
        f"{server} cannot be deleted: {count_text(len(restores), 'finished restore')} went to it, and the record "
        "of where each restore went must stay true."
    )


CAN_CREATE_DATABASES = (
    "SELECT current_setting('server_version'), rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
)


def probe_restore_server(
    server: RestoreServer, secrets: Mapping[str, str | None] | None = None
) -> tuple[bool, str, str]:
    """Connects to the server's maintenance database: (ok, message in words
    without the password, server version or "" when it did not connect)."""
    params = server.connection_params(secrets)
    if server.engine == "mariadb":
        return probe_mariadb_server(server, params)
    try:
        with dumpers.connect_server(params) as conn:
            row = conn.execute(CAN_CREATE_DATABASES).fetchone()
    except EngineError as exc:
        return False, str(exc), ""
    except psycopg.Error as exc:
        return False, dumpers.describe_pg_error(exc, params), ""
    if row is None:  # pg_roles always has current_user; a server that hides it cannot be checked
        return False, f"Connected, but the server does not show role {server.user} in pg_roles.", ""
    version, can_create = row
    release = version.split()[0]
    if not can_create:
        return (
            False,
            f"Connected to PostgreSQL {release}, but role {server.user} cannot create databases "
            "(CREATEDB), and every restore creates one.",
            version,
        )
    return True, f"Connected: PostgreSQL {release}; role {server.user} can create databases.", version


def probe_mariadb_server(server: RestoreServer, params: Mapping[str, object]) -> tuple[bool, str, str]:
    """A MariaDB/MySQL server: its version, and whether the user may create
    (and, after a failed restore, drop) databases."""
    try:
        version, privileges = mariadb_restore.global_privileges(params)
    except EngineError as exc:
        return False, str(exc), ""
    release = mariadb_restore.release(version) or "MariaDB/MySQL"
    lacking = {"CREATE", "DROP"} - privileges
    if lacking:
        return (
            False,
            f"Connected to {release}, but user {server.user} lacks {' and '.join(sorted(lacking))} on *.*, and every "
            "restore creates a database (and drops it again if the restore fails).",
            version,
        )
    return True, f"Connected: {release}; user {server.user} can create databases.", version


def test_restore_server(server: RestoreServer, secrets: Mapping[str, str | None] | None = None) -> tuple[bool, str]:
    """Tries the form's values before they are saved; returns (ok, message)."""
    ok, message, _ = probe_restore_server(server, secrets)
    return ok, message


def check_restore_server(actor: audit.Actor, server: RestoreServer) -> tuple[bool, str]:
    """Connects to a registered server and records its version, so that the
    wizard can tell which backups it may take; returns (ok, message). A
    failed connection records nothing: the last version found stays."""
    ok, message, version = probe_restore_server(server)
    if version:
        with transaction.atomic():
            server.server_version, server.checked_at = version, timezone.now()
            server.save(update_fields=["server_version", "checked_at"])
            audit.record(actor, "restore_server.check", server, {"server_version": version, "result": message})
    return ok, message


@transaction.atomic
def save_plan(
    actor: audit.Actor,
    plan: BackupPlan,
    *,
    changed_fields: Iterable[str] = (),
    destinations: Iterable[Destination] | None = None,
) -> BackupPlan:
    created = plan.pk is None
    if destinations is not None:
        destinations = list(destinations)
        if problem := host_conflict(destinations):  # the plan form says so first, on the field
            raise Refused(problem)
    plan.save()
    if destinations is not None:
        plan.destinations.set(destinations)
    sync_plan_schedule(plan)
    changes = audit.describe_changes(plan, changed_fields)
    audit.record(actor, "plan.create" if created else "plan.update", plan, changes)
    monitor.plan_changed(plan)
    return plan


@transaction.atomic
def delete_plan(actor: audit.Actor, plan: BackupPlan) -> None:
    remove_plan_schedule(plan)
    audit.record(actor, "plan.delete", plan, {"name": plan.name})
    plan.delete()
    monitor.plan_changed(plan)


def test_source(source: Source, secrets: Mapping[str, str | None] | None = None) -> tuple[bool, str]:
    """Tries to reach the source; returns (ok, message in words)."""
    if source.engine == "sqlite":
        return test_sqlite_file(source.sqlite_path)
    if source.engine == "mariadb":
        return test_mariadb_source(source, secrets)
    try:
        info = dumpers.test_pg_connection(source.conninfo(secrets), pg_dump=settings.PG_DUMP)
    except EngineError as exc:
        return False, str(exc)
    return True, f"Connected: PostgreSQL {info['server_version']}, {info['pg_dump_version']}"


def test_mariadb_source(source: Source, secrets: Mapping[str, str | None] | None = None) -> tuple[bool, str]:
    """Connects, and says what a consistent, complete dump would lack: the
    user's missing privileges (the test fails) and the tables outside the
    snapshot (a warning: they are dumped, but not as of one moment)."""
    try:
        found = mariadb_dump.check_source(source.conninfo(secrets))
    except EngineError as exc:
        return False, str(exc)
    server = mariadb_dump.server_in_words(found["server_version"])
    words = [f"Connected: {server}; {found['tool_version'] or 'mariadb-dump'}."]
    if found["missing"]:
        words.append(f"User {source.user} lacks what a complete backup needs: " + "; ".join(found["missing"]) + ".")
    else:
        words.append(f"User {source.user} has every privilege a complete backup needs.")
    if found["outside_snapshot"]:
        words.append(
            "Not covered by the consistent snapshot (not InnoDB, so read as they are when the dump reaches "
            "them, possibly out of step with the other tables): " + ", ".join(found["outside_snapshot"]) + "."
        )
    return not found["missing"], " ".join(words)


def test_sqlite_file(path: str) -> tuple[bool, str]:
    if not path or not os.path.isfile(path):
        return False, f"SQLite database not found: {path or '(no path)'}"
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        return False, f"{path} is not a readable SQLite database ({exc})"
    return True, f"Opened {path}: SQLite {sqlite3.sqlite_version}, {tables} tables"


def test_destination(destination: Destination, secrets: Mapping[str, str | None] | None = None) -> tuple[bool, str]:
    """Writes, reads and deletes a probe object; returns (ok, message)."""
    try:
        storage = destination.storage(secrets)
        storage.probe()
    except EngineError as exc:
        return False, str(exc)
    message = f"Wrote, read and deleted a probe object in {storage.describe()}"
    if destination.host_key_note:  # an SFTP server's host key, pinned now or only seen (a Test before saving)
        message += f". {destination.host_key_note}"
    return True, message

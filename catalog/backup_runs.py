"""Backup runs: queueing a plan's backup, the worker's side that claims it,
streams it into every destination and records what became durable, and the
sweep of runs whose worker died. The job's life (claim, heartbeat, finish,
sweep) is catalog/jobs.py; configuration is catalog/services.py."""

import base64
import logging
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import close_old_connections, transaction
from django.utils import timezone

from catalog import audit, backup_globals, exports, holds, jobs, keyring, queues, registry
from catalog.alerts import hooks as monitor
from catalog.engine import dumpers, manifest
from catalog.engine.compression import extension_for
from catalog.engine.crypto import Encryptor, derive_manifest_key
from catalog.engine.errors import Cancelled, EngineError, StorageError
from catalog.engine.files import make_private_dirs
from catalog.engine.imports import ImportedDump
from catalog.engine.mariadb_dump import MariaDBDump
from catalog.engine.pgdirectory import DirectoryDump
from catalog.engine.pipeline import run_pipeline
from catalog.engine.storage.base import QuotaWriter, Writer
from catalog.errors import Refused
from catalog.models import (
    BASE_BACKUP_FORMAT,
    DIRECTORY_FORMAT,
    EXPORT_FORMATS,
    FORMATS_BY_ENGINE,
    Backup,
    BackupPlan,
    Copy,
    Destination,
    host_conflict,
)
from catalog.text import size_text

log = logging.getLogger(__name__)


def check_runnable(plan: BackupPlan) -> None:
    if not plan.destinations.exists():
        raise Refused(f"Plan {plan} has no destination to write to.")
    if plan.format not in FORMATS_BY_ENGINE[plan.source.engine]:
        raise Refused(
            f"Plan {plan} makes a {plan.get_format_display()}, which a {plan.source.get_engine_display()} "
            "source cannot produce: edit the plan and choose another format."
        )
    if plan.is_export() and not plan.has_export_selection():
        raise Refused(f"Plan {plan} exports no table: pick tables or add a named set to it first.")
    if problem := registry.steps_of(plan.format).run_problem(plan.source):  # e.g. a base backup without WAL protection
        raise Refused(problem)
    # An import into the plan is not its run: the two do not wait for each other.
    if plan.backups.active().exclude(trigger=Backup.IMPORT).exists():
        raise Refused(f"A backup of plan {plan} is already queued or running.")
    if problem := host_conflict(plan.destinations.all()):  # e.g. a plan made again by the catalog rebuild
        raise Refused(f"Plan {plan} cannot run: {problem}")


@transaction.atomic
def create_backup(
    actor: audit.Actor,
    plan: BackupPlan,
    label: str = "",
    trigger: str = "manual",
    keep_days: int | None = None,
    on_behalf_of: User | None = None,
) -> Backup:
    """`keep_days`: how long retention keeps this manual backup; None leaves
    it to the plan's manual rule (keep_manual_days). `on_behalf_of`: the
    person an API token belongs to, shown as who triggered it, while the
    audit trail names the token (`actor`)."""
    # Two triggers at once (a double click, the API and a cron slot) would both
    # find the plan idle: locking its row makes the second wait for the first
    # to commit, and then see its backup as active.
    # FOR NO KEY UPDATE: rows that point at the plan must still pass their key checks.
    type(plan).objects.select_for_update(no_key=True).get(pk=plan.pk)
    check_runnable(plan)
    now = timezone.now()
    backup = Backup.objects.create(
        source=plan.source,
        plan=plan,
        label=label.strip(),
        trigger=trigger,
        triggered_by=on_behalf_of or audit.user_of(actor),
        format=plan.format,
        compression=plan.compression,
        compression_level=plan.effective_compression_level(),
        encrypted=plan.encrypt,
        created_at=now,
        keep_until=now + timedelta(days=keep_days) if keep_days else None,
    )
    details = {"plan": plan.name, "label": backup.label, "trigger": trigger}
    if backup.keep_until:
        details["keep_until"] = backup.keep_until.isoformat()
    audit.record(actor, "backup.queue", backup, details)
    return backup


def start_backup(
    actor: audit.Actor,
    plan: BackupPlan,
    label: str = "",
    trigger: str = "manual",
    keep_days: int | None = None,
    on_behalf_of: User | None = None,
) -> Backup:
    """Queues a backup of `plan` for a worker and returns it."""
    backup = create_backup(actor, plan, label, trigger, keep_days, on_behalf_of)
    host = plan.required_host()
    # Only once the row is committed can a worker claim it.
    transaction.on_commit(lambda: enqueue_backup(backup, host))
    return backup


def enqueue_backup(backup: Backup, host: str) -> None:
    """To `host`'s own queue when the plan writes a folder on its disk
    (BackupPlan.required_host), else to any host's workers."""
    queues.enqueue_for(host, "catalog.tasks.run_backup", backup.pk, task_name=f"backup-{backup.pk}")


def run_scheduled_plan(plan_id: int) -> Backup | None:
    """A plan's cron slot: runs its backup here, in the scheduler's task,
    which any host's work cluster runs; a plan that writes a folder on
    another host's disk has its backup queued for that host instead."""
    plan = BackupPlan.objects.select_related("source").filter(pk=plan_id, enabled=True).first()
    if plan is None:
        return None
    try:
        backup = create_backup("scheduler", plan, trigger="schedule")
    except Refused as exc:
        log.warning("Skipped scheduled run of plan %s: %s", plan, exc)
        audit.record("scheduler", "backup.skip", plan, {"reason": str(exc)})
        return None
    host = plan.required_host()
    if host not in ("", settings.HOST_NAME):
        enqueue_backup(backup, host)
        return backup
    return run_backup(backup.pk)


@transaction.atomic
def cancel_backup(actor: audit.Actor, backup: Backup) -> Backup:
    """A queued backup is cancelled at once; a running one within a second."""
    return jobs.cancel_job(actor, backup, "backup.cancel", error="Cancelled before it started.")


def object_key_for(backup: Backup) -> str:
    assert backup.started_at is not None  # set by the claim
    stamp = backup.started_at.strftime("%Y%m%dT%H%M%SZ")
    # An export is a tar archive whatever the format of its members.
    ext = extension_for("tar" if backup.is_export() else backup.format, backup.compression, backup.encrypted)
    slug = backup.source.slug
    return f"{slug}/{backup.started_at:%Y/%m/%d}/{slug}-{stamp}-{backup.pk}.{ext}"


def open_dump(backup: Backup) -> dumpers.Dump:
    source, fmt = backup.source, backup.format
    if backup.is_imported():
        # The file checked when it was imported (catalog/imports.py), waiting in this backup's spool.
        return ImportedDump(
            str(spool_dir(backup)), fmt, backup.table_counts, backup.server_version, backup.tool_version
        )
    if fmt in EXPORT_FORMATS:
        # Resolved now, against the live schema: a table a named set matches
        # since the last run is exported too.
        from catalog.engine.exports import ExportDump

        assert backup.plan is not None  # an export is a plan's format
        return ExportDump(
            exports.export_conninfo(source), exports.resolve_specs(backup.plan), fmt, tmp_dir=exports.spool_dir()
        )
    if source.engine == "sqlite":
        return dumpers.SqliteDump(source.sqlite_path)
    if source.engine == "mariadb":
        assert backup.plan is not None  # a queued backup is always a plan's
        return MariaDBDump(source.conninfo(), tables=mariadb_tables(backup.plan))
    if fmt == BASE_BACKUP_FORMAT:
        from catalog.engine.basebackup import BaseBackupDump

        return BaseBackupDump(source.conninfo(), pg_basebackup=settings.PG_BASEBACKUP)
    if fmt == DIRECTORY_FORMAT:
        assert backup.plan is not None  # a queued backup is always a plan's
        make_private_dirs(spool_dir(backup).parent)
        return DirectoryDump(
            source.conninfo(),
            spool_dir(backup),
            backup.plan.dump_jobs,
            pg_dump=settings.PG_DUMP,
            pg_dumpall=settings.PG_DUMPALL,
            pg_restore=settings.PG_RESTORE,
        )
    # The pipeline compresses a custom-format dump itself (zstd or gzip, with
    # threads), so pg_dump does not: its own single-threaded zlib cost most of
    # a backup's CPU, and zstd over deflated bytes gained almost nothing, which
    # left the stored object larger than the guide's .sql.gz (bench/RESULTS.md).
    pg_compress = 0 if fmt == "custom" and backup.compression != "none" else None
    return dumpers.PostgresDump(
        source.conninfo(), fmt=fmt, pg_dump=settings.PG_DUMP, compress=pg_compress, pg_dumpall=settings.PG_DUMPALL
    )


def mariadb_tables(plan: BackupPlan) -> list[str]:
    """The tables a MariaDB plan dumps, by name, resolved now against the live
    schema (a named set matches a table created since); none: the whole
    database. A picked table that is gone fails the run in words."""
    if not plan.has_export_selection():
        return []
    return [spec.name for spec in exports.resolve_specs(plan)]


def spool_dir(backup: Backup) -> Path:
    """Where a directory-format dump's files wait until each is streamed to
    storage, and an imported dump until its run: a directory per backup,
    which the sweep removes if its worker died."""
    return settings.DATA_DIR / "tmp" / f"backup-{backup.pk}"


class ProgressReporter(jobs.JobWatch):
    """A backup's watch, which also writes its phase and byte counts."""

    def __init__(self, backup_id: int, imported: bool = False) -> None:
        super().__init__(Backup, backup_id)
        self.phase, self.raw_bytes, self.stored_bytes = "starting", 0, 0
        # An import reads a file, not a database.
        self.words = {"dumping": "importing"} if imported else {}

    def update(self, phase: str, raw_bytes: int, stored_bytes: int) -> None:
        self.phase, self.raw_bytes, self.stored_bytes = self.words.get(phase, phase), raw_bytes, stored_bytes

    def progress(self) -> dict[str, Any]:
        return {"phase": self.phase, "raw_bytes": self.raw_bytes, "stored_bytes": self.stored_bytes}


def run_backup(backup_id: int) -> Backup | None:
    """The worker side of a backup: claim, stream, record. Idempotent."""
    close_old_connections()
    backup = jobs.claim(
        Backup,
        backup_id,
        "backup.start",
        lambda backup: {"worker": backup.worker},
        related=("source", "plan"),
        phase="starting",
    )
    if backup is None:
        log.info("Backup %s is not queued any more; skipping this delivery.", backup_id)
        forget_cancelled_import(backup_id)
        return None
    backup.object_key = object_key_for(backup)
    assert backup.plan is not None  # a queued backup is always a plan's (create_backup)
    destinations = list(backup.plan.destinations.all())
    backup.append_log(f"Started on {backup.worker}; writing to {', '.join(str(d) for d in destinations)}")
    if backup.is_imported():
        backup.append_log(f"{backup.imported_text()}: {backup.imported_format}")
    copies = [
        Copy.objects.create(backup=backup, destination=destination, key=backup.object_key)
        for destination in destinations
    ]
    Backup.objects.filter(pk=backup.pk).update(object_key=backup.object_key, log=backup.log)
    try:
        encryption = stream_backup(backup, copies)
    except Cancelled:
        return finish_backup(backup, copies, Backup.CANCELLED, "Cancelled by request.")
    except EngineError as exc:
        return finish_backup(backup, copies, Backup.FAILED, str(exc))
    except keyring.KeyUnavailable as exc:
        return finish_backup(backup, copies, Backup.FAILED, missing_key_in_words(exc))
    except Exception as exc:  # never leave a backup "running" behind
        log.exception("Backup %s failed unexpectedly", backup_id)
        return finish_backup(
            backup, copies, Backup.FAILED, f"Unexpected error ({type(exc).__name__}); see the worker log."
        )
    # Fixed before the manifests are written, so that they and the catalog hold the same instant.
    backup.finished_at = timezone.now()
    try:
        write_manifests(backup, copies, encryption)
    except keyring.KeyUnavailable as exc:  # its file went away while the backup ran
        return finish_backup(backup, copies, Backup.FAILED, missing_key_in_words(exc))
    durable = [copy for copy in copies if copy.status == Copy.DURABLE]
    if durable and backup.is_base_backup():
        registry.steps_of(backup.format).copies_durable(backup, backup.wal)
    if len(durable) == len(copies):
        return finish_backup(backup, copies, Backup.SUCCEEDED, "")
    failed = "; ".join(f"{copy.destination}: {copy.error}" for copy in copies if copy.status != Copy.DURABLE)
    status = Backup.PARTIAL if durable else Backup.FAILED
    return finish_backup(backup, copies, status, failed)


def missing_key_in_words(exc: keyring.KeyUnavailable) -> str:
    """A backup's failure for want of a master key: which key, where it was
    looked for, and what to do (restore and verify say the same)."""
    if isinstance(exc, keyring.KeyFileMissing):
        return (
            f"{exc}. Put the saved key file {exc.path.name} back into that directory and run the backup again; "
            "nothing was stored."
        )
    return f"{exc}. Nothing was stored."


def stream_backup(backup: Backup, copies: list[Copy]) -> dict[str, Any] | None:
    """Runs the pipeline into every destination and marks each copy's fate.
    Returns the encryption details for the manifest (None if unencrypted)."""
    encryptor, encryption = None, None
    # Every manifest is signed with the active master key, encrypted backup or
    # not: a missing key file stops the backup here, before anything is read.
    key_id, master = keyring.active_key()
    if backup.encrypted:
        encryptor = Encryptor(master, key_id)
        backup.key_id = key_id
        encryption = {
            "algorithm": "AES-256-GCM-SEG",
            "key_id": key_id,
            "wrapped_data_key": base64.b64encode(encryptor.data_key_wrapped).decode(),
            "segment_size": encryptor.segment_size,
        }
    writers: dict[str, Writer] = {}
    for copy in copies:
        copy.locked_until = copy.destination.lock_until(timezone.now())
        try:
            writer = copy.destination.storage().open_writer(copy.key, retain_until=copy.locked_until)
            # Keyed by the destination's (unique) name: the pipeline's errors name it.
            writers[copy.destination.name] = within_quota(backup, copy.destination, writer)
        except EngineError as exc:
            mark_copy_failed(copy, str(exc))
    if not writers:
        raise StorageError("No destination could take this backup: " + "; ".join(c.error for c in copies))
    # Each kind of dump has attributes of its own (tables, wal, globals), read below by format.
    dump: Any = open_dump(backup)
    # Closed as soon as the pipeline is over, however it ends: a PostgreSQL
    # dump's snapshot transaction holds back vacuum on the source while open.
    with dump, ProgressReporter(backup.pk, backup.is_imported()) as progress:
        result = run_pipeline(
            dump,
            compression=backup.compression,
            level=backup.compression_level,
            encryptor=encryptor,
            writers=writers,
            on_progress=progress.update,
            cancel_event=progress.cancel_event,
        )
    backup.raw_bytes, backup.stored_bytes, backup.sha256 = result.raw_bytes, result.stored_bytes, result.sha256
    backup.server_version, backup.tool_version = dump.server_version, dump.tool_version
    backup.table_counts = dump.table_counts
    backup.partitions = dump.partitions
    backup.database_defaults = getattr(dump, "database_defaults", {})
    for warning in getattr(dump, "warnings", ()):  # a MariaDB dump's privileges and non-InnoDB tables
        backup.append_log(f"Warning: {warning}")
    if backup.is_export():
        backup.export_manifest = dump.export_manifest
        tables = ", ".join(f"{t.qualified} (where {t.where})" if t.where else t.qualified for t in dump.tables)
        backup.append_log(f"Exported as {backup.get_format_display()}: {tables}")
    if backup.is_base_backup():
        backup.wal = dump.wal
        contents = "physical base backup of the whole cluster"
    elif backup.is_imported():
        contents = imported_contents(backup)
    else:
        contents = f"{len(backup.table_counts)} tables, {sum(backup.table_counts.values())} rows in the snapshot"
        if isinstance(dump, DirectoryDump):
            contents += f"; pg_dump's directory format, {dump.jobs} jobs"
    origin = f"{backup.source.get_engine_display()} {backup.server_version}"
    if backup.is_imported():
        origin = f"the imported file (dumped from {backup.server_version or 'a server it does not name'})"
    backup.append_log(
        f"Read {size_text(result.raw_bytes)} from {origin} ({contents}); "
        f"stored {size_text(result.stored_bytes)}, SHA-256 {result.sha256[:16]}…"
    )
    for copy in copies:
        name = copy.destination.name
        if name in result.errors:
            mark_copy_failed(copy, result.errors[name])
        elif name in result.sizes:
            copy.size, copy.sha256 = result.sizes[name], result.sha256
    if getattr(dump, "globals", None):
        store_globals(backup, copies, dump.globals, encryptor)
    return encryption


def imported_contents(backup: Backup) -> str:
    if not backup.table_counts:
        return "no row counts recorded at import"
    return f"{len(backup.table_counts)} tables, {sum(backup.table_counts.values())} rows counted at import"


def store_globals(backup: Backup, copies: list[Copy], document: dict[str, Any], encryptor: Encryptor | None) -> None:
    """Beside each copy: the roles and database properties a restore needs
    (catalog/backup_globals.py). A copy without them is not complete."""
    data = backup_globals.record(backup, document, encryptor)
    for copy in copies:
        if copy.status == Copy.FAILED:
            continue
        try:
            backup_globals.store(copy, data)
        except EngineError as exc:
            remove_objects(copy)
            mark_copy_failed(copy, f"The roles and database properties could not be written: {exc}")
    roles = ", ".join(backup.roles) or "none"
    backup.append_log(
        f"Kept the database's properties and the roles it names ({roles})"
        + (f"; {document['globals_sql_error']}" if document.get("globals_sql_error") else "")
    )


def expected_size(backup: Backup) -> int:
    """A guess at this backup's stored size: the plan's last good one."""
    previous = (
        Backup.objects.filter(plan=backup.plan_id, status=Backup.SUCCEEDED)
        .exclude(pk=backup.pk)
        .order_by("-created_at")
        .values_list("stored_bytes", flat=True)
        .first()
    )
    return previous or 0


def within_quota(backup: Backup, destination: Destination, writer: Writer) -> Writer:
    """Refuses up front a copy that would go over the destination's quota, and
    limits the rest, so no backup fills a destination past its quota."""
    quota = destination.quota_bytes()
    if quota is None:
        return writer
    used, expected = destination.used_bytes(), expected_size(backup)
    allowance = quota - used
    if expected > allowance:
        writer.abort()
        raise StorageError(
            f"{destination} would go over its quota: {size_text(used)} of {size_text(quota)} used, "
            f"and this backup needs about {size_text(expected)}. Prune old backups or raise the quota."
        )
    message = f"{destination} reached its quota of {size_text(quota)}; the copy was stopped and removed."
    return QuotaWriter(writer, allowance, message)


def mark_copy_failed(copy: Copy, error: str) -> None:
    copy.backup.append_log(f"{copy.destination}: failed — {error}")
    copy.status, copy.error = Copy.FAILED, error[:500]
    copy.save(update_fields=["status", "error"])


def backup_manifest(backup: Backup, copy: Copy, encryption: dict[str, Any] | None) -> manifest.Manifest:
    """The signed JSON sidecar: from it alone the catalog can be rebuilt."""
    assert backup.started_at is not None  # set by the claim
    key_id, master = keyring.active_key()
    # Read now, not when the run started: a pin made while it ran belongs in the manifest.
    hold = holds.hold_fields(
        Backup.objects.only("pinned", "legal_hold", "hold_reason", "hold_changed_at").get(pk=backup.pk)
    )
    fields = manifest.build_manifest(
        backup_id=backup.pk,
        source=backup.source.identity(),
        plan=backup.plan.name if backup.plan else None,
        # The plan's settings, so that a rebuilt catalog can make it again.
        plan_definition=backup.plan.definition() if backup.plan else None,
        label=backup.label,
        trigger=backup.trigger,
        keep_until=backup.keep_until.isoformat() if backup.keep_until else None,
        server_version=backup.server_version,
        tool_version=backup.tool_version,
        format=backup.format,
        compression=backup.compression,
        compression_level=backup.compression_level,
        encryption=encryption,
        raw_bytes=backup.raw_bytes,
        stored_bytes=backup.stored_bytes,
        sha256=backup.sha256,
        table_counts=backup.table_counts,
        partitions=backup.partitions,
        **({"database_defaults": backup.database_defaults} if backup.database_defaults else {}),
        roles=backup.roles,
        globals_sha256=backup.globals_sha256 or None,
        created_at=backup.created_at.isoformat(),
        started_at=backup.started_at.isoformat(),
        finished_at=(backup.finished_at or timezone.now()).isoformat(),
        **hold,
        object_key=copy.key,
        locked_until=copy.locked_until.isoformat() if copy.locked_until else None,
    )
    if backup.is_imported():
        # So that a rebuilt catalog still knows it as imported, by whom and from where.
        fields["imported"] = {
            "by": backup.imported_by.get_username() if backup.imported_by else None,
            "from": backup.imported_from,
            "format": backup.imported_format,
        }
    if backup.is_export():
        # Each table's columns and types, rows and member SHA-256: what
        # load_export needs to recreate the tables, and no secret.
        fields["export"] = getattr(backup, "export_manifest", None)
    if backup.is_base_backup():
        # What a restore without Strongroom needs to know: the WAL to replay.
        wal = getattr(backup, "wal", {})
        fields["wal"] = {
            name: wal.get(name)
            for name in ("timeline", "start_lsn", "end_lsn", "start_segment", "end_segment", "segment_size")
        }
    fields["manifest_key_id"] = key_id
    return manifest.sign_manifest(fields, derive_manifest_key(master))


def write_manifests(backup: Backup, copies: list[Copy], encryption: dict[str, Any] | None) -> None:
    """A copy is durable only once its object and its manifest are both stored."""
    for copy in copies:
        if copy.status == Copy.FAILED:
            continue
        storage = copy.destination.storage()
        copy.manifest_key = manifest.manifest_key_for(copy.key)
        try:
            storage.put_bytes(
                copy.manifest_key,
                manifest.dumps(backup_manifest(backup, copy, encryption)),
                retain_until=copy.locked_until,
            )
        except EngineError as exc:
            remove_objects(copy)
            mark_copy_failed(copy, f"Manifest could not be written: {exc}")
            continue
        copy.status, copy.durable_at = Copy.DURABLE, timezone.now()
        copy.save(update_fields=["status", "durable_at", "size", "sha256", "manifest_key", "locked_until"])
        backup.append_log(f"{copy.destination}: durable, {size_text(copy.size)} with its manifest")


def remove_objects(copy: Copy) -> None:
    """Removes whatever a copy left in its destination, complete or partial."""
    try:
        storage = copy.destination.storage()
        storage.cleanup_partials(copy.key)
        for key in manifest.stored_keys(copy.key):
            storage.delete(key)
    except EngineError as exc:
        log.warning("Could not remove leftovers of %s: %s", copy, exc)


def finish_backup(backup: Backup, copies: list[Copy], status: str, error: str) -> Backup:
    """Records the outcome, unless the sweep already declared this run dead."""
    if backup.is_imported():  # its file is stored now, or will never be
        shutil.rmtree(spool_dir(backup), ignore_errors=True)
    if status in (Backup.FAILED, Backup.CANCELLED):
        for copy in copies:
            remove_objects(copy)
            if copy.status != Copy.FAILED:
                mark_copy_failed(copy, "Removed: the backup did not complete.")
    now = timezone.now()
    backup.append_log(f"Finished: {status}" + (f" — {error}" if error else ""))
    recorded = jobs.finish(
        backup,
        status,
        f"backup.{status}",
        {"error": error[:500]} if error else {},
        phase="",
        error=error[:500],
        finished_at=backup.finished_at or now,  # the manifests' time, when they were written
        heartbeat_at=now,
        log=backup.log,
        key_id=backup.key_id,
        raw_bytes=backup.raw_bytes,
        stored_bytes=backup.stored_bytes,
        sha256=backup.sha256,
        server_version=backup.server_version,
        tool_version=backup.tool_version,
        table_counts=backup.table_counts,
        partitions=backup.partitions,
        database_defaults=backup.database_defaults,
        roles=backup.roles,
        globals_sha256=backup.globals_sha256,
    )
    if not recorded:
        log.warning("Backup %s was closed by someone else while it ran; its copies are removed.", backup.pk)
        for copy in copies:
            remove_objects(copy)
    backup.refresh_from_db()
    monitor.backup_finished(backup)
    return backup


def forget_cancelled_import(backup_id: int) -> None:
    """The file of an import cancelled before a worker took it: its task,
    queued on this host where the file is, still arrives here."""
    backup = Backup.objects.filter(pk=backup_id, trigger=Backup.IMPORT).first()
    if backup is not None and not backup.is_active():
        shutil.rmtree(spool_dir(backup), ignore_errors=True)


def sweep_stale_backups() -> list[int]:
    """Marks running backups whose worker stopped beating as failed, and
    removes what they left in storage."""
    error = (
        f"The worker stopped responding (no heartbeat for over {settings.HEARTBEAT_TIMEOUT} s); "
        "partial data was removed."
    )
    return jobs.sweep(
        jobs.stale(Backup).select_related("source"),
        "backup.failed",
        {"error": error},
        actor="monitor",
        on_failed=remove_dead_run,
        error=error,
        phase="",
    )


def remove_dead_run(backup: Backup) -> None:
    """What a dead worker's backup left in storage goes once it is failed (not
    before: a worker that was only slow could still have recorded it), and
    the files of its dump still waiting on its host's disk. The sweep runs on
    any host: what is on another host's disk is removed by that host's own
    queue (when it is back, if it is the one that died)."""
    copies = list(backup.copies.select_related("destination"))
    for copy in copies:
        mark_copy_failed(copy, "Removed: the worker died before the copy was complete.")
    remove_leftovers(backup, copies)
    worker_host = backup.worker.rpartition(":")[0]  # jobs.worker_name: host:pid
    away = {copy.destination.host for copy in copies if not copy.destination.reachable_here()}
    if worker_host and worker_host != settings.HOST_NAME:
        away.add(worker_host)
    for host in sorted(away):
        queues.enqueue_on_host(host, "catalog.tasks.clean_up_dead_backup", backup.pk, task_name=f"clean-up-{backup.pk}")
    monitor.backup_finished(backup)


def remove_leftovers(backup: Backup, copies: list[Copy] | None = None) -> None:
    """The dead run's spool and copies, as far as this host reaches them."""
    shutil.rmtree(spool_dir(backup), ignore_errors=True)
    for copy in copies if copies is not None else backup.copies.select_related("destination"):
        if copy.destination.reachable_here():
            remove_objects(copy)

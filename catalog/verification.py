"""Verifications answer a DBA's question with evidence: can I restore from
this backup, and how long will it take?

A checksum verification reads every copy back from its destination, checks
its manifest's signature, its SHA-256 and size against the catalog, and
decrypts and decompresses it to the end. A restore test restores one copy
into a scratch database (or file, for SQLite), compares exact row counts with
those taken in the backup's snapshot and the schema with the dump's table of
contents, and records how long the restore took. Two verifications never run
at the same time on the same source.
"""

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import Max, Q
from django.utils import timezone
from psycopg.conninfo import conninfo_to_dict

from catalog import audit, backup_globals, exports, jobs, keyring, queues, scratch, scratch_mariadb
from catalog.alerts import hooks as monitor
from catalog.engine import crypto, dumpers, manifest, restorers
from catalog.engine.errors import Cancelled, EngineError
from catalog.engine.files import make_private_dirs
from catalog.engine.storage.base import Storage
from catalog.engine.verify import check_object
from catalog.errors import Refused
from catalog.models import Backup, BackupPlan, Copy, Source, Verification

log = logging.getLogger(__name__)

CHECKSUM, RESTORE = Verification.CHECKSUM, Verification.RESTORE


# --- queueing ---------------------------------------------------------------


def check_verifiable(backup: Backup) -> None:
    if backup.is_active():
        raise Refused("This backup is still running; verify it once it has finished.")
    if backup.is_pruned() or not backup.copies.filter(status=Copy.DURABLE).exists():
        raise Refused("This backup has no stored copy left to verify.")


def create_verification(
    actor: audit.Actor,
    backup: Backup,
    kind: str,
    trigger: str = "manual",
    enqueue_it: bool = True,
) -> Verification:
    """Queues a verification; with enqueue_it=False the caller runs it itself."""
    check_verifiable(backup)
    if kind == RESTORE and backup.is_base_backup():
        raise Refused(BASE_BACKUP_RESTORE_TEST)
    with transaction.atomic():
        if backup.verifications.filter(kind=kind, status__in=Verification.ACTIVE_STATUSES).exists():
            label = dict(Verification.KIND_CHOICES)[kind].lower()
            raise Refused(f"A {label} of this backup is already queued or running.")
        verification = Verification.objects.create(
            backup=backup,
            source_id=backup.source_id,
            kind=kind,
            trigger=trigger,
            triggered_by=audit.user_of(actor),
        )
        audit.record(actor, "verification.queue", verification, {"kind": kind, "backup": backup.pk, "trigger": trigger})
        if enqueue_it:
            transaction.on_commit(lambda: enqueue(verification.pk))
    return verification


def run_here(verification: Verification, wait_seconds: float = 3600) -> Verification:
    """Runs a verification in this process (the `verify` command), waiting
    while another verification of the same source finishes."""
    deadline = time.monotonic() + wait_seconds
    while True:
        finished = run_verification(verification.pk)
        if finished is not None:
            return finished
        verification.refresh_from_db()
        if not verification.is_active() or time.monotonic() > deadline:
            return verification
        time.sleep(2)


def enqueue(verification_id: int) -> None:
    """A checksum reads every copy: to the host whose disk holds a copy, if
    any does. A test restore reads one: anywhere, while a copy is where every
    host reaches it (Backup.host_to_read)."""
    verification = Verification.objects.select_related("backup").get(pk=verification_id)
    host = verification.backup.host_to_read(every_copy=verification.kind == CHECKSUM)
    queues.enqueue_for(host, "catalog.tasks.run_verification", verification_id, task_name=f"verify-{verification_id}")


def cancel_verification(actor: audit.Actor, verification: Verification) -> Verification:
    return jobs.cancel_job(actor, verification, "verification.cancel", summary="Cancelled before it started.")


# --- running ----------------------------------------------------------------


def claim_verification(verification_id: int) -> str:
    """Marks it running unless it is gone or its source is busy verifying.

    Returns "claimed", "busy" (stays queued; the tick hands it out again) or "gone"."""
    with transaction.atomic():
        verification = Verification.objects.select_related("source").filter(pk=verification_id).first()
        if verification is None or verification.status != Verification.QUEUED:
            return "gone"
        # Lock the source row so two workers cannot both see it idle. FOR NO KEY
        # UPDATE, as refresh_source does: the claim writes its audit event under
        # this lock, and a transaction that inserts a row pointing at the source
        # (a backup, a verification) checks that key at commit while holding the
        # audit chain's lock; FOR UPDATE would block that check and deadlock.
        type(verification.source).objects.select_for_update(no_key=True).get(pk=verification.source_id)
        busy = Verification.objects.filter(source_id=verification.source_id, status=Verification.RUNNING)
        if busy.exclude(pk=verification_id).exists():
            # A queued verification has no heartbeat; here it marks "found the source busy at".
            Verification.objects.filter(pk=verification_id).update(heartbeat_at=timezone.now())
            return "busy"
        claimed = jobs.claim(Verification, verification_id, "verification.start", lambda job: {"kind": job.kind})
        return "claimed" if claimed else "gone"


def run_verification(verification_id: int) -> Verification | None:
    """The worker side. Returns the finished verification, or None if not claimed."""
    close_old_connections()
    if claim_verification(verification_id) != "claimed":
        return None
    verification = Verification.objects.select_related("backup", "backup__source").get(pk=verification_id)
    verification.append_log(f"Started on {verification.worker}")
    with jobs.JobWatch(Verification, verification.pk) as watch:
        try:
            run = run_checksum if verification.kind == CHECKSUM else run_restore_test
            status = Verification.PASSED if run(verification, watch.cancel_event) else Verification.FAILED
        except Cancelled:
            status, verification.summary = Verification.CANCELLED, "Cancelled by request; nothing was left behind."
        except (EngineError, keyring.KeyUnavailable) as exc:
            status, verification.summary = Verification.FAILED, str(exc)
        except Exception as exc:  # never leave a verification "running"
            log.exception("Verification %s failed unexpectedly", verification_id)
            status = Verification.FAILED
            verification.summary = f"Unexpected error ({type(exc).__name__}); see the worker log."
    return finish_verification(verification, status)


def finish_verification(verification: Verification, status: str) -> Verification:
    now = timezone.now()
    verification.append_log(f"Finished: {status} — {verification.summary}")
    with transaction.atomic():
        recorded = jobs.finish(
            verification,
            status,
            f"verification.{status}",
            {"summary": verification.summary[:500]},
            summary=verification.summary[:500],
            evidence=verification.evidence,
            log=verification.log,
            copy=verification.copy,
            restore_seconds=verification.restore_seconds,
            finished_at=now,
            heartbeat_at=now,
        )
        if recorded and status == Verification.PASSED and verification.kind == CHECKSUM:
            checked = [c["copy"] for c in verification.evidence.get("copies", []) if c.get("ok")]
            Copy.objects.filter(pk__in=checked).update(verified_at=now)
    verification.refresh_from_db()
    monitor.verification_finished(verification)
    return verification


# --- checksum ---------------------------------------------------------------


def run_checksum(verification: Verification, cancel_event: threading.Event) -> bool:
    backup = verification.backup
    copies = backup.readable_copies()
    if not copies:
        raise EngineError("This backup has no stored copy left to verify.")
    if backup.encrypted:
        keyring.master_key(backup.key_id)  # a missing key is said plainly, not as damage to every copy
    results = [check_copy(backup, copy, cancel_event) for copy in copies]
    locate_by_comparison(backup, copies, results, cancel_event)
    for copy, result in zip(copies, results, strict=True):  # one result per copy
        state = "intact" if result["ok"] else f"DAMAGED — {result['error']}"
        verification.append_log(f"{copy.destination}: read {result['stored_bytes']} bytes, {state}")
    verification.evidence = {"copies": results}
    bad = [r for r in results if not r["ok"]]
    if not bad:
        verification.summary = (
            f"All {len(results)} cop{'y' if len(results) == 1 else 'ies'} read back intact: SHA-256 and size match "
            "the catalog, the manifest signature verifies"
            + (", every encrypted segment authenticates." if backup.encrypted else ", the stream decodes to its end.")
        )
        return True
    verification.summary = "; ".join(describe_damage(r) for r in bad)
    return False


def describe_damage(result: Mapping[str, Any]) -> str:
    if result.get("offset") is not None:
        where = f" at byte {result['offset']}"
    elif result.get("segment_start") is not None:
        where = (
            f" within the segment starting at byte {result['segment_start']} "
            f"(segment length {result['segment_length']})"
        )
    else:
        where = ""
    return f"Copy on {result['destination']} ({result['location']}) is damaged{where}: {result['error']}"


def holds_the_stored_bytes(backup: Backup, result: Mapping[str, Any]) -> bool:
    return result.get("sha256") == backup.sha256 and result.get("stored_bytes") == backup.stored_bytes


def locate_by_comparison(
    backup: Backup, copies: Sequence[Copy], results: Sequence[dict[str, Any]], cancel_event: threading.Event
) -> None:
    """The catalog's SHA-256 says that a copy's bytes differ, not where: a
    copy of the right size whose bytes differ is compared with one holding
    exactly the stored bytes, which gives the first bad byte itself. `results`
    has one entry per copy, in their order (run_checksum)."""
    reference = next(
        (copy for copy, result in zip(copies, results, strict=True) if holds_the_stored_bytes(backup, result)), None
    )
    if reference is None:
        return
    for copy, result in zip(copies, results, strict=True):
        if result["offset"] is not None or holds_the_stored_bytes(backup, result):
            continue
        if result["stored_bytes"] != backup.stored_bytes or not result.get("sha256"):
            continue  # not read to the end, or of another size (said already, with its offset)
        try:
            offset = scratch.first_bad_byte(copy, reference, cancel_event)
        except Cancelled:
            raise
        except EngineError as exc:
            log.warning("Could not compare %s with %s: %s", copy, reference, exc)
            continue
        if offset is None:
            continue  # it reads back the same now: the earlier read was what went wrong, said as it is
        result.update(
            offset=offset,
            compared_with=reference.destination.name,
            error=f"{scratch.differs_from(reference, offset)}; {result['error']}",
        )


def check_copy(backup: Backup, copy: Copy, cancel_event: threading.Event) -> dict[str, Any]:
    """Reads one copy and its manifest back; returns the evidence as a dict."""
    evidence: dict[str, Any] = {
        "copy": copy.pk,
        "destination": copy.destination.name,
        "location": copy.location_display(),
    }
    storage = copy.destination.storage()
    problems = manifest_problems(storage, copy, backup)
    try:
        found = check_object(
            scratch.cancellable(storage.open_reader(copy.key), cancel_event),
            keyring.lookup,
            backup.sha256,
            backup.stored_bytes,
            backup.raw_bytes,
            key_wraps=backup.key_wraps,
        )
    except EngineError as exc:  # the object cannot be read at all
        evidence.update(
            ok=False, error=str(exc), offset=None, segment_start=None, stored_bytes=0, manifest_ok=not problems
        )
        return evidence
    evidence.update(found.as_dict())
    evidence["manifest_ok"] = not problems
    if problems and found.ok:
        evidence.update(ok=False, error="; ".join(problems))
    elif problems:
        evidence["error"] = "; ".join([found.error] + problems)
    return evidence


def manifest_problems(storage: Storage, copy: Copy, backup: Backup) -> list[str]:
    try:
        data = manifest.loads(storage.get_bytes(copy.manifest_key or manifest.manifest_key_for(copy.key)))
    except (EngineError, ValueError) as exc:
        return [f"the manifest cannot be read ({exc})"]
    key_id = data.get("manifest_key_id", "")
    try:
        master = keyring.master_key(key_id)
    except keyring.KeyUnavailable as exc:
        return [f"the manifest cannot be checked: {exc}"]
    problems = []
    if not manifest.verify_manifest(data, crypto.derive_manifest_key(master)):
        problems.append("the manifest's signature does not verify")
    if data.get("sha256") != backup.sha256 or data.get("stored_bytes") != backup.stored_bytes:
        problems.append("the manifest's checksum or size differs from the catalog")
    return problems


# --- restore test -------------------------------------------------------------


# pg_restore cannot read a data directory: recovering one needs its WAL.
BASE_BACKUP_RESTORE_TEST = (
    "A physical base backup is test-restored by the “Verify PITR” drill, which recovers it "
    "with its WAL into a scratch directory; its checksum can be verified here."
)


def run_restore_test(verification: Verification, cancel_event: threading.Event) -> bool:
    backup = verification.backup
    if backup.is_base_backup():
        raise EngineError(BASE_BACKUP_RESTORE_TEST)
    if not backup.readable_copies():
        raise EngineError("This backup has no stored copy left to restore from.")
    if backup.encrypted:
        keyring.master_key(backup.key_id)  # a missing key fails here, before any scratch database exists
    restore = {"sqlite": restore_sqlite_copy, "mariadb": scratch_mariadb.restore_test_copy}.get(
        backup.source.engine, restore_postgres_copy
    )
    try:
        copy, evidence = restore(verification, backup, cancel_event)
    except scratch.NoCopyRestored as exc:
        verification.evidence = {**verification.evidence, "skipped_copies": exc.skipped}
        verification.summary = str(exc)
        return False
    verification.copy = copy
    verification.evidence = evidence
    return judge_restore(verification, copy, evidence["skipped_copies"])


def scratch_server(source: Source) -> dict[str, Any]:
    if settings.VERIFY_SERVER_URL:
        return conninfo_to_dict(settings.VERIFY_SERVER_URL)
    return dumpers.normalize_conninfo(source.conninfo())


def restore_postgres_copy(
    verification: Verification, backup: Backup, cancel_event: threading.Event
) -> tuple[Copy, dict[str, Any]]:
    """The first intact copy into a scratch database, through the same path
    as a restore (catalog.scratch), streamed; then counted and dropped."""
    server = scratch_server(backup.source)
    name = restorers.scratch_name(backup.pk)
    verification.evidence = {"scratch_database": name, "server": f"{server.get('host', '')}:{server.get('port', 5432)}"}
    Verification.objects.filter(pk=verification.pk).update(evidence=verification.evidence)  # for the sweep
    owners = owners_kept(verification, backup, server)
    verification.evidence["owners_and_grants"] = owners
    try:
        done = scratch.restore_into_scratch(
            backup,
            server,
            name,
            keep_owners=owners,
            spool_dir=str(spool_dir(verification)),  # used by a directory-format dump only: one job streams the rest
            cancel_event=cancel_event,
            log=verification.append_log,
        )
        try:
            rows, objects = restorers.restored_counts(
                {**server, "dbname": name}, pg_dump=settings.PG_DUMP, pg_restore=settings.PG_RESTORE
            )
        finally:
            restorers.ScratchDatabase(server, name).drop()
    finally:
        dropped = scratch_is_gone(server, name)
        verification.evidence["scratch_dropped"] = dropped
    verification.append_log(f"Restored into {name} in {done.seconds:.1f} s; scratch database dropped: {dropped}")
    verification.restore_seconds = done.seconds
    # An export's tables are recreated from the recorded column types, so it
    # has no table of contents to compare: the row counts are the evidence.
    return done.copy, {
        **verification.evidence,
        "restore_seconds": round(done.seconds, 3),
        "rows": rows,
        "schema_objects": objects,
        "table_of_contents": done.table_of_contents,
        "skipped_copies": done.skipped,
    }


def owners_kept(verification: Verification, backup: Backup, server: Mapping[str, Any]) -> bool:
    """A test restore keeps owners and grants, as a real restore does, when
    the scratch server has every role the backup names; otherwise it
    restores without them and says so (the data and schema are still
    proven), rather than fail on another server's roles."""
    if not backup.roles:
        return False
    missing = backup_globals.roles_missing(backup, server)
    if missing:
        verification.append_log(
            f"Restoring without owners and grants: the scratch server lacks the role(s) {', '.join(missing[:20])}"
        )
        return False
    return True


def scratch_is_gone(server: Mapping[str, Any], name: str) -> bool:
    try:
        return not restorers.database_exists(server, name)
    except EngineError:
        return False


def restore_sqlite_copy(
    verification: Verification, backup: Backup, cancel_event: threading.Event
) -> tuple[Copy, dict[str, Any]]:
    """The first intact copy into a scratch file, then checked and removed."""
    directory = make_private_dirs(os.path.join(settings.DATA_DIR, "tmp"))

    def restore_one(copy: Copy, plain: Iterator[bytes]) -> str:
        fd, path = tempfile.mkstemp(dir=directory, prefix="strongroom_verify_", suffix=".sqlite3")
        os.close(fd)
        try:
            if backup.is_export():
                exports.load_into_sqlite(plain, path)
            else:
                restorers.restore_sqlite(plain, path, cancel_event)
        except BaseException:
            os.unlink(path)
            raise
        return path

    done = scratch.first_intact_copy(backup, restore_one, cancel_event, verification.append_log, discard=os.unlink)
    try:
        integrity, rows = restorers.sqlite_report(done.value, qualified=backup.is_export())
    finally:
        os.unlink(done.value)
    verification.restore_seconds = done.seconds
    verification.append_log(f"Restored to a scratch file in {done.seconds:.1f} s; integrity_check: {integrity}")
    return done.copy, {
        "restore_seconds": round(done.seconds, 3),
        "rows": rows,
        "integrity_check": integrity,
        "scratch_dropped": True,
        "skipped_copies": done.skipped,
    }


def judge_restore(verification: Verification, copy: Copy, attempts: Sequence[Mapping[str, Any]]) -> bool:
    """Compares what came back with what the backup recorded; sets the summary."""
    evidence, backup = verification.evidence, verification.backup
    problems, uncounted = row_problems(backup, evidence["rows"])
    evidence["rows_match"] = not problems
    toc = evidence.get("table_of_contents")
    if toc is not None:
        for kind, count in sorted(toc.items()):
            restored = evidence["schema_objects"].get(kind)
            if restored != count:
                problems.append(f"{count} {kind} in the dump's table of contents, {restored} restored")
    if "integrity_check" in evidence and evidence["integrity_check"] != "ok":
        problems.append(f"integrity_check says: {evidence['integrity_check']}")
    seconds = evidence["restore_seconds"]
    prefix = ""
    if attempts:
        prefix = (
            "; ".join(
                f"Copy on {a['destination']} {'is damaged' if a.get('damaged', True) else 'cannot be read'} "
                f"({a['error']})"
                for a in attempts
            )
            + f"; restored from {copy.destination} instead. "
        )
    if problems:
        verification.summary = prefix + "Restored, but it differs: " + "; ".join(problems[:10])
        return False
    total = sum(evidence["rows"].values())
    what = f"{len(evidence['rows'])} tables, {total} rows match the backup's snapshot exactly"
    if backup.is_imported() and not backup.table_counts:
        what = f"{len(evidence['rows'])} tables, {total} rows restored; no row counts recorded at import to compare"
    elif uncounted:
        what += f" ({len(uncounted)} restored tables not in the imported dump's data: {', '.join(uncounted[:5])})"
    if toc is not None:
        what += ", schema objects match the table of contents"
    if "integrity_check" in evidence:
        what += ", integrity_check ok"
    verification.summary = prefix + f"Restored from {copy.destination} in {seconds:.1f} s: {what}."
    return True


def row_problems(backup: Backup, restored: Mapping[str, int]) -> tuple[list[str], list[str]]:
    """Each table whose restored rows differ from those recorded, in words;
    and, of an imported dump, the restored tables it recorded nothing for
    (an extension's, say, made by its CREATE EXTENSION), which are not
    differences: a dump made elsewhere was counted from its own data, not
    from the database's catalog. One imported with no counts at all (rows
    as INSERT statements) compares nothing."""
    expected = backup.table_counts or {}
    if backup.is_imported() and not expected:
        return [], []
    uncounted = sorted(set(restored) - set(expected)) if backup.is_imported() else []
    problems = []
    for table in sorted((set(expected) | set(restored)) - set(uncounted)):
        want, got = expected.get(table), restored.get(table)
        if want != got:
            problems.append(
                f"{table}: {got if got is not None else 'missing'} rows, "
                f"{want if want is not None else 'none'} recorded"
            )
    return problems, uncounted


# --- policy -----------------------------------------------------------------


def queue_due_verifications(now: datetime | None = None) -> list[int]:
    """Called by the tick: weekly restore tests and monthly checksums, per plan."""
    now = now or timezone.now()
    queued: list[int] = []
    for plan in BackupPlan.objects.filter(enabled=True):
        backups = plan.stored_backups().filter(status=Backup.SUCCEEDED)
        latest = backups.order_by("-created_at").first()
        if plan.restore_test_days and latest:
            restore_tests = Verification.objects.filter(backup__plan=plan, kind=RESTORE).exclude(
                status=Verification.CANCELLED
            )
            last = restore_tests.order_by("-created_at").first()
            if last is None or last.created_at < now - timedelta(days=plan.restore_test_days):
                queued += queue_quietly(latest, RESTORE)
        if plan.checksum_all_days:
            counted = Q(verifications__kind=CHECKSUM) & ~Q(verifications__status=Verification.CANCELLED)
            due = backups.annotate(last_checksum=Max("verifications__created_at", filter=counted)).filter(
                Q(last_checksum__isnull=True) | Q(last_checksum__lt=now - timedelta(days=plan.checksum_all_days))
            )
            for backup in due:
                queued += queue_quietly(backup, CHECKSUM)
    return queued


def queue_quietly(backup: Backup, kind: str) -> list[int]:
    try:
        return [create_verification("policy", backup, kind, trigger="policy").pk]
    except Refused:
        return []


def redispatch_waiting(now: datetime | None = None) -> list[int]:
    """Hands out again, once, the verifications that found their source busy
    a minute ago or more; ones still waiting in the queue are left alone, so
    the queue never fills with copies of the same task."""
    now = now or timezone.now()
    waiting = Verification.objects.filter(status=Verification.QUEUED, heartbeat_at__lt=now - timedelta(minutes=1))
    ids = list(waiting.values_list("pk", flat=True))
    Verification.objects.filter(pk__in=ids).update(heartbeat_at=None)
    for verification_id in ids:
        enqueue(verification_id)
    return ids


def sweep_stale_verifications(now: datetime | None = None) -> list[int]:
    """Fails verifications whose worker died, and drops their scratch database."""
    now = now or timezone.now()
    return jobs.sweep(
        jobs.stale(Verification, now),
        "verification.failed",
        {"summary": "worker stopped responding"},
        clean_up=drop_scratch_database,
        on_failed=monitor.verification_finished,
        summary="The worker stopped responding; the verification was abandoned.",
        finished_at=now,
    )


def spool_dir(verification: Verification) -> Path:
    """Where a test restore unpacks a directory-format dump for pg_restore: a
    directory of its own, so that the sweep can remove what a dead worker left."""
    return settings.RESTORE_TMP_DIR / f"verify-{verification.pk}"


def drop_scratch_database(verification: Verification) -> None:
    """The scratch database a dead worker's test restore was filling, if any,
    and the dump it was restoring from."""
    shutil.rmtree(spool_dir(verification), ignore_errors=True)
    if verification.source.engine == "mariadb":
        return scratch_mariadb.drop_dead_scratch(verification)
    name = (verification.evidence or {}).get("scratch_database", "")
    if name.startswith(restorers.SCRATCH_PREFIX):
        try:
            restorers.ScratchDatabase(scratch_server(verification.source), name).drop()
        except EngineError as exc:
            log.warning("Could not drop scratch database %s: %s", name, exc)

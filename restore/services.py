"""Restores, safe by default: the backup always lands in a scratch database
first; a new database is made by renaming that scratch database; an existing
one is changed only after a safety backup, inside one transaction (tables)
or by swapping names (the whole database), so it is never half-restored."""

import logging
import re
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
from django.conf import settings
from django.contrib.auth.models import User
from django.db import close_old_connections, transaction
from django.utils import timezone
from psycopg import sql

from catalog import audit, backup_globals, backup_runs, jobs, keyring, lifecycle, queues, scratch
from catalog.alerts import hooks as monitor
from catalog.engine import dumpers, mariadb_restore, pgglobals, restorers
from catalog.engine.errors import Cancelled, EngineError
from catalog.engine.files import make_private_dirs
from catalog.errors import Refused
from catalog.models import Backup, Copy, RestoreServer, Source
from catalog.text import count_text
from restore import mariadb as mariadb_restore_app
from restore import sqlite as sqlite_restore
from restore import tables as target_tables
from restore import target as on_target
from restore.models import RestoreJob

log = logging.getLogger(__name__)

DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}\Z")  # \Z: "$" lets a final line break through


class NotConfirmed(Refused):
    """A change to an existing database whose name was not repeated: each
    caller says where to repeat it (the review's field, --confirm, the API's
    confirm_database)."""


# --- asking -------------------------------------------------------------------


def suggest_database_name(backup: Backup, restore_server: RestoreServer | None = None) -> str:
    """A name for the new database that does not exist yet on the server it
    goes to (the source's own, or `restore_server`)."""
    if backup.source.engine == "sqlite":
        return sqlite_restore.suggest_name(backup)
    base = f"{backup.source.dbname or backup.source.slug}_restored_{backup.created_at:%Y%m%d}"[:55]
    name, counter = base, 2
    exists = mariadb_restore.database_exists if backup.source.engine == "mariadb" else restorers.database_exists
    try:
        server = target_server(backup.source, restore_server)
        while exists(server, name):
            name, counter = f"{base}_{counter}", counter + 1
    except EngineError:
        return base  # the server cannot be reached now; the request checks the name again, and says why
    return name


def target_server(source: Source, restore_server: RestoreServer | None = None) -> dumpers.ConnParams:
    """Connection parameters of the server a restore goes to: a registered
    restore server (its maintenance database), or with None the source's own.
    A MariaDB server is reached in no database: the source's may be gone."""
    if source.engine == "mariadb":
        params = restore_server.connection_params() if restore_server is not None else source.conninfo()
        return mariadb_restore.server_params(params)
    if restore_server is not None:
        return restore_server.connection_params()
    return dumpers.normalize_conninfo(source.conninfo())


def check_server_takes(backup: Backup, restore_server: RestoreServer) -> None:
    """Refuses, in words, a registered server older than the one the backup
    was taken from. Asks the server itself: the recorded version may be from
    before an upgrade (or a downgrade), and the request connects anyway."""
    if restore_server.engine != "postgresql":
        raise Refused(
            f"{restore_server} is a {restore_server.get_engine_display()} server; a PostgreSQL backup goes to a "
            "PostgreSQL server."
        )
    version = on_target.server_version(restore_server.connection_params())
    refusal = restore_server.refusal_for(backup.server_version, version)
    if refusal:
        raise Refused(f"{restore_server} cannot take this backup: {refusal}")


def existing_database(source: Source) -> str:
    """The name the wizard and the confirmation use for the source's own database."""
    return sqlite_restore.existing_name(source) if source.engine == "sqlite" else source.dbname


def check_request(
    backup: Backup,
    target: str,
    database: str,
    tables: Iterable[str],
    mode: str,
    confirmed_name: str,
    restore_server: RestoreServer | None = None,
) -> None:
    if backup.status not in Backup.WITH_DATA or backup.is_pruned():
        raise Refused("This backup has no stored copy to restore from.")
    if backup.is_base_backup():
        raise Refused(
            "This is a physical base backup: restore it to a point in time with the point-in-time "
            "restore, which replays its WAL."
        )
    if not backup.copies.filter(status=Copy.DURABLE).exists():
        raise Refused("This backup has no stored copy to restore from.")
    unknown = sorted(set(tables) - set(backup.restorable_tables()))
    if unknown:
        raise Refused(f"The backup has no table {', '.join(unknown)}.")
    if backup.encrypted:
        try:
            keyring.master_key(backup.key_id)
        except keyring.KeyUnavailable as exc:
            raise Refused(str(exc)) from exc
    if backup.source.engine == "sqlite":
        if restore_server is not None:
            raise Refused("A SQLite backup is restored into a file beside its source, not onto a PostgreSQL server.")
        sqlite_restore.check_request(backup, target, database, mode)
        if target == RestoreJob.NEW:
            return
    if backup.source.engine == "mariadb":
        if target == RestoreJob.NEW and not DATABASE_NAME.match(database or ""):
            raise Refused("Name the new database with letters, digits and _ (up to 63 characters).")
        server = target_server(backup.source, restore_server)
        return mariadb_restore_app.check_request(backup, target, mode, server, database, restore_server)
    if backup.is_export() and target == RestoreJob.EXISTING and mode == RestoreJob.FULL:
        raise Refused(
            "An export holds only the tables (and rows) its plan chose: replacing a database or its "
            "tables with it would lose everything it left out. Preview or merge it, or load it into a "
            "new database."
        )
    if target == RestoreJob.NEW:
        if mode != RestoreJob.FULL:
            raise Refused("Preview and merge compare with an existing database; a new database is a full restore.")
        if not DATABASE_NAME.match(database or ""):
            raise Refused("Name the new database with letters, digits and _ (up to 63 characters).")
        if restore_server is not None:
            check_server_takes(backup, restore_server)
        if restorers.database_exists(target_server(backup.source, restore_server), database):
            where = f" on {restore_server}" if restore_server is not None else ""
            raise Refused(
                f"A database named {database} already exists{where}; a restore never overwrites one this way."
            )
    else:
        if restore_server is not None:
            raise Refused("The existing database is on the source's server; another server takes new databases only.")
        if database != existing_database(backup.source):
            raise Refused("An existing-database restore goes into the source's own database.")
        if backup.source.engine == "postgresql" and not existing_database_present(backup.source):
            raise Refused(gone_in_words(backup.source))
        if mode != RestoreJob.PREVIEW and confirmed_name != database:
            raise NotConfirmed(f"Type the database's name, {database}, to confirm that it will be changed.")


def existing_database_present(source: Source) -> bool:
    """Whether the source's own database is still on its server (a backup is
    often restored because it is not)."""
    return restorers.database_exists(target_server(source), source.dbname)


def gone_in_words(source: Source) -> str:
    return (
        f"The database {source.dbname} is not on the source's server any more: restore the backup into a new "
        f"database, which may take that name."
    )


def ways_into_existing(backup: Backup) -> str:
    """What the wizard offers for the source's own database, in words; "" for
    nothing (a SQLite export loads into a new file only; see check_request)."""
    if backup.source.engine == "sqlite":
        return "" if backup.is_export() else "replace chosen tables or the whole file"
    if backup.source.engine == "mariadb":
        return ""  # restore/mariadb.py says why
    return "preview or merge" if backup.is_export() else "preview, merge or replace"


def request_restore(
    actor: User | str,
    backup: Backup,
    *,
    target: str,
    database: str,
    tables: Iterable[str] = (),
    mode: str = RestoreJob.FULL,
    confirmed_name: str = "",
    restore_server: RestoreServer | None = None,
    terminate_connections: bool = False,
    without_owners: bool = False,
    create_missing_roles: bool = False,
    enqueue: bool = True,
    on_behalf_of: User | None = None,
) -> RestoreJob:
    """`on_behalf_of`: the person an API token belongs to, shown on the
    restore's page, while the audit trail names the token (`actor`)."""
    job, host = plan_restore(
        backup,
        target=target,
        database=database,
        tables=tables,
        mode=mode,
        confirmed_name=confirmed_name,
        restore_server=restore_server,
        terminate_connections=terminate_connections,
        without_owners=without_owners,
        create_missing_roles=create_missing_roles,
    )
    job.requested_by = on_behalf_of or (actor if not isinstance(actor, str) else None)
    with transaction.atomic():
        job.save(force_insert=True)
        audit.record(actor, "restore.queue", job, {"plan": job.describe()})
        if enqueue:
            transaction.on_commit(lambda: enqueue_restore(job.pk, host))
    return job


def plan_restore(
    backup: Backup,
    *,
    target: str,
    database: str,
    tables: Iterable[str] = (),
    mode: str = RestoreJob.FULL,
    confirmed_name: str = "",
    restore_server: RestoreServer | None = None,
    terminate_connections: bool = False,
    without_owners: bool = False,
    create_missing_roles: bool = False,
) -> tuple[RestoreJob, str]:
    """The restore as it would be requested (unsaved) and the host it would
    run on, once every check a request makes has passed; Refused otherwise.
    Saves nothing, so that the API can answer a plan without starting it."""
    tables = sorted(set(tables))
    job = RestoreJob(
        backup=backup,
        source=backup.source,
        target=target,
        restore_server=restore_server,
        target_database=database,
        tables=tables,
        mode=mode,
        confirmed_name=confirmed_name,
        terminate_connections=terminate_connections and target == RestoreJob.EXISTING,
        without_owners=without_owners,
        create_missing_roles=create_missing_roles and not without_owners,
    )
    try:
        check_request(backup, target, database, tables, mode, confirmed_name, restore_server)
        host = restore_host(job)
        if without_owners and job.ownership() and not job.owners_optional():
            raise Refused(
                "A plain SQL dump sets its owners and grants itself: it restores only with the backup's "
                "roles on the server (create the missing ones from the backup)."
            )
        if job.keeps_owners() and not job.create_missing_roles:
            refuse_missing_roles(backup, target_server(backup.source, restore_server))
    except EngineError as exc:
        raise Refused(str(exc)) from exc
    return job, host


def roles_missing_on_target(job: RestoreJob) -> list[str] | None:
    """The backup's roles the chosen server lacks, for the review (and the
    API's plan) to offer to create; None when the server cannot be asked now
    (the restore's own checks will say why)."""
    if not job.keeps_owners():
        return []
    try:
        return backup_globals.roles_missing(job.backup, target_server(job.source, job.restore_server))
    except EngineError:
        return None


def restore_host(job: RestoreJob) -> str:
    """Where the restore runs: anywhere while a copy is where every host
    reaches it, else on the host whose disk holds its copies; and on the
    host whose folders the safety backup writes, when it takes one."""
    backup = job.backup
    reads_on = backup.host_to_read()
    plan = backup.plan or backup.source.plans.first()
    safety_on = plan.required_host() if plan and job.changes_existing_database() else ""
    if reads_on and safety_on and reads_on != safety_on:
        raise Refused(
            f"This backup's copies are on {reads_on}'s disk only, and the safety backup taken first writes to "
            f"folders on {safety_on}'s disk: no one host can do both. Restore into a new database, or copy the "
            "backup where every host reaches it."
        )
    return reads_on or safety_on


def cancel_restore(actor: User | str, job: RestoreJob) -> RestoreJob:
    return jobs.cancel_job(actor, job, "restore.cancel", summary="Cancelled before it started; nothing was changed.")


def enqueue_restore(job_id: int, host: str = "") -> None:
    queues.enqueue_for(host, "restore.tasks.run_restore", job_id, task_name=f"restore-{job_id}")


# --- running ------------------------------------------------------------------


class Steps:
    """Records each step's timing and outcome on the job as it goes."""

    def __init__(self, job: RestoreJob) -> None:
        self.job = job

    def run(self, name: str, action: Callable[[], str]) -> str:
        # The step before may have taken hours: replace a connection the
        # metadata database dropped meanwhile (a restart, a failover).
        close_old_connections()
        # Between steps is where stopping is safe: the target is changed only inside "apply".
        if RestoreJob.objects.filter(pk=self.job.pk, cancel_requested=True).exists():
            raise Cancelled(f"Cancelled by request before “{name}”; the target was not changed by it.")
        entry: dict[str, object] = {"name": name, "started_at": timezone.now().isoformat(), "status": "running"}
        self.job.steps.append(entry)
        self._save()
        started = time.monotonic()
        try:
            detail = action()
        except BaseException as exc:
            entry.update(status="failed", seconds=round(time.monotonic() - started, 3), detail=str(exc)[:500])
            self._save()
            raise
        entry.update(status="done", seconds=round(time.monotonic() - started, 3), detail=detail or "")
        self.job.append_log(f"{name}: {detail or 'done'} ({entry['seconds']} s)")
        self._save()
        return detail

    def _save(self) -> None:
        RestoreJob.objects.filter(pk=self.job.pk).update(steps=self.job.steps, log=self.job.log)


def run_restore(job_id: int) -> RestoreJob | None:
    close_old_connections()
    job = jobs.claim(RestoreJob, job_id, "restore.start", related=("backup", "source", "backup__plan"))
    if job is None:
        return None
    started = time.monotonic()
    try:
        with jobs.JobWatch(RestoreJob, job.pk) as watch:  # the heartbeat, for the sweep
            job.cancel_event = watch.cancel_event
            carry_out(job, Steps(job))
        status, job.summary = RestoreJob.SUCCEEDED, outcome_in_words(job)
    except Cancelled as exc:
        status, job.summary = RestoreJob.CANCELLED, str(exc)
    except (EngineError, Refused) as exc:
        status, job.summary = RestoreJob.FAILED, str(exc)
    except psycopg.Error as exc:
        status, job.summary = RestoreJob.FAILED, describe_database_error(job, exc)
    except Exception as exc:
        log.exception("Restore %s failed unexpectedly", job_id)
        status, job.summary = RestoreJob.FAILED, f"Unexpected error ({type(exc).__name__}); see the worker log."
    job.report["total_seconds"] = round(time.monotonic() - started, 3)
    rto = job.source.rto_minutes
    if rto:
        job.report["within_rto"] = job.report["total_seconds"] <= rto * 60
    return finish_restore(job, status)


def describe_database_error(job: RestoreJob, exc: psycopg.Error) -> str:
    """The target server's error in one line of words, without its password
    (psycopg quotes the server over several lines)."""
    return dumpers.describe_pg_error(exc, target_server(job.source, job.restore_server))


def finish_restore(job: RestoreJob, status: str) -> RestoreJob:
    now = timezone.now()
    jobs.finish(
        job,
        status,
        f"restore.{status}",
        {"summary": job.summary[:500]},
        summary=job.summary[:500],
        report=job.report,
        steps=job.steps,
        log=job.log,
        safety_backup=job.safety_backup,
        finished_at=now,
        heartbeat_at=now,
    )
    job.refresh_from_db()
    monitor.restore_finished(job)
    return job


def carry_out(job: RestoreJob, steps: Steps) -> None:
    if job.source.engine == "sqlite":
        return sqlite_restore.carry_out(job, steps, take_safety_backup)
    if job.source.engine == "mariadb":
        return mariadb_restore_app.carry_out(job, steps, target_server(job.source, job.restore_server))
    backup, server = job.backup, target_server(job.source, job.restore_server)
    steps.run("checks", lambda: preflight(job, server))
    if job.changes_existing_database():
        steps.run("safety backup", lambda: take_safety_backup(job))
    scratch_name = restorers.scratch_name(backup.pk)
    job.report["scratch_database"] = scratch_name
    RestoreJob.objects.filter(pk=job.pk).update(report=job.report)  # for the sweep, should this worker die
    renamed = applying = applied = False
    # Undone last first: the scratch database (unless it became the target),
    # the spool, then the roles (which own objects in the scratch database).
    with ExitStack() as undo:
        undo.push(unless_succeeded(lambda: drop_created_roles(job, server)))
        undo.callback(shutil.rmtree, spool_dir(job), ignore_errors=True)

        def drop_scratch() -> None:
            if not renamed:  # read when the stack unwinds, as apply() may have renamed it into the target
                restorers.ScratchDatabase(server, scratch_name).drop()

        undo.callback(drop_scratch)
        try:
            if job.report.get("roles_to_create"):
                steps.run("roles", lambda: create_missing_roles(job, server))
            steps.run("fetch, verify and restore", lambda: restore_to_scratch(job, server, scratch_name))
            scratch = {**server, "dbname": scratch_name}
            applying = True
            renamed = steps.run("apply", lambda: apply(job, server, scratch)) == "renamed"
            applied = True
            if job.mode != RestoreJob.PREVIEW:
                steps.run("post-checks", lambda: post_checks(job, server))
        except BaseException as exc:
            if not applying or (not applied and refused_before_commit(exc)):
                release_safety_backup(job)
            raise


def unless_succeeded(
    undo_it: Callable[[], object],
) -> Callable[[type[BaseException] | None, BaseException | None, TracebackType | None], bool]:
    """An ExitStack exit callback that calls `undo_it()` when the block raised."""

    def exit_callback(
        exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> bool:
        if exc_type is not None:
            undo_it()
        return False  # the exception goes on

    return exit_callback


def spool_dir(job: RestoreJob) -> Path:
    """Where this job's pg_restore reads a temporary copy of the dump from: a
    directory of its own, so that the sweep can remove what a killed worker
    left in it."""
    return settings.RESTORE_TMP_DIR / f"restore-{job.pk}"


def preflight(job: RestoreJob, server: dumpers.ConnParams) -> str:
    version = on_target.check_server_not_older(server, job.backup.server_version)
    if job.backup.restore_spools(settings.RESTORE_JOBS):  # pg_restore -j reads a temporary copy of the dump
        make_private_dirs(settings.RESTORE_TMP_DIR)
        try:
            restorers.check_free_disk(settings.RESTORE_TMP_DIR, job.backup.raw_bytes)
        except restorers.RestoreError as exc:
            raise Refused(str(exc)) from exc
    if job.replaces_whole_database() and not job.terminate_connections:
        refuse_open_sessions(job, on_target.active_connections(server, job.target_database))
    missing = backup_globals.roles_missing(job.backup, server) if job.keeps_owners() else []
    if missing and not job.create_missing_roles:
        raise Refused(missing_roles_text(missing))
    record_report(job, roles_to_create=missing)
    roles = f"; roles to create: {', '.join(missing)}" if missing else ""
    return f"target server PostgreSQL {version}{roles}"


def refuse_open_sessions(job: RestoreJob, others: Sequence[str]) -> None:
    if others:
        raise Refused(
            f"{job.target_database} has {len(others)} active connection(s): {', '.join(others[:10])}; "
            "a whole-database replace needs them closed, or the choice to end them; nothing was changed"
        )


def take_safety_backup(job: RestoreJob) -> str:
    plan = job.backup.plan or job.source.plans.first()
    if plan is None:
        raise Refused("No plan of this source can take the safety backup; create one first")
    safety: Backup | None  # run_backup() gives None for a backup that is not queued any more
    safety = backup_runs.create_backup("restore", plan, label=f"before-restore-{job.pk}")
    safety = backup_runs.run_backup(safety.pk)
    if safety is None or safety.status != Backup.SUCCEEDED:
        raise Refused(f"The safety backup failed: {safety.error if safety else 'not run'}; nothing was changed")
    # Retention must not take away the way back.
    lifecycle.pin_backup("restore", safety, f"Safety backup taken before restore #{job.pk}")
    job.safety_backup = safety
    RestoreJob.objects.filter(pk=job.pk).update(safety_backup=safety)
    return f"backup #{safety.pk}, pinned"


def refused_before_commit(exc: BaseException) -> bool:
    """Whether an apply that raised `exc` certainly changed nothing: refused
    by our own checks, or by the server inside the transaction (a constraint,
    say). A lost connection (OperationalError) may have lost the answer to a
    commit that happened, so the safety backup stays pinned then."""
    if isinstance(exc, Refused):
        return True
    return isinstance(exc, psycopg.DatabaseError) and not isinstance(exc, psycopg.OperationalError)


def release_safety_backup(job: RestoreJob) -> None:
    """A restore that stopped before changing the target needs no way back:
    its safety backup is unpinned and left to the plan's retention."""
    if job.safety_backup is not None and job.safety_backup.pinned:
        lifecycle.unpin_backup("restore", job.safety_backup)
        job.append_log(f"Backup #{job.safety_backup.pk} unpinned: the target was not changed")


def restore_to_scratch(job: RestoreJob, server: dumpers.ConnParams, name: str) -> str:
    """Restores the first intact copy into the scratch database, falling back
    to another copy when one is damaged or unreadable. The way there is the
    test restore's too (catalog.scratch): a fix reaches both."""
    try:
        done = scratch.restore_into_scratch(
            job.backup,
            server,
            name,
            tables=job.tables,
            keep_owners=job.keeps_owners(),
            spool_dir=str(spool_dir(job)),
            jobs=settings.RESTORE_JOBS,
            log=job.append_log,
        )
    except restorers.RestoreError as exc:
        in_words = missing_roles_in_words(exc)
        if in_words is exc:
            raise  # not about a missing role: the error as it was
        raise in_words from exc
    except scratch.NoCopyRestored as exc:
        raise Refused("No copy could be read: " + scratch.skipped_in_words(exc.skipped)) from exc
    if done.loaded is not None:
        job.report["loaded"] = done.loaded  # an export loads only the tables asked for
    # Kept on the object, not in the report: settings may say more than a report should.
    job.recorded_database = done.database
    job.report.update(
        copy=done.copy.destination.name,
        warnings=done.warnings[:200],
        table_of_contents=done.table_of_contents,
        skipped_copies=[f"{skipped['destination']}: {skipped['error']}" for skipped in done.skipped],
    )
    problems = job.report["skipped_copies"]
    return f"from {done.copy.destination}" + (f" (skipped: {'; '.join(problems)})" if problems else "")


MISSING_ROLE = re.compile(r'role "(?P<role>[^"]+)" does not exist')


def missing_roles_in_words(exc: restorers.RestoreError) -> restorers.RestoreError | Refused:
    """pg_restore stops at the first object owned by, or granted to, a role
    the target server lacks: say what to do about it."""
    found = MISSING_ROLE.search(str(exc))
    if not found:
        return exc
    return Refused(
        f"The backup's objects belong or are granted to role {found['role']}, which the target server does not have; "
        "create the backup's roles there, or restore without owners and grants. Nothing was changed"
    )


def apply(job: RestoreJob, server: dumpers.ConnParams, scratch: dumpers.ConnParams) -> str:
    tables = job.backup.outermost_tables(job.tables or job.backup.restorable_tables())
    if job.target == RestoreJob.NEW:
        if job.tables:
            drop_other_tables(scratch, job.backup.leaf_tables(job.tables))
        properties = on_target.rename_database(
            server,
            scratch["dbname"],
            job.target_database,
            recorded_database_properties(job),
            with_owners=not job.without_owners,
        )
        job.report["database_properties"] = properties
        if properties:
            job.append_log(f"{job.target_database} has the backup's database properties: {', '.join(properties)}")
        return "renamed"
    target = {**server, "dbname": job.target_database}
    with psycopg.connect(**scratch) as ours, psycopg.connect(**target) as theirs:
        target_tables.prepare_session(ours)
        target_tables.prepare_session(theirs)
        if job.mode == RestoreJob.PREVIEW:
            job.report["tables"] = [target_tables.compare_table(ours, theirs, t) for t in tables]
            return "compared"
        if job.mode == RestoreJob.MERGE or job.tables:
            with theirs.transaction():  # made and filled together, or neither
                created = target_tables.create_missing_tables(
                    scratch, ours, theirs, tables, job.keeps_owners(), settings.PG_DUMP
                )
                job.report["created"] = created
                if job.mode == RestoreJob.MERGE:
                    job.report["inserted"] = target_tables.merge_tables(ours, theirs, tables)
                else:
                    job.report["written"] = target_tables.replace_tables(ours, theirs, tables)
            made = f"; made again: {', '.join(created)}" if created else ""
            if job.mode == RestoreJob.MERGE:
                return f"inserted {sum(job.report['inserted'].values())} rows{made}"
            return f"replaced {len(tables)} tables{made}"
    return swap_whole_database(job, server, scratch["dbname"])


# --- roles and the database's own properties --------------------------------------


def refuse_missing_roles(backup: Backup, server: dumpers.ConnParams) -> None:
    if missing := backup_globals.roles_missing(backup, server):
        raise Refused(missing_roles_text(missing))


def missing_roles_text(missing: Sequence[str]) -> str:
    return (
        f"The backup's objects belong or are granted to {count_text(len(missing), 'role')} the target server does "
        f"not have ({', '.join(missing[:20])}{', …' if len(missing) > 20 else ''}): create them from the backup's "
        "globals, or restore without owners and grants. Nothing was changed"
    )


def create_missing_roles(job: RestoreJob, server: dumpers.ConnParams) -> str:
    """Creates, in one transaction, the roles the server still lacks, from
    the backup's globals: attributes, memberships and settings, never a
    password, superuser, replication or bypassrls (the report says which were
    held back). A failed restore drops them again."""
    document = backup_globals.read(job.backup)
    with dumpers.connect_server(server) as conn, conn.transaction():
        names = pgglobals.missing_roles(conn, job.report["roles_to_create"])
        notes = pgglobals.create_roles(conn, document["roles"], names)
    record_report(job, roles_created=names, role_notes=notes)
    with transaction.atomic():
        audit.record("worker", "restore.roles_created", job, {"roles": names, "notes": notes})
    return f"created {', '.join(names)}" + (f" ({'; '.join(notes)})" if notes else "") if names else "none missing now"


def drop_created_roles(job: RestoreJob, server: dumpers.ConnParams) -> None:
    """Takes back the roles this restore created, when it did not complete;
    a role something depends on by now stays, and the report says so."""
    created = job.report.get("roles_created")
    if not created:
        return
    try:
        with dumpers.connect_server(server) as conn:
            kept = pgglobals.drop_roles(conn, created)
    except EngineError as exc:
        kept = [f"all ({exc})"]
    record_report(job, roles_created=[], roles_kept_after_failure=kept)
    job.append_log(
        "Roles created for this restore were dropped again" + (f", except {', '.join(kept)}" if kept else "")
    )


def recorded_database_properties(job: RestoreJob) -> pgglobals.Properties | None:
    """The backup's own database properties (owner, grants, settings,
    comment) for a new database, as the scratch restore read them; None when
    the backup predates them (said in the report) or no copy had them
    readable (said in the log)."""
    if not job.backup.globals_sha256:
        job.report.setdefault("warnings", []).append(
            "This backup predates kept database properties: the new database belongs to the restoring role, with "
            "default grants and no settings"
        )
    return job.recorded_database


def swap_whole_database(job: RestoreJob, server: dumpers.ConnParams, scratch_name: str) -> str:
    """Closes the database to new sessions, ends (or refuses) the open ones,
    and swaps the names in one transaction. Closing it is recorded in the
    report first, so the sweep reopens it should this worker die."""
    current, kept = job.target_database, job.kept_database_name()
    if restorers.database_exists(server, kept):
        raise Refused(f"A database named {kept} already exists; nothing was changed")
    record_report(job, connections_closed=True)
    on_target.allow_connections(server, current, False)
    swapped = False
    try:
        if job.terminate_connections:
            ended = on_target.active_connections(server, current)
            refuse_open_sessions(job, on_target.terminate_connections(server, current))
            job.report["sessions_ended"] = ended
        else:
            refuse_open_sessions(job, on_target.active_connections(server, current))
        on_target.swap_databases(server, current, scratch_name, kept)
        swapped = True
    finally:
        on_target.allow_connections(server, kept if swapped else current, True)
        job.report.pop("connections_closed", None)
        if swapped:
            job.report["previous_database_kept_as"] = kept
        record_report(job)
    return "renamed"


def record_report(job: RestoreJob, **values: Any) -> None:
    job.report.update(values)
    RestoreJob.objects.filter(pk=job.pk).update(report=job.report)


def drop_other_tables(scratch: dumpers.ConnParams, keep: Iterable[str]) -> None:
    with psycopg.connect(**scratch, autocommit=True) as conn:
        for table in sorted(set(job_tables(conn)) - set(keep)):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(target_tables.ident(table)))


def job_tables(conn: psycopg.Connection[Any]) -> list[str]:
    return [f"{schema}.{table}" for schema, table in conn.execute(dumpers.COUNT_TABLES).fetchall()]


def post_checks(job: RestoreJob, server: dumpers.ConnParams) -> str:
    expected = job.backup.restorable_tables()
    tables = job.backup.outermost_tables(job.tables or expected)
    if job.mode == RestoreJob.MERGE:
        return "merge keeps the target's rows; no count to compare"
    with psycopg.connect(**{**server, "dbname": job.target_database}) as conn:
        counts = {t: target_tables.count_as_recorded(conn, t) for t in tables}
    job.report["row_counts"] = {t: {"backup": expected.get(t), "restored": counts[t]} for t in tables}
    wrong = [t for t in tables if counts[t] != expected.get(t)]
    if wrong:
        raise Refused("Row counts differ from the backup for " + ", ".join(wrong))
    return f"{count_text(len(tables), 'table')}, {sum(counts.values())} rows as in the backup"


def outcome_in_words(job: RestoreJob) -> str:
    if job.mode == RestoreJob.PREVIEW:
        changed = [
            t
            for t in job.report.get("tables", [])
            if t.get("only_in_backup") or t.get("only_in_target") or t.get("differ")
        ]
        differ = "differs" if len(changed) == 1 else "differ"
        return (
            f"Compared {len(job.report.get('tables', []))} tables; {len(changed)} {differ} from the backup. "
            "Nothing was changed."
        )
    created = job.report.get("created") or []
    made = (
        f" {', '.join(created)} {'was' if len(created) == 1 else 'were'} missing and made again"
        " (owned by the role that restored; grants on it must be given again)."
        if created
        else ""
    )
    if job.mode == RestoreJob.MERGE:
        return (
            f"Inserted {sum(job.report.get('inserted', {}).values())} missing rows; "
            f"existing rows were left as they were.{made}"
        )
    if job.target == RestoreJob.NEW:
        kind = "file" if job.source.engine == "sqlite" else "database"
        notes = mariadb_restore_app.notes_in_words(job) if job.source.engine == "mariadb" else ""
        return f"Restored into the new {kind} {job.target_database}." + (f" {notes}" if notes else "")
    if job.tables:
        return f"Replaced {len(job.tables)} tables of {job.target_database} with the backup's contents.{made}"
    kept = job.report.get("previous_database_kept_as")
    return f"Replaced {job.target_database} with the backup; the previous database is kept as {kept}."


def reopen_database(job: RestoreJob) -> None:
    """A worker that died during a whole-database replace may have left the
    target closed to new sessions: open it again. The rename itself is one
    transaction, so the names are as before or as after."""
    if not job.report.get("connections_closed"):
        return
    server = target_server(job.source, job.restore_server)
    for name in (job.target_database, job.kept_database_name()):
        try:
            if restorers.database_exists(server, name):
                on_target.allow_connections(server, name, True)
        except EngineError as exc:
            log.warning("Could not reopen database %s: %s", name, exc)


def sweep_stale_restores(now: datetime | None = None) -> list[int]:
    """Fails restores whose worker stopped beating and drops their scratch
    database. A target is changed only inside one transaction or by renames,
    so the database itself is either before or after; the steps say which."""
    now = now or timezone.now()
    return jobs.sweep(
        jobs.stale(RestoreJob, now).select_related("source"),
        "restore.failed",
        {"summary": "worker stopped responding"},
        clean_up=clean_up_dead_run,
        on_failed=monitor.restore_finished,
        finished_at=now,
        summary="The worker stopped responding; see the last step to know how far it got.",
    )


def clean_up_dead_run(job: RestoreJob) -> None:
    """What a dead worker's restore left on the target server and on disk."""
    if job.source.engine == "mariadb":
        return mariadb_restore_app.clean_up_dead_run(job, target_server(job.source, job.restore_server))
    name = job.report.get("scratch_database", "")
    if job.source.engine == "postgresql" and name.startswith(restorers.SCRATCH_PREFIX):
        try:
            restorers.ScratchDatabase(target_server(job.source, job.restore_server), name).drop()
        except EngineError as exc:
            log.warning("Could not drop scratch database %s: %s", name, exc)
    shutil.rmtree(spool_dir(job), ignore_errors=True)  # the dump a killed pg_restore was reading
    reopen_database(job)
    if job.source.engine == "postgresql":
        drop_created_roles(job, target_server(job.source, job.restore_server))  # in use by now, they stay

"""Restores of MariaDB/MySQL backups: into a new database on the source's
server (or a registered MariaDB server), the whole backup or chosen tables.

MariaDB cannot rename a database, so the restore goes straight into the new
database (catalog/scratch_mariadb.py), which is recorded in the report as
soon as it exists: a restore that fails, is cancelled or whose worker dies
drops it again, and nothing of it is left. For the same reason the existing
database is never replaced from here: there is no swap that keeps the old
one whole until the new one is complete, as PostgreSQL's rename does.

A chosen-table restore brings those tables with their rows, indexes and
triggers; views, routines and events are left out (they may name tables not
chosen), and foreign keys to tables not chosen are dropped (they would
refuse every new row). Rows load with FOREIGN_KEY_CHECKS=0, as the dump
sets, in the dump's order: they were consistent in the backup's snapshot.

DEFINERs: views, triggers, routines and events keep the users that defined
them, which needs SUPER or SET USER for a definer other than the restoring
user; or, when asked (RestoreJob.without_owners), they are all defined by the
restoring user. Definers the target server lacks are named in the report:
the objects exist, but a view or routine running as its definer fails when
used, and a trigger when it fires, until that user is created.
"""

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from catalog import scratch, scratch_mariadb
from catalog.engine import mariadb_restore
from catalog.engine.errors import Cancelled, EngineError
from catalog.errors import Refused
from catalog.models import Backup, RestoreServer
from catalog.text import count_text
from restore.models import RestoreJob

if TYPE_CHECKING:  # restore.services imports this module
    from restore.services import Steps

log = logging.getLogger(__name__)

EXISTING_REFUSED = (
    "A MariaDB/MySQL backup is restored into a new database only: MariaDB cannot rename a database, so there is "
    "no way to swap a restored copy in for the existing one that leaves it whole should the restore fail. Restore "
    "into a new database (once the old one is dropped, it may take its name) and point the application at it."
)


# --- asking ---------------------------------------------------------------------------


def check_request(
    backup: Backup,
    target: str,
    mode: str,
    server: Mapping[str, Any],
    database: str,
    restore_server: RestoreServer | None,
) -> None:
    if target != RestoreJob.NEW:
        raise Refused(EXISTING_REFUSED)
    if mode != RestoreJob.FULL:
        raise Refused("Preview and merge compare with an existing database; a new database is a full restore.")
    if restore_server is not None:
        check_server_takes(backup, restore_server, server)
    if mariadb_restore.database_exists(server, database):
        where = f" on {restore_server}" if restore_server is not None else ""
        raise Refused(f"A database named {database} already exists{where}; a restore never overwrites one this way.")


def check_server_takes(backup: Backup, restore_server: RestoreServer, server: Mapping[str, Any]) -> None:
    """Refuses, in words, a registered server of another engine, or one older
    than (or of another kind than) the one the backup was taken from. Asks
    the server itself: the recorded version may be from before an upgrade."""
    if restore_server.engine != "mariadb":
        raise Refused(
            f"{restore_server} is a {restore_server.get_engine_display()} server; a MariaDB/MySQL backup goes to a "
            "MariaDB or MySQL server."
        )
    refusal = restore_server.refusal_for(backup.server_version, mariadb_restore.server_version(server))
    if refusal:
        raise Refused(f"{restore_server} cannot take this backup: {refusal}")


def dump_tables(backup: Backup, tables: list[str]) -> list[str]:
    """The dump's names of `tables` as the backup records them (table_counts)."""
    return tables


# --- running --------------------------------------------------------------------------


def carry_out(job: RestoreJob, steps: "Steps", server: Mapping[str, Any]) -> None:
    from restore.services import record_report

    steps.run("checks", lambda: preflight(job, server))
    try:
        steps.run("fetch, verify and restore", lambda: restore(job, server))
        steps.run("post-checks", lambda: post_checks(job, server))
    except BaseException as exc:
        if job.report.get("created_database"):
            gone = drop_created_database(job, server)
            record_report(job, created_database="" if gone else job.target_database)
        if isinstance(exc, Cancelled):
            raise Cancelled(f"Cancelled by request; the new database {job.target_database} was dropped.") from exc
        raise


def preflight(job: RestoreJob, server: Mapping[str, Any]) -> str:
    version = mariadb_restore.server_version(server)
    if mariadb_restore.database_exists(server, job.target_database):
        raise Refused(f"A database named {job.target_database} already exists now; nothing was changed")
    notes = []
    if not job.without_owners and not mariadb_restore.can_set_definers(server):
        notes.append(
            f"{server.get('user')} may not create objects defined by other users (SUPER or SET USER): should "
            "the backup hold some, the restore stops there and drops the new database"
        )
    job.report["warnings"] = notes
    named = mariadb_restore.release(version) or "MariaDB/MySQL"
    return f"target server {named} ({version})" + "".join(f"; {note}" for note in notes)


def restore(job: RestoreJob, server: Mapping[str, Any]) -> str:
    from restore.services import record_report

    try:
        done = scratch_mariadb.restore_into_database(
            job.backup,
            server,
            job.target_database,
            tables=dump_tables(job.backup, job.tables) if job.tables else None,
            definers_to_current_user=job.without_owners,
            cancel_event=job.cancel_event,
            created=lambda: record_report(job, created_database=job.target_database),
            log=job.append_log,
        )
    except scratch.NoCopyRestored as exc:
        raise Refused("No copy could be read: " + scratch.skipped_in_words(exc.skipped)) from exc
    job.report.update(
        database_created_with=done.contents.created_with,
        copy=done.copy.destination.name,
        table_of_contents=done.contents.object_counts(),
        skipped_copies=[f"{skipped['destination']}: {skipped['error']}" for skipped in done.skipped],
    )
    if job.tables:
        job.report["foreign_keys_dropped"] = mariadb_restore.drop_dangling_foreign_keys(server, job.target_database)
    record_report(job)
    problems = job.report["skipped_copies"]
    skipped = f" (skipped: {'; '.join(problems)})" if problems else ""
    return f"from {done.copy.destination}{skipped}; {job.target_database} is {done.contents.created_with}"


def post_checks(job: RestoreJob, server: Mapping[str, Any]) -> str:
    """Every table's COUNT(*) against the backup's, exactly, and the views,
    triggers, routines and events against the dump's; then what the target
    server lacks for them (definers), in the report."""
    expected = job.backup.restorable_tables()
    tables = job.tables or sorted(expected)
    counts = mariadb_restore.row_counts(server, job.target_database, dump_tables(job.backup, tables))
    restored = dict(zip(tables, [counts.get(t) for t in dump_tables(job.backup, tables)], strict=True))
    job.report["row_counts"] = {t: {"backup": expected.get(t), "restored": restored[t]} for t in tables}
    objects = mariadb_restore.object_counts(server, job.target_database)
    job.report["schema_objects"] = objects
    wrong = [t for t in tables if restored[t] != expected.get(t)]
    if wrong:
        raise Refused("Row counts differ from the backup for " + ", ".join(wrong))
    dumped = job.report.get("table_of_contents") or {}
    missing = [
        f"{dumped[kind]} {kind} in the dump, {objects.get(kind)} restored"
        for kind in dumped
        if dumped[kind] != objects.get(kind)
    ]
    if missing:
        raise Refused("The restored database differs from the dump: " + "; ".join(missing))
    definers = mariadb_restore.missing_definers(server, job.target_database)
    job.report["definers_missing"] = definers
    done = f"{count_text(len(tables), 'table')}, {sum(restored.values())} rows as in the backup"
    return done + (f"; {definers_in_words(definers)}" if definers else "")


def definers_in_words(definers: Mapping[str, list[str]] | None) -> str:
    if not definers:
        return ""
    named = "; ".join(f"{definer}: {', '.join(objects[:5])}" for definer, objects in sorted(definers.items()))
    return (
        f"the target server has no user {', '.join(sorted(definers))}, which define{'s' if len(definers) == 1 else ''} "
        f"objects of the restored database ({named}): they fail when used until that user is created"
    )


def notes_in_words(job: RestoreJob) -> str:
    """What the outcome adds to "Restored into the new database X."."""
    notes = []
    if job.tables:
        notes.append("Views, routines and events were not restored with chosen tables.")
    if dropped := job.report.get("foreign_keys_dropped"):
        notes.append(f"Foreign keys to tables not restored were dropped: {', '.join(dropped)}.")
    if definers := job.report.get("definers_missing"):
        notes.append(definers_in_words(definers).capitalize() + ".")
    elif definers is None and job.report.get("row_counts"):
        notes.append("Could not check the definers' users on the target server (mysql.user is not readable).")
    return " ".join(notes)


def drop_created_database(job: RestoreJob, server: Mapping[str, Any]) -> bool:
    """Drops the new database a restore that did not complete created; True
    when it is gone."""
    try:
        mariadb_restore.drop_database(server, job.target_database)
    except EngineError as exc:
        log.warning("Could not drop database %s: %s", job.target_database, exc)
        job.append_log(f"Could not drop the new database {job.target_database}: {exc}")
        return False
    job.append_log(f"The new database {job.target_database} was dropped: nothing of this restore is left")
    return True


def clean_up_dead_run(job: RestoreJob, server: Mapping[str, Any]) -> None:
    """The new database a dead worker's restore was filling. Raises when the
    server cannot drop it now: the sweep then tries again at the next tick."""
    if job.report.get("created_database") == job.target_database:
        mariadb_restore.drop_database(server, job.target_database)

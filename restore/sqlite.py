"""Restores of SQLite backups: into a new file beside the database, or into
the database itself (chosen tables in one transaction, or the whole file
swapped in by rename with the old one kept). The restored copy is checked
with PRAGMA integrity_check before anything uses it."""

import os
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from catalog import exports, keyring
from catalog.engine import restorers
from catalog.engine.errors import CorruptionError, StorageError
from catalog.engine.pipeline import restore_stream
from catalog.errors import Refused
from catalog.models import Backup, Source
from catalog.text import count_text, size_text
from restore.models import RestoreJob

if TYPE_CHECKING:  # restore.services imports this module
    from restore.services import Steps

FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}\Z")  # \Z: "$" lets a final line break through


def existing_name(source: Source) -> str:
    return Path(source.sqlite_path).name


def directory_of(source: Source) -> Path:
    return Path(source.sqlite_path).parent


def suggest_name(backup: Backup) -> str:
    stem = Path(backup.source.sqlite_path).stem
    base, counter = f"{stem}-restored-{backup.created_at:%Y%m%d}", 2
    name = f"{base}.sqlite3"
    while (directory_of(backup.source) / name).exists():
        name, counter = f"{base}-{counter}.sqlite3", counter + 1
    return name


def check_request(backup: Backup, target: str, database: str, mode: str) -> None:
    if backup.is_export() and target != RestoreJob.NEW:
        raise Refused(
            "An export of a SQLite file holds only the tables (and rows) its plan chose: it loads into a "
            "new file, never over the database it came from."
        )
    if mode != RestoreJob.FULL:
        raise Refused("Preview and merge compare PostgreSQL tables by primary key; SQLite restores are full.")
    if target == RestoreJob.NEW:
        if not FILE_NAME.match(database or ""):
            raise Refused("Name the new file with letters, digits, '.', '-' and '_'.")
        if (directory_of(backup.source) / database).exists():
            raise Refused(f"A file named {database} already exists there; a restore never overwrites one this way.")


def carry_out(job: RestoreJob, steps: "Steps", take_safety_backup: Callable[[RestoreJob], str]) -> None:
    directory = directory_of(job.source)
    steps.run("checks", lambda: preflight(job, directory))
    if job.changes_existing_database():
        steps.run("safety backup", lambda: take_safety_backup(job))
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".strongroom-restore-", suffix=".sqlite3")
    os.close(fd)
    try:
        steps.run("fetch, verify and restore", lambda: restore_to_file(job, temp))
        steps.run("apply", lambda: apply(job, directory, temp))
        steps.run("post-checks", lambda: post_checks(job, directory))
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def preflight(job: RestoreJob, directory: Path) -> str:
    if not directory.is_dir() or not os.access(directory, os.W_OK):
        raise Refused(f"Cannot write in {directory}")
    free = shutil.disk_usage(directory).free
    if job.backup.raw_bytes > free:
        raise Refused(
            f"Not enough free disk in {directory}: the database needs {size_text(job.backup.raw_bytes)}, "
            f"{size_text(free)} are free"
        )
    return f"{size_text(free)} free in {directory}"


def restore_to_file(job: RestoreJob, temp: str) -> str:
    backup, problems = job.backup, []
    for copy in backup.readable_copies():
        try:
            plain = restore_stream(
                copy.destination.storage().open_reader(copy.key),
                keyring=keyring.lookup,
                expected_sha256=backup.sha256,
                key_wraps=backup.key_wraps,
            )
            if backup.is_export():
                job.report["loaded"] = exports.load_into_sqlite(plain, temp, job.tables)
            else:
                restorers.restore_sqlite(plain, temp)
        except (CorruptionError, StorageError) as exc:
            problems.append(f"{copy.destination}: {exc}")
            continue
        integrity, rows = restorers.sqlite_report(temp)
        if integrity != "ok":
            raise Refused(f"The restored file fails integrity_check: {integrity}")
        job.report.update(copy=copy.destination.name, skipped_copies=problems, integrity_check=integrity)
        return f"from {copy.destination}, integrity_check ok"
    raise Refused("No copy could be read: " + "; ".join(problems))


def apply(job: RestoreJob, directory: Path, temp: str) -> str:
    if job.target == RestoreJob.NEW:
        os.link(temp, directory / job.target_database)  # fails rather than overwrite
        return f"written to {directory / job.target_database}"
    live = directory / job.target_database
    if not job.tables:
        kept = directory / f"{job.target_database}.before-restore-{job.pk}"
        os.link(live, kept)
        os.replace(temp, live)
        job.report["previous_database_kept_as"] = str(kept)
        return "the database file was swapped for the restored one"
    conn = sqlite3.connect(live, isolation_level=None)
    try:
        conn.execute("ATTACH DATABASE ? AS restored", [temp])
        conn.execute("BEGIN IMMEDIATE")
        for table in job.tables:
            quoted = '"' + table.replace('"', '""') + '"'
            conn.execute(f"DELETE FROM main.{quoted}")
            conn.execute(f"INSERT INTO main.{quoted} SELECT * FROM restored.{quoted}")
        conn.execute("COMMIT")
        conn.execute("DETACH DATABASE restored")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise Refused(f"Could not replace the tables: {exc}; nothing was changed") from exc
    finally:
        conn.close()
    return f"replaced {len(job.tables)} tables in one transaction"


def post_checks(job: RestoreJob, directory: Path) -> str:
    path = directory / job.target_database
    integrity, rows = restorers.sqlite_report(str(path), qualified=job.backup.is_export())
    expected = job.backup.table_counts
    tables = job.tables or sorted(expected)
    job.report["row_counts"] = {t: {"backup": expected.get(t), "restored": rows.get(t)} for t in tables}
    wrong = [t for t in tables if rows.get(t) != expected.get(t)]
    if integrity != "ok" or wrong:
        raise Refused(f"After the restore: integrity_check {integrity}; counts differ for {', '.join(wrong) or 'none'}")
    return (
        f"{count_text(len(tables), 'table')}, {sum(rows.get(t, 0) for t in tables)} rows as in the backup; "
        "integrity_check ok"
    )

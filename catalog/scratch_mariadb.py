"""Restoring a MariaDB/MySQL backup into a database of its own: the one path
for the restore app (a new database), the test restore and the drills (a
scratch database), as catalog/scratch.py is for PostgreSQL.

The copies are tried in turn (scratch.first_intact_copy): a damaged or
unreadable one is skipped, and the database its restore created is dropped
before the next is tried. The dump streams into the `mariadb` client
(catalog/engine/mariadb_restore.py); nothing is spooled to disk, so a copy
whose SHA-256 fails at the end has already been loaded, and is dropped.

A test restore goes to the source's own server, in a database named like
every scratch database (restorers.SCRATCH_PREFIX), recorded in the
verification's evidence before it is created, so that the sweep drops it
should the worker die. Its events are created disabled (the source's
scheduled jobs must not run in it), and its views, routines, triggers and
events keep their definers when the user may create them so, else they are
defined by the user (said in the log): the rows and the schema are proven
either way.
"""

import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from catalog import scratch
from catalog.engine import mariadb, mariadb_restore, restorers
from catalog.engine.errors import EngineError
from catalog.models import Backup, Copy, Source, Verification


@dataclass
class Restored:
    copy: Copy
    skipped: list[scratch.Skipped]
    seconds: float
    contents: mariadb_restore.Contents


def source_server(source: Source) -> dict[str, Any]:
    """The source's server, in no database (the source's own may be gone)."""
    return mariadb_restore.server_params(source.conninfo())


def restore_into_database(
    backup: Backup,
    server: Mapping[str, Any],
    name: str,
    *,
    tables: Collection[str] | None = None,
    definers_to_current_user: bool = False,
    disable_events: bool = False,
    cancel_event: threading.Event | None = None,
    created: Callable[[], object] = lambda: None,
    log: Callable[[str], object] = scratch.ignore,
) -> Restored:
    """Creates database `name` on `server` and restores the first intact copy
    into it (only `tables`, when given); `created` is called once it exists.
    Raises scratch.NoCopyRestored when every copy is damaged or unreadable;
    after any failure the database is gone."""

    def restore_one(copy: Copy, plain: Iterator[bytes]) -> mariadb_restore.Contents:
        return mariadb_restore.restore(
            plain,
            server,
            name,
            tables=tables,
            source_database=backup.source.dbname,
            charset=backup.database_defaults.get("charset", ""),
            collation=backup.database_defaults.get("collation", ""),
            definers_to_current_user=definers_to_current_user,
            disable_events=disable_events,
            cancel_event=cancel_event,
            created=created,
        )

    def discard(_: object) -> None:
        drop_quietly(server, name)

    done = scratch.first_intact_copy(backup, restore_one, cancel_event, log, discard)
    return Restored(copy=done.copy, skipped=done.skipped, seconds=done.seconds, contents=done.value)


def drop_quietly(server: Mapping[str, Any], name: str) -> None:
    """Drops a database without hiding the failure that led here; should the
    server refuse, the sweeps drop it later by its recorded name."""
    try:
        mariadb_restore.drop_database(server, name)
    except EngineError as exc:
        scratch.logger.warning("Could not drop database %s: %s", name, exc)


def database_is_gone(server: Mapping[str, Any], name: str) -> bool:
    try:
        return not mariadb_restore.database_exists(server, name)
    except EngineError:
        return False


# --- test restores ---------------------------------------------------------------


def restore_test_copy(
    verification: Verification, backup: Backup, cancel_event: threading.Event
) -> tuple[Copy, dict[str, Any]]:
    """The first intact copy into a scratch database on the source's server;
    then its rows and objects counted, and the database dropped whatever happens."""
    server = source_server(backup.source)
    name = restorers.scratch_name(backup.pk)
    verification.evidence = {"scratch_database": name, "server": mariadb.where(server)}
    Verification.objects.filter(pk=verification.pk).update(evidence=verification.evidence)  # for the sweep
    definers_kept = mariadb_restore.can_set_definers(server)
    if not definers_kept:
        verification.append_log(
            f"{server.get('user')} may not create objects defined by other users (SUPER or SET USER): views, "
            "triggers, routines and events are restored defined by it"
        )
    verification.evidence["definers_kept"] = definers_kept
    try:
        done = restore_into_database(
            backup,
            server,
            name,
            definers_to_current_user=not definers_kept,
            disable_events=True,
            cancel_event=cancel_event,
            log=verification.append_log,
        )
        try:
            started = time.monotonic()
            rows = mariadb_restore.row_counts(server, name)
            objects = mariadb_restore.object_counts(server, name)
            verification.append_log(f"Counted {len(rows)} tables' rows in {time.monotonic() - started:.1f} s")
        finally:
            drop_quietly(server, name)
    finally:
        dropped = database_is_gone(server, name)
        verification.evidence["scratch_dropped"] = dropped
    verification.append_log(f"Restored into {name} in {done.seconds:.1f} s; scratch database dropped: {dropped}")
    verification.restore_seconds = done.seconds
    return done.copy, {
        **verification.evidence,
        "restore_seconds": round(done.seconds, 3),
        "rows": rows,
        "schema_objects": objects,
        "table_of_contents": done.contents.object_counts(),
        "skipped_copies": done.skipped,
    }


def drop_dead_scratch(verification: Verification) -> None:
    """The scratch database a dead worker's test restore was filling, if any."""
    name = (verification.evidence or {}).get("scratch_database", "")
    if name.startswith(restorers.SCRATCH_PREFIX):
        try:
            mariadb_restore.drop_database(source_server(verification.source), name)
        except EngineError as exc:
            scratch.logger.warning("Could not drop scratch database %s: %s", name, exc)

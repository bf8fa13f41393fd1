"""Restoring a backup into a scratch database: one path for the restore
wizard, the test restore and the drills (which run those two), so that a fix
reaches all three.

The copies are tried in the order Backup.readable_copies gives. A copy that
is damaged (CorruptionError) or cannot be read (StorageError) is skipped and
the next one is restored into a fresh scratch database; any other failure
stops there, since every copy holds the same dump and would fail the same
way. A scratch database whose restore failed is always dropped; one that
restored belongs to the caller, who renames it, applies from it, or measures
and drops it.

A copy that restored has passed its SHA-256, so it holds the stored bytes
exactly. Each skipped damaged copy is then compared with it: that gives its
first bad byte, where the restore itself only knew the encrypted segment
that failed (the catalog's one SHA-256 says whether bytes differ, never
where).
"""

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import psycopg
from django.conf import settings

from catalog import backup_globals, exports, keyring
from catalog.engine import restorers
from catalog.engine.errors import Cancelled, CorruptionError, EngineError, StorageError
from catalog.engine.pipeline import restore_stream
from catalog.engine.verify import first_difference, size_difference
from catalog.models import DIRECTORY_FORMAT, Backup, Copy

logger = logging.getLogger(__name__)

T = TypeVar("T")

# A skipped copy, as evidence and reports keep it (skipped_entry).
Skipped = dict[str, Any]


def ignore(line: object) -> None:
    pass


class NoCopyRestored(EngineError):
    """Every copy was damaged or unreadable; `skipped` says how, copy by copy."""

    def __init__(self, skipped: list[Skipped]) -> None:
        super().__init__("No copy could be restored: " + skipped_in_words(skipped))
        self.skipped = skipped


def skipped_in_words(skipped: Iterable[Skipped]) -> str:
    return "; ".join(f"{entry['destination']}: {entry['error']}" for entry in skipped)


@dataclass
class Restored(Generic[T]):
    """The copy that restored, what restore_one returned for it, the copies
    skipped before it (dicts, as evidence and reports keep them) and how long
    its restore took."""

    copy: Copy
    value: T
    skipped: list[Skipped]
    seconds: float


@dataclass
class ScratchRestore:
    copy: Copy
    skipped: list[Skipped]
    seconds: float
    warnings: list[str] = field(default_factory=list)  # what pg_restore or psql printed without failing
    table_of_contents: dict[str, int] | None = None  # the dump's object counts, when it has a table of contents
    loaded: dict[str, int] | None = None  # an export's {table: rows loaded}
    database: dict[str, Any] | None = None  # the backup's recorded database properties, read once for the caller too


# --- any engine -------------------------------------------------------------------


def first_intact_copy(
    backup: Backup,
    restore_one: Callable[[Copy, Iterator[bytes]], T],
    cancel_event: threading.Event | None = None,
    log: Callable[[str], object] = ignore,
    discard: Callable[[T], object] = ignore,
) -> Restored[T]:
    """Calls restore_one(copy, plain_chunks) with each readable copy's
    decrypted, decompressed stream (its SHA-256 checked at the end) until one
    returns. restore_one must leave nothing behind when it raises; should
    this fail after it returned (a cancel while comparing copies), discard
    gets what it returned, to remove."""
    copies = backup.readable_copies()
    if not copies:
        raise EngineError("This backup has no stored copy left to restore from.")
    skipped: list[tuple[Copy, Skipped]] = []
    for copy in copies:
        log(f"Restoring from {copy.destination} ({copy.location_display()})")
        started = time.monotonic()
        try:
            value = restore_one(copy, plain_stream(backup, copy, cancel_event))
        except (CorruptionError, StorageError) as exc:  # this copy is unusable; the next may not be
            skipped.append((copy, skipped_entry(copy, exc)))
            log(f"{copy.destination}: cannot restore from it — {exc}")
            continue
        seconds = time.monotonic() - started
        try:
            locate_damage(backup, skipped, copy, cancel_event, log)
        except BaseException:
            discard(value)
            raise
        return Restored(copy=copy, value=value, skipped=[entry for _, entry in skipped], seconds=seconds)
    raise NoCopyRestored([entry for _, entry in skipped])


def plain_stream(backup: Backup, copy: Copy, cancel_event: threading.Event | None = None) -> Iterator[bytes]:
    chunks = copy.destination.storage().open_reader(copy.key)
    if cancel_event is not None:
        chunks = cancellable(chunks, cancel_event)
    return restore_stream(chunks, keyring=keyring.lookup, expected_sha256=backup.sha256, key_wraps=backup.key_wraps)


def cancellable(chunks: Iterable[bytes], cancel_event: threading.Event) -> Iterator[bytes]:
    """`chunks`, until the job is cancelled. The source is closed as soon as
    this ends: the frames of a cancelled job's traceback keep it referenced,
    and a storage reader left open holds its file (or the writer of a pipe)
    until the garbage collector happens to run."""
    source = iter(chunks)
    try:
        for chunk in source:
            if cancel_event.is_set():
                raise Cancelled("Cancelled by request")
            yield chunk
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def skipped_entry(copy: Copy, exc: EngineError) -> Skipped:
    """A skipped copy as evidence: `offset` is the first bad byte, only once
    it is known exactly; a failed encrypted segment is `segment_start` and
    `segment_length`."""
    return {
        "copy": copy.pk,
        "destination": copy.destination.name,
        "location": copy.location_display(),
        "error": str(exc),
        "damaged": isinstance(exc, CorruptionError),
        "offset": None,
        "segment_start": getattr(exc, "offset", None),
        "segment_length": getattr(exc, "length", None),
    }


# --- the first bad byte ------------------------------------------------------------


def locate_damage(
    backup: Backup,
    skipped: Iterable[tuple[Copy, Skipped]],
    intact: Copy,
    cancel_event: threading.Event | None = None,
    log: Callable[[str], object] = ignore,
) -> None:
    """Says where each skipped damaged copy differs from `intact`, a copy that
    has just restored: at the first bad byte when the sizes agree, otherwise
    by how much the size differs. An unreadable copy has nothing to compare."""
    for copy, entry in skipped:
        if not entry["damaged"]:
            continue
        try:
            size = copy.destination.storage().size(copy.key)
            if size != backup.stored_bytes:
                entry.update(
                    offset=min(size, backup.stored_bytes),
                    error=f"{size_difference(size, backup.stored_bytes)}; {entry['error']}",
                )
                continue
            offset = first_bad_byte(copy, intact, cancel_event)
        except Cancelled:
            raise
        except (EngineError, OSError) as exc:  # the restore stands; only the damage stays less precise
            log(f"Could not compare {copy.destination} with {intact.destination}: {exc}")
            continue
        if offset is None:
            continue  # it reads back the same now: the failed read was what went wrong, said as it is
        entry.update(
            offset=offset,
            compared_with=intact.destination.name,
            error=f"{differs_from(intact, offset)}; {entry['error']}",
        )


def first_bad_byte(copy: Copy, intact: Copy, cancel_event: threading.Event | None = None) -> int | None:
    """The first byte where `copy` differs from `intact`, or None when their
    stored bytes are equal."""
    chunks = copy.destination.storage().open_reader(copy.key)
    reference = intact.destination.storage().open_reader(intact.key)
    if cancel_event is not None:
        chunks, reference = cancellable(chunks, cancel_event), cancellable(reference, cancel_event)
    return first_difference(chunks, reference)


def differs_from(intact: Copy, offset: int) -> str:
    return f"it differs from the intact copy on {intact.destination} first at byte {offset}"


# --- PostgreSQL ----------------------------------------------------------------------


def restore_into_scratch(
    backup: Backup,
    server: Mapping[str, Any],
    name: str,
    *,
    tables: Sequence[str] = (),
    keep_owners: bool = False,
    spool_dir: str | None = None,
    jobs: int = 1,
    cancel_event: threading.Event | None = None,
    log: Callable[[str], object] = ignore,
) -> ScratchRestore:
    """Restores the first intact copy of a PostgreSQL backup into a new
    database `name` (a restorers.scratch_name) on `server`; returns a
    ScratchRestore. `spool_dir` is a directory for this restore alone, removed
    at the end. A custom-format dump goes through `pg_restore -j jobs`
    from a file in `spool_dir` when one is given and jobs > 1, and a
    directory-format one (which needs `spool_dir`) always from its files
    there: nothing is restored before the whole copy has passed its SHA-256. Otherwise it is
    streamed into one pg_restore (a copy whose SHA-256 then differs fails the
    restore at its end, and the scratch database is dropped). An
    export loads only `tables` (all when empty). Raises NoCopyRestored when
    every copy is damaged or unreadable; the scratch database is gone then,
    and after any other failure."""

    like = recorded_database(backup, log)

    def restore_one(copy: Copy, plain: Iterator[bytes]) -> dict[str, Any]:
        scratch = restorers.ScratchDatabase(server, name, like).create()
        try:
            done = restore_dump(
                backup,
                plain,
                scratch.connection_params(),
                tables=tables,
                keep_owners=keep_owners,
                spool_dir=spool_dir,
                jobs=jobs,
                cancel_event=cancel_event,
                like=like,
            )
        except BaseException:
            drop_quietly(scratch)
            raise
        if scratch.fallback:
            done["warnings"].insert(0, scratch.fallback)
        return done

    def discard(_: object) -> None:
        drop_quietly(restorers.ScratchDatabase(server, name))

    try:
        done = first_intact_copy(backup, restore_one, cancel_event, log, discard)
    finally:
        if spool_dir is not None:  # the caller's directory for this restore alone
            shutil.rmtree(spool_dir, ignore_errors=True)
    return ScratchRestore(copy=done.copy, skipped=done.skipped, seconds=done.seconds, database=like, **done.value)


def recorded_database(backup: Backup, log: Callable[[str], object] = ignore) -> dict[str, Any] | None:
    """The backup's own database properties (pgglobals), so that the scratch
    database has the encoding and locale the data was dumped from; None for
    a backup that predates them, or when no copy has them readable (then
    the server's defaults, said in the log)."""
    if not backup.globals_sha256:
        return None
    try:
        return backup_globals.read(backup)["database"]
    except backup_globals.GlobalsUnavailable as exc:
        log(f"{exc}; the scratch database gets the server's default encoding and locale")
        return None


def restore_dump(
    backup: Backup,
    plain: Iterable[bytes],
    params: Mapping[str, Any],
    *,
    tables: Sequence[str],
    keep_owners: bool,
    spool_dir: str | None,
    jobs: int,
    cancel_event: threading.Event | None,
    like: dict[str, Any] | None = None,
) -> dict[str, Any]:
    warnings: list[str] = []
    if backup.is_export():
        # Tables are recreated from the recorded column types: there is no table of contents.
        loaded = exports.load_into(plain, params, tables)
        return {"warnings": warnings, "loaded": loaded}
    if spool_dir is not None and backup.restore_spools(jobs):
        toc = restorers.restore_postgres_parallel(
            plain,
            params,
            spool_dir,
            jobs,
            backup.raw_bytes,
            pg_restore=settings.PG_RESTORE,
            warnings=warnings,
            keep_owners=keep_owners,
            like=like,
            fmt=backup.format,
        )
        return {"warnings": warnings, "table_of_contents": toc}
    # pg_restore reads a directory-format dump only from its files.
    assert backup.format != DIRECTORY_FORMAT, "a directory-format dump needs a spool_dir to be unpacked in"
    toc = restorers.restore_postgres(
        plain,
        params,
        backup.format,
        cancel_event,
        pg_restore=settings.PG_RESTORE,
        psql=settings.PSQL,
        warnings=warnings,
        keep_owners=keep_owners,
    )
    return {"warnings": warnings, "table_of_contents": toc}


def drop_quietly(scratch: restorers.ScratchDatabase) -> None:
    """Drops a scratch database without hiding the failure that led here;
    should the server refuse, the sweeps drop it later by its recorded name."""
    try:
        scratch.drop()
    except (EngineError, psycopg.Error) as exc:
        logger.warning("Could not drop scratch database %s: %s", scratch.name, exc)

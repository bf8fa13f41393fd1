"""Continuous WAL protection: enabling it (after checking the source can do
it), shipping WAL files through the backup pipeline, continuity, retention.

Shared by the views, the receiver supervisor (pitr/receiver.py), the
archive_command push endpoint, the tick and the point-in-time restore.
"""

import logging
import os
import time
from collections.abc import Iterable, Iterator
from datetime import date, datetime, timedelta
from typing import Any, TypedDict

import psycopg
from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet, Sum
from django.db.models.functions import TruncDate
from django.http import HttpRequest
from django.utils import timezone

from catalog import audit, keyring
from catalog.engine import dumpers, lsn
from catalog.engine import wal as walfiles
from catalog.engine.crypto import Encryptor
from catalog.engine.dumpers import ConnParams
from catalog.engine.errors import EngineError, SourceError
from catalog.engine.files import make_private_dirs
from catalog.engine.pipeline import DumpStream, restore_stream, run_pipeline
from catalog.models import BASE_BACKUP_FORMAT, Backup, Destination, Source
from catalog.services import Refused
from pitr.models import BaseBackupWal, ContinuousProtection, WalCopy, WalSegment

log = logging.getLogger(__name__)

# How many missing segments the continuity report names (the count is exact).
MISSING_NAMED = 50


def slot_name_for(source: Source) -> str:
    return f"strongroom_{source.pk}"


def segment_size_of(source: Source) -> int:
    """The source's wal_segment_size, as the last prerequisites check saw it."""
    protection = ContinuousProtection.objects.filter(source=source).first()
    size = (protection.check_report or {}).get("segment_size") if protection else None
    return int(size or lsn.DEFAULT_SEGMENT_SIZE)


# --- prerequisites --------------------------------------------------------------

PREREQUISITES_SQL = """
SELECT current_user, r.rolreplication, r.rolsuper, current_setting('wal_level'),
       current_setting('max_wal_senders')::int, current_setting('max_replication_slots')::int,
       (SELECT count(*) FROM pg_stat_replication), (SELECT count(*) FROM pg_replication_slots),
       (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), current_setting('server_version'),
       EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = %s)
FROM pg_roles r WHERE r.rolname = current_user
"""


def check_prerequisites(source: Source, mode: str = ContinuousProtection.STREAM) -> dict[str, Any]:
    """What the source lacks for continuous protection, in words. Returns a
    report: ok, missing (list of sentences), facts, segment_size, slot."""
    slot = slot_name_for(source)
    report: dict[str, Any] = {
        "ok": False,
        "missing": [],
        "facts": [],
        "slot": slot,
        "mode": mode,
        "checked_at": timezone.now().isoformat(),
    }
    if source.engine != "postgresql":
        report["missing"].append("Continuous protection needs a PostgreSQL source.")
        return report
    params = dumpers.normalize_conninfo(source.conninfo())
    try:
        with psycopg.connect(**params, connect_timeout=10, autocommit=True) as conn:
            row = conn.execute(PREREQUISITES_SQL, [slot]).fetchone()
            assert row is not None  # the current user's own pg_roles row: always there
    except psycopg.Error as exc:
        report["missing"].append(f"Cannot connect to the source: {dumpers.describe_pg_error(exc, params)}")
        return report
    (
        user,
        replication,
        superuser,
        wal_level,
        senders,
        slots,
        senders_used,
        slots_used,
        segment_size,
        version,
        slot_exists,
    ) = row
    report.update(segment_size=segment_size, server_version=version, wal_level=wal_level)
    missing, facts = report["missing"], report["facts"]
    facts.append(f"PostgreSQL {version}, WAL segments of {segment_size // (1 << 20)} MB")
    if wal_level not in ("replica", "logical"):
        missing.append(
            f"wal_level is {wal_level}: set wal_level = replica (or logical) in postgresql.conf and restart the server."
        )
    else:
        facts.append(f"wal_level is {wal_level}")
    if mode == ContinuousProtection.STREAM:
        check_streaming(
            source,
            params,
            report,
            user=user,
            replication=replication,
            superuser=superuser,
            senders=senders,
            senders_used=senders_used,
            slots=slots,
            slots_used=slots_used,
            slot_exists=slot_exists,
        )
    else:
        facts.append("The server pushes WAL with its archive_command: no replication connection is needed.")
    report["ok"] = not missing
    return report


def check_streaming(
    source: Source,
    params: ConnParams,
    report: dict[str, Any],
    *,
    user: str,
    replication: bool,
    superuser: bool,
    senders: int,
    senders_used: int,
    slots: int,
    slots_used: int,
    slot_exists: bool,
) -> None:
    missing, facts, slot = report["missing"], report["facts"], report["slot"]
    if replication or superuser:
        facts.append(f"Role {user} {'is a superuser' if superuser else 'has REPLICATION'}")
    else:
        missing.append(f"Role {user} has neither REPLICATION nor superuser: run ALTER ROLE {user} REPLICATION;")
    if senders <= senders_used:
        missing.append(
            f"max_wal_senders is {senders} and {senders_used} are in use: raise max_wal_senders (needs a restart)."
        )
    else:
        facts.append(f"max_wal_senders is {senders}, {senders_used} in use")
    if not slot_exists and slots <= slots_used:
        missing.append(
            f"max_replication_slots is {slots} and {slots_used} are in use: raise it to create "
            f"the slot {slot} (needs a restart)."
        )
    facts.append(f"Replication slot {slot} " + ("exists already" if slot_exists else "will be created"))
    try:
        with psycopg.connect(**params, connect_timeout=10, replication="true", autocommit=True) as conn:
            result = conn.pgconn.exec_(b"IDENTIFY_SYSTEM")
            if result.error_message:
                raise psycopg.OperationalError(result.error_message.decode("utf-8", "replace"))
        facts.append("A replication connection works (pg_hba.conf allows it)")
    except psycopg.Error as exc:
        text = dumpers.redact(str(exc), params).strip().splitlines()
        quoted = next((line for line in text if "FATAL" in line or "ERROR" in line), text[-1] if text else "")
        hint = (
            ""
            if "pg_hba" not in quoted
            else (
                f" Add a line such as 'host replication {user} <Strongroom's address>/32 scram-sha-256' to "
                "pg_hba.conf and reload the server."
            )
        )
        missing.append(f"A replication connection was refused: {quoted.split('FATAL:')[-1].strip()}.{hint}")


# --- enabling -------------------------------------------------------------------


def default_destinations(source: Source) -> QuerySet[Destination]:
    """The destinations of the source's plans."""
    return Destination.objects.filter(plans__source=source).distinct()


def enable_protection(
    actor: audit.Actor,
    source: Source,
    mode: str = ContinuousProtection.STREAM,
    destinations: Iterable[Destination] | None = None,
    recovery_window_days: int | None = None,
) -> ContinuousProtection:
    """Checks the prerequisites, creates the replication slot (streaming),
    records the choice and audits it. Raises Refused saying what is missing."""
    destinations = list(destinations if destinations is not None else default_destinations(source))
    if not destinations:
        raise Refused(f"{source} has no destination to keep WAL in: choose one (or give the source a plan first).")
    report = check_prerequisites(source, mode)
    protection, _ = ContinuousProtection.objects.get_or_create(source=source)
    protection.check_report, protection.checked_at = report, timezone.now()
    if not report["ok"]:
        protection.save(update_fields=["check_report", "checked_at"])
        raise Refused("Continuous protection cannot be enabled yet: " + " ".join(report["missing"]))
    if mode == ContinuousProtection.STREAM:
        create_slot(source, report["slot"])
    with transaction.atomic():
        protection.enabled, protection.mode = True, mode
        protection.slot_name = report["slot"] if mode == ContinuousProtection.STREAM else ""
        if recovery_window_days:
            protection.recovery_window_days = recovery_window_days
        protection.receiver_error, protection.receiver_heartbeat_at = "", None
        protection.created_at = timezone.now()  # the receiver's grace starts now
        protection.save()
        protection.destinations.set(destinations)
        audit.record(
            actor,
            "pitr.enable",
            protection,
            {
                "mode": mode,
                "slot": protection.slot_name,
                "destinations": [str(d) for d in destinations],
                "recovery_window_days": protection.recovery_window_days,
            },
        )
    return protection


def create_slot(source: Source, slot: str) -> None:
    """A physical slot that reserves WAL from now on, so nothing is recycled
    before the receiver has it."""
    params = dumpers.normalize_conninfo(source.conninfo())
    try:
        with psycopg.connect(**params, connect_timeout=10, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", [slot]).fetchone():
                conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", [slot])
    except psycopg.Error as exc:
        raise Refused(
            f"Could not create the replication slot {slot}: {dumpers.describe_pg_error(exc, params)}"
        ) from exc


def disable_protection(actor: audit.Actor, source: Source, drop_slot: bool = True) -> ContinuousProtection:
    """Stops archiving (the supervisor stops the receiver within seconds) and
    drops the slot, which would otherwise make the server keep WAL forever.
    Stored segments stay until retention removes them."""
    protection = ContinuousProtection.objects.get(source=source)
    with transaction.atomic():
        protection.enabled = False
        protection.save(update_fields=["enabled", "updated_at"])
        audit.record(actor, "pitr.disable", protection, {"slot_dropped": bool(drop_slot and protection.slot_name)})
    if drop_slot and protection.slot_name:
        params = dumpers.normalize_conninfo(source.conninfo())
        try:
            with psycopg.connect(**params, connect_timeout=10, autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                    "WHERE slot_name = %s AND NOT active",
                    [protection.slot_name],
                )
        except psycopg.Error as exc:
            log.warning("Could not drop the slot of %s: %s", source, dumpers.describe_pg_error(exc, params))
    return protection


def archive_command(source: Source) -> str:
    """The line to put in the server's postgresql.conf (archive mode). The
    token stays a placeholder: it is shown once, when created."""
    from django.urls import reverse

    url = settings.SITE_URL + reverse("pitr_wal_push", args=[source.pk, "XXX"]).replace("XXX", "%f")
    return f"archive_command = 'curl -fsS --retry 3 -H @/etc/strongroom/wal-token -T %p {url}'"


# --- shipping -------------------------------------------------------------------


def object_key_for(source: Source, name: str, protection: ContinuousProtection) -> str:
    ext = {"zstd": ".zst", "gzip": ".gz"}.get(protection.compression, "")
    return f"wal/{source.slug}/{name}{ext}{'.enc' if protection.encrypt else ''}"


def is_stored(source: Source, name: str) -> bool:
    return WalSegment.objects.filter(source=source, name=name, status=WalSegment.STORED).exists()


def ship_wal_file(protection: ContinuousProtection, name: str, dump: DumpStream) -> WalSegment:
    """Stores one WAL file (segment, history or partial) through the pipeline
    in every destination of the protection. A segment or history file already
    stored is not stored again; a partial replaces its previous version.
    Returns the WalSegment, or raises EngineError when no copy is durable."""
    source = protection.source
    kind = walfiles.kind_of(name)
    if kind is None:
        raise SourceError(f"{name} is not a WAL file name")
    if kind != WalSegment.PARTIAL and is_stored(source, name):
        return WalSegment.objects.get(source=source, name=name)
    segment_size = segment_size_of(source)
    destinations = list(protection.destinations.all())
    if not destinations:
        raise SourceError(f"Continuous protection of {source} has no destination")
    object_key = object_key_for(source, name, protection)
    encryptor, key_id = None, ""
    if protection.encrypt:
        key_id, master = keyring.active_key()
        encryptor = Encryptor(master, key_id)
    # Keyed by name (unique), as a backup run keys them: the pipeline's errors name them so.
    writers = {d.name: d.storage().open_writer(object_key) for d in destinations}
    result = run_pipeline(dump, compression=protection.compression, encryptor=encryptor, writers=writers)
    if not result.sizes:
        raise SourceError(f"No destination took {name}: " + "; ".join(f"{e}" for e in result.errors.values()))
    now = timezone.now()
    with transaction.atomic():
        segment, _ = WalSegment.objects.update_or_create(
            source=source,
            name=name,
            defaults=dict(
                kind=kind,
                timeline=walfiles.segment_timeline(name),
                position=None if kind == WalSegment.HISTORY else walfiles.segment_position(name, segment_size),
                size=result.raw_bytes,
                stored_bytes=result.stored_bytes,
                sha256=result.sha256,
                compression=protection.compression,
                encrypted=protection.encrypt,
                key_id=key_id,
                key_wraps={},
                status=WalSegment.STORED,
                received_at=now,
                pruned_at=None,
                prune_reason="",
            ),
        )
        for destination in destinations:
            durable = destination.name in result.sizes
            WalCopy.objects.update_or_create(
                segment=segment,
                destination=destination,
                defaults=dict(
                    key=object_key,
                    status=WalCopy.DURABLE if durable else WalCopy.FAILED,
                    size=result.sizes.get(destination.name, 0),
                    error=(result.errors.get(destination.name) or "")[:500],
                    durable_at=now if durable else None,
                    pruned_at=None,
                ),
            )
        fields: dict[str, object] = {"last_segment_at": now}
        if result.errors:  # stored, but not everywhere: say where it is missing
            fields["receiver_error"] = (
                f"{name} was not stored in "
                + "; ".join(f"{d}: {result.errors[d.name]}" for d in destinations if d.name in result.errors)
            )[:500]
        if kind != WalSegment.HISTORY:
            fields["last_segment_name"] = name
        ContinuousProtection.objects.filter(pk=protection.pk).update(**fields)
    if kind == WalSegment.SEGMENT:
        drop_superseded_partial(source, name)
        from pitr.basebackups import complete_waiting  # marks them, audits, refreshes the source's health

        complete_waiting(source)
    return segment


def ship_wal_path(
    protection: ContinuousProtection,
    path: str | os.PathLike[str],
    name: str | None = None,
    length: int | None = None,
) -> WalSegment:
    return ship_wal_file(protection, name or os.path.basename(path), walfiles.WalFileDump(path, length))


def ship_pushed_file(protection: ContinuousProtection, name: str, stream: HttpRequest, length: int) -> WalSegment:
    """Stores a WAL file read from `stream` (an HTTP request body): spooled
    to a temporary file first, since its size may pass what memory should hold."""
    import shutil
    import tempfile

    incoming = settings.WAL_SPOOL_DIR / "incoming"
    make_private_dirs(incoming)
    with tempfile.NamedTemporaryFile(dir=incoming, prefix=f"{name}.") as spooled:
        shutil.copyfileobj(stream, spooled, 1 << 20)
        spooled.flush()
        if spooled.tell() != length:
            raise SourceError(f"received {spooled.tell()} bytes of the {length} announced")
        return ship_wal_path(protection, spooled.name, name=name)


def drop_superseded_partial(source: Source, name: str) -> None:
    """Once a segment is complete, its partial version is only clutter."""
    for partial in WalSegment.objects.filter(source=source, name=f"{name}.partial"):
        delete_objects(partial)
        partial.delete()


def delete_objects(segment: WalSegment) -> bool:
    """Deletes the WAL file's objects; False if one could not be deleted."""
    deleted = True
    for copy in segment.copies.select_related("destination").exclude(status=WalCopy.PRUNED):
        try:
            copy.destination.storage().delete(copy.key)
        except EngineError as exc:
            log.warning("Could not delete %s from %s: %s", copy.key, copy.destination, exc)
            deleted = False
            continue
        copy.status, copy.pruned_at = WalCopy.PRUNED, timezone.now()
        copy.save(update_fields=["status", "pruned_at"])
    return deleted


def read_wal(segment: WalSegment) -> Iterator[bytes]:
    """The plain bytes of a stored WAL file, from its first durable copy,
    checked against its SHA-256 (CorruptionError at the end if they differ)."""
    copy = segment.copies.filter(status=WalCopy.DURABLE).select_related("destination").first()
    if copy is None:
        raise SourceError(f"No durable copy of WAL file {segment.name} is left")
    chunks = copy.destination.storage().open_reader(copy.key)
    return restore_stream(
        chunks, keyring=keyring.lookup, expected_sha256=segment.sha256, key_wraps=segment.key_wraps or None
    )


def read_wal_bytes(segment: WalSegment) -> bytes:
    return b"".join(read_wal(segment))


def stored_again(segment: WalSegment, wait: float = 5.0) -> WalSegment | None:
    """A partial WAL file the receiver stored again, longer, while it was
    being read: its new row, once that is committed (the new bytes land
    before the row that describes them, so a reader can see the one before
    the other). None when it is no partial, or its row stays as it was for
    `wait` seconds: then the stored bytes really differ from the record."""
    if segment.kind != WalSegment.PARTIAL:
        return None
    deadline = time.monotonic() + wait
    while (fresh := WalSegment.objects.filter(pk=segment.pk).first()) is not None:
        if fresh.sha256 != segment.sha256:
            return fresh
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)
    return None


# --- continuity -----------------------------------------------------------------


def stored_segments(source: Source) -> QuerySet[WalSegment]:
    return WalSegment.objects.filter(
        source=source, status=WalSegment.STORED, kind__in=[WalSegment.SEGMENT, WalSegment.PARTIAL]
    )


def segments_between(source: Source, from_segment: str, to_segment: str) -> list[WalSegment]:
    """The stored segments from `from_segment` to `to_segment` (names,
    inclusive), in order; the partial of the last one counts when the
    complete segment is not stored yet."""
    size = segment_size_of(source)
    low, high = walfiles.segment_position(from_segment, size), walfiles.segment_position(to_segment, size)
    rows = stored_segments(source).filter(position__gte=low, position__lte=high).order_by("position", "kind")
    by_position: dict[int, WalSegment] = {}
    for row in rows:  # "partial" sorts after "segment": keep the complete one
        assert row.position is not None  # filtered on it: never a history file's null
        by_position.setdefault(row.position, row)

    return [by_position[p] for p in sorted(by_position)]


def missing_segments(source: Source, from_segment: str, to_segment: str) -> list[str]:
    """Names of the segments between the two (inclusive) that are not stored."""
    size = segment_size_of(source)
    timeline = walfiles.segment_timeline(to_segment)
    low, high = walfiles.segment_position(from_segment, size), walfiles.segment_position(to_segment, size)
    have = set(stored_segments(source).filter(position__gte=low, position__lte=high).values_list("position", flat=True))
    return [lsn.segment_name_for_position(timeline, p, size) for p in range(low, high + 1) if p not in have]


def retained_base_backups(source: Source) -> QuerySet[Backup]:
    return Backup.objects.filter(
        source=source,
        format=BASE_BACKUP_FORMAT,
        status__in=Backup.WITH_DATA,
        pruned_at__isnull=True,
        base_wal__isnull=False,
    )


def window_anchor(source: Source, now: datetime | None = None) -> tuple[BaseBackupWal | None, list[BaseBackupWal]]:
    """(anchor, bases): the base backup a restore to the start of the
    recovery window replays from — the newest retained one taken before the
    window began, else the oldest retained one — and every retained base
    backup's WAL bounds, oldest first. (None, []) without any."""
    protection = ContinuousProtection.objects.filter(source=source).first()
    days = protection.recovery_window_days if protection else 14
    window_start = (now or timezone.now()) - timedelta(days=days)
    bases = list(
        BaseBackupWal.objects.filter(backup__in=retained_base_backups(source))
        .select_related("backup")
        .order_by("backup__created_at")
    )
    if not bases:
        return None, []
    before_window = [b for b in bases if (b.started_at or b.backup.created_at) <= window_start]
    return (before_window[-1] if before_window else bases[0]), bases


# What `continuity` reports ("from" is a keyword, hence the functional form).
Continuity = TypedDict(
    "Continuity",
    {"from": str, "to": str, "missing": list[str], "missing_count": int, "ok": bool, "count": int},
)


def continuity(source: Source) -> Continuity:
    """Which segments a restore could need are missing: every one from the
    window's anchor base backup (or the first stored segment, before any
    base backup) to the newest stored, and each older retained base
    backup's own start..end."""
    newest = stored_segments(source).order_by("-position").first()
    if newest is None:
        return {"from": "", "to": "", "missing": [], "missing_count": 0, "ok": True, "count": 0}
    anchor, bases = window_anchor(source)
    if anchor:
        first = anchor.start_segment
    else:
        oldest = stored_segments(source).order_by("position").first()
        assert oldest is not None  # there is a newest one, so there is an oldest
        first = oldest.name
    to_name = newest.name[:24]
    missing: list[str] = []
    for base in bases:
        if base is anchor:
            break
        missing += missing_segments(source, base.start_segment, base.end_segment or base.start_segment)
    missing += missing_segments(source, first[:24], to_name)
    return {
        "from": first[:24],
        "to": to_name,
        "missing": missing[:MISSING_NAMED],
        "missing_count": len(missing),
        "ok": not missing,
        "count": stored_segments(source).count(),
    }


def mark_base_backup_wal(source: Source) -> list[int]:
    """Base backups whose needed WAL (start..end segment) is now all stored
    become complete. Returns their backup ids."""
    done: list[int] = []
    pending = BaseBackupWal.objects.filter(backup__source=source, wal_complete_at__isnull=True).exclude(end_segment="")
    for bounds in pending:
        if not missing_segments(source, bounds.start_segment, bounds.end_segment):
            BaseBackupWal.objects.filter(pk=bounds.pk).update(wal_complete_at=timezone.now())
            done.append(bounds.backup_id)
    return done


def mark_all_base_backups_wal() -> list[int]:
    """The tick's catch-up: base backups whose WAL is all stored become good
    (a base backup may finish after the last segment it needs was stored)."""
    from pitr.basebackups import complete_waiting  # marks them, audits, refreshes the source's health

    pending = BaseBackupWal.objects.filter(wal_complete_at__isnull=True).exclude(end_segment="")
    return [
        pk
        for source in Source.objects.filter(backups__base_wal__in=pending).distinct()
        for pk in complete_waiting(source, actor="monitor")
    ]


# --- health -----------------------------------------------------------------------


def archive_size_per_day(source: Source, days: int = 7) -> list[tuple[date, int]]:
    """[(date, stored bytes, files)] for the last `days` days, oldest first, zeros included."""
    today = timezone.localdate()
    since = today - timedelta(days=days - 1)
    rows = (
        WalSegment.objects.filter(source=source, received_at__date__gte=since)
        .annotate(day=TruncDate("received_at"))
        .values("day")
        .annotate(bytes=Sum("stored_bytes"))
    )
    totals = {row["day"]: row["bytes"] or 0 for row in rows}
    return [(since + timedelta(days=i), totals.get(since + timedelta(days=i), 0)) for i in range(days)]


def age_text(moment: datetime | None, now: datetime | None = None) -> str:
    """'4 s', '3 min 12 s', then catalog's words: the live RPO reads in seconds."""
    from catalog.text import duration_text

    if moment is None:
        return ""
    seconds = max(0, int(((now or timezone.now()) - moment).total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return duration_text(timedelta(seconds=seconds))


def refresh_slot_lag(protection: ContinuousProtection) -> int | None:
    """How much WAL the server holds for the slot that Strongroom has not
    confirmed: pg_current_wal_lsn() - the slot's restart_lsn."""
    if not protection.slot_name:
        return None
    params = dumpers.normalize_conninfo(protection.source.conninfo())
    try:
        with psycopg.connect(**params, connect_timeout=5, autocommit=True) as conn:
            row = conn.execute(
                "SELECT (pg_current_wal_lsn() - restart_lsn)::bigint FROM pg_replication_slots WHERE slot_name = %s",
                [protection.slot_name],
            ).fetchone()
    except psycopg.Error:
        return protection.slot_lag_bytes
    lag = row[0] if row else None
    ContinuousProtection.objects.filter(pk=protection.pk).update(slot_lag_bytes=lag)
    protection.slot_lag_bytes = lag
    return lag


def receiver_running(protection: ContinuousProtection, now: datetime | None = None) -> bool:
    now = now or timezone.now()
    beat = protection.receiver_heartbeat_at
    stale = timedelta(seconds=settings.WAL_RECEIVER_STALE_SECONDS)
    return bool(protection.receiver_pid and beat and now - beat < stale)


# --- retention --------------------------------------------------------------------


def prune_wal(actor: audit.Actor, source: Source, now: datetime | None = None) -> list[str]:
    """Deletes, from every destination, the segments no retained base backup
    and no restore within the recovery window can need: keeps each retained
    base backup's start..end, and everything from the start of the newest
    base backup taken before the window began (so that any moment in the
    window can be reached) — or of the oldest one, if none is that old.
    Without any base backup, keeps the window's segments. Returns the names pruned."""
    protection = ContinuousProtection.objects.filter(source=source).first()
    if protection is None:
        return []
    now = now or timezone.now()
    window_start = now - timedelta(days=protection.recovery_window_days)
    size = segment_size_of(source)
    anchor, bases = window_anchor(source, now)
    candidates = WalSegment.objects.filter(source=source, status=WalSegment.STORED, kind=WalSegment.SEGMENT)
    if anchor:
        keep_from = walfiles.segment_position(anchor.start_segment, size)
        needed = [
            (
                walfiles.segment_position(b.start_segment, size),
                walfiles.segment_position(b.end_segment or b.start_segment, size),
            )
            for b in bases
        ]
        doomed = [
            s
            for s in candidates.filter(position__lt=keep_from)  # so a position, never NULL
            if s.position is not None and not any(low <= s.position <= high for low, high in needed)
        ]
        reason = (
            f"older than base backup #{anchor.backup_id}, the first needed for the "
            f"{protection.recovery_window_days}-day recovery window, and needed by no retained base backup"
        )
    else:
        doomed = list(candidates.filter(received_at__lt=window_start))
        reason = (
            f"received before the {protection.recovery_window_days}-day recovery window, with no base backup needing it"
        )
    doomed = [segment for segment in doomed if delete_objects(segment)]  # the rest: next night
    for segment in doomed:
        segment.status, segment.pruned_at, segment.prune_reason = WalSegment.PRUNED, now, reason[:300]
        segment.save(update_fields=["status", "pruned_at", "prune_reason"])
    if doomed:
        names = sorted(s.name for s in doomed)
        with transaction.atomic():
            audit.record(
                actor,
                "pitr.prune_wal",
                protection,
                {"pruned": len(names), "first": names[0], "last": names[-1], "reason": reason},
            )
    return [s.name for s in doomed]


def prune_all_wal(actor: audit.Actor = "retention") -> dict[int, int]:
    return {p.source_id: len(prune_wal(actor, p.source)) for p in ContinuousProtection.objects.select_related("source")}

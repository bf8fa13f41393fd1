"""Catalog rebuild: bring the history back from the manifests in a destination.

After the metadata database is lost, every stored object still has its signed
manifest beside it. Each manifest is authenticated with the master key it
names before anything is imported, its fields must make sense, the object's
size and SHA-256 must match, and a backup already in the catalog (same
checksum and key) is never duplicated, so importing twice changes nothing.

Pins and legal holds come back too: from the hold record beside the manifest
when a pin changed after the backup (catalog/holds.py), else from the
manifest itself. A rebuilt catalog that forgot a pin would let retention
prune a safety backup.

So do plans, once every destination is read: a backup belongs to the plan its
manifest names, made again (paused) from the newest manifest that describes
it when the catalog has no such plan. A plan-less backup is one that
retention never prunes, so storage would grow for ever.
"""

import contextlib
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.management.color import no_style
from django.db import DataError, IntegrityError, connection, transaction
from django.utils import timezone

from catalog import audit, holds, keyring, registry, retention, services
from catalog.alerts import hooks as monitor
from catalog.engine import crypto, manifest
from catalog.engine.compression import LEVELS_BEFORE_RECORDED
from catalog.engine.errors import EngineError
from catalog.engine.storage.base import Storage, check_key
from catalog.models import (
    BACKUP_FORMAT_CHOICES,
    COMPRESSION_CHOICES,
    COMPRESSION_LEVELS,
    ENGINE_CHOICES,
    FORMATS_BY_ENGINE,
    AuditEvent,
    Backup,
    BackupPlan,
    Copy,
    Destination,
    Key,
    Source,
)
from catalog.schedules import sync_plan_schedule, validate_cron
from catalog.text import count_text

# user@host:port/dbname, as Source.target_display() gives a PostgreSQL or MariaDB source.
PG_TARGET = re.compile(r"^(?P<user>[^@/]*)@(?P<host>[^:/]+):(?P<port>\d+)/(?P<dbname>.+)$")
# A real manifest is a few kilobytes (tens with thousands of tables); a bigger
# file with the name is not read into memory.
MAX_MANIFEST_BYTES = 16 << 20
BIGGEST = 2**63 - 1  # the database's bigint


@dataclass
class ImportReport:
    imported: list[int] = field(default_factory=list)  # new backups
    attached: list[int] = field(default_factory=list)  # a further copy of a known backup
    unchanged: list[int] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)
    # (key, what was imported without): e.g. an unreadable hold record
    notes: list[tuple[str, str]] = field(default_factory=list)
    error: str = ""  # the destination itself could not be read

    def summary(self) -> str:
        if self.error:
            return f"not read: {self.error}"
        copies = "copy" if len(self.attached) == 1 else "copies"
        return (
            f"{len(self.imported)} imported, {len(self.attached)} {copies} added, "
            f"{len(self.unchanged)} already known, {len(self.refused)} refused"
        )


@dataclass
class RebuildReport:
    imports: list[tuple[Destination, ImportReport]]
    plans: list["PlanOutcome"]
    sources: list[Source]  # the sources made again, without their passwords

    def lines(self) -> list[str]:
        """What the administrator does next, in words (after each destination's summary)."""
        lines = [outcome.describe() for outcome in self.plans if outcome.describe()]
        lines += [
            f"Source {source.name}: recreated without its password; set it (Sources, Edit) before resuming its plans."
            for source in self.sources
            if source.engine != "sqlite"
        ]
        return lines


def rebuild(actor: audit.Actor, destinations: Iterable[Destination]) -> RebuildReport:
    """Imports the backups of every destination, then gives them their plans:
    a plan is made again from the newest manifest of any destination."""
    sources_before = set(Source.objects.values_list("pk", flat=True))
    found: dict[tuple[int, str], PlanFound] = {}  # {(source id, plan name): PlanFound}
    imports = [(destination, import_from(actor, destination, found)) for destination in destinations]
    plans = [settle_plan(actor, plan_found) for plan_found in found.values()]
    return RebuildReport(imports, plans, list(Source.objects.exclude(pk__in=sources_before)))


def rebuild_from(actor: audit.Actor, destination: Destination) -> ImportReport:
    """rebuild() from one destination: its ImportReport."""
    return rebuild(actor, [destination]).imports[0][1]


def import_from(
    actor: audit.Actor, destination: Destination, found: dict[tuple[int, str], "PlanFound"]
) -> ImportReport:
    """Imports every authenticated backup found in the destination, and notes
    in `found` the plans their manifests name."""
    report = ImportReport()
    if problem := destination.elsewhere_text():  # its manifests are on that host's disk only
        report.error = (
            f"{problem}. Run manage.py rebuild_catalog --destination '{destination.name}' on {destination.host}."
        )
        return report
    try:
        storage = destination.storage()
        sizes = storage.list_sizes()
    except EngineError as exc:
        report.error = str(exc)
        return report
    for manifest_key in sorted(k for k in sizes if k.endswith(manifest.SUFFIX)):
        object_key = manifest_key[: -len(manifest.SUFFIX)]
        try:
            if sizes[manifest_key] > MAX_MANIFEST_BYTES:
                raise Unimportable(f"the manifest has {sizes[manifest_key]} bytes, too many for a manifest")
            data = authentic_manifest(storage, manifest_key)
            check_fields(data, object_key)
            if object_key not in sizes:
                raise Unimportable("its object is missing")
            if sizes[object_key] != data["stored_bytes"]:
                raise Unimportable(
                    f"the object has {sizes[object_key]} bytes, the manifest says {data['stored_bytes']}"
                )
            if not known_copy(destination, data):
                check_object(storage, object_key, data)
            hold = hold_state(storage, sizes, manifest_key, data, report)
            try:
                outcome, backup = import_backup(actor, destination, object_key, manifest_key, data, hold)
            except (DataError, IntegrityError) as exc:  # rolled back with the import's transaction
                raise Unimportable(f"the catalog cannot store what the manifest says ({exc})") from exc
        except Unimportable as exc:
            report.refused.append((manifest_key, str(exc)))
            continue
        getattr(report, outcome).append(backup.pk)
        note_plan(found, backup, destination, data)
    if report.imported:
        reset_id_sequences()
    return report


class Unimportable(Exception):
    pass


def authentic_manifest(storage: Storage, manifest_key: str) -> manifest.Manifest:
    try:
        data = manifest.loads(storage.get_bytes(manifest_key))
    except (EngineError, ValueError) as exc:
        raise Unimportable(f"the manifest cannot be read ({exc})") from exc
    key_id = str(data.get("manifest_key_id", ""))
    try:
        master = keyring.master_key(key_id)
    except keyring.KeyUnavailable as exc:
        raise Unimportable(f"{exc}; put the key file there to import it") from exc
    if not manifest.verify_manifest(data, crypto.derive_manifest_key(master)):
        raise Unimportable("the manifest's signature does not verify: it was changed or is not ours")
    return data


def hold_state(
    storage: Storage, sizes: Mapping[str, int], manifest_key: str, data: manifest.Manifest, report: ImportReport
) -> holds.HoldState:
    """This destination's word on the pin and hold: its hold record if it has
    a trustworthy one, else the manifest's own fields. An untrustworthy record
    never stops the import (the backup itself is sound); it is reported."""
    fields = holds.manifest_hold(data)  # checked with the other fields already
    hold_key = manifest.hold_key_for(manifest_key)
    if hold_key in sizes:
        try:
            record = holds.read_hold_record(storage, hold_key, sizes[hold_key], data)
        except holds.HoldUnreadable as exc:
            report.notes.append((hold_key, f"hold record not used, the manifest's pin and hold are: {exc}"))
        else:
            if fields["hold_changed_at"] is None or holds.newer(record, fields["hold_changed_at"]):
                fields = record
    return fields


def register_keys(data: manifest.Manifest) -> None:
    """The key that signed the manifest, the key that sealed the object, and
    those a key rotation wrapped its data key for."""
    encryption = data.get("encryption") or {}
    for key_id in {data["manifest_key_id"], encryption.get("key_id"), *(encryption.get("key_wraps") or {})} - {
        None,
        "",
    }:
        with contextlib.suppress(keyring.KeyUnavailable):  # importable; restorable once one of its keys is there
            register_key(key_id, keyring.master_key(key_id))


def check_fields(data: manifest.Manifest, object_key: str) -> None:
    """A signed manifest comes from a holder of the key, but perhaps from another
    version or a bug: what the catalog stores is checked before any row is written."""

    def whole(name: str, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= BIGGEST:
            raise Unimportable(f"the manifest's {name} is not a count the catalog can hold: {str(value)[:40]!r}")

    if data.get("object_key") != object_key:
        raise Unimportable(f"the manifest describes {str(data.get('object_key'))[:200]!r}, not the object beside it")
    if not (isinstance(data.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", data["sha256"])):
        raise Unimportable("the manifest's sha256 is not a SHA-256 digest")
    whole("stored_bytes", data.get("stored_bytes"))
    whole("raw_bytes", data.get("raw_bytes") or 0)
    whole("backup_id", data.get("backup_id") or 0)
    counts = data.get("table_counts") or {}
    if not isinstance(counts, dict):
        raise Unimportable("the manifest's table_counts is not a table of counts")
    for table, rows in counts.items():
        whole(f"row count of {table[:100]}", rows)
    if data.get("format") not in dict(BACKUP_FORMAT_CHOICES) or data.get("compression") not in dict(
        COMPRESSION_CHOICES
    ):
        raise Unimportable(
            f"the manifest names an unknown format {str(data.get('format'))[:40]!r} "
            f"or compression {str(data.get('compression'))[:40]!r}"
        )
    source = data.get("source")
    if not isinstance(source, dict) or source.get("engine") not in dict(ENGINE_CHOICES):
        raise Unimportable("the manifest does not name a PostgreSQL, MariaDB/MySQL or SQLite source")
    encryption = data.get("encryption") or {}
    if not (
        isinstance(encryption, dict)
        and isinstance(encryption.get("key_id") or "", str)
        and isinstance(encryption.get("key_wraps") or {}, dict)
    ):
        raise Unimportable("the manifest's encryption block is not understood")
    try:
        check_key(object_key)
        for name in ("created_at", "started_at", "finished_at", "locked_until", "keep_until"):
            parse_time(data.get(name))
    except (EngineError, TypeError, ValueError) as exc:
        raise Unimportable(f"the manifest cannot be used ({exc})") from exc
    if not isinstance(data.get("label") or "", str):
        raise Unimportable("the manifest's label is not text")
    if not isinstance(data.get("plan") or "", str):
        raise Unimportable("the manifest's plan is not a name")
    imported = data.get("imported") or {}
    if not isinstance(imported, dict) or not all(isinstance(value or "", str) for value in imported.values()):
        raise Unimportable("the manifest's imported block is not understood")
    try:
        holds.manifest_hold(data)
    except holds.HoldUnreadable as exc:
        raise Unimportable(f"the manifest's hold fields cannot be used ({exc})") from exc


def known_copy(destination: Destination, data: manifest.Manifest) -> bool:
    return Copy.objects.filter(
        destination=destination, backup__sha256=data["sha256"], backup__object_key=data["object_key"]
    ).exists()


def check_object(storage: Storage, object_key: str, data: manifest.Manifest) -> None:
    """Reads the whole object: a damaged one, or another file under its name,
    must not enter the catalog as a good backup."""
    digest = hashlib.sha256()
    try:
        for chunk in storage.open_reader(object_key):
            digest.update(chunk)
    except EngineError as exc:
        raise Unimportable(f"the object cannot be read ({exc})") from exc
    if digest.hexdigest() != data["sha256"]:
        raise Unimportable("the object's SHA-256 differs from its manifest's: it is damaged or another file")


def register_key(key_id: str, master: bytes) -> None:
    Key.objects.get_or_create(
        key_id=key_id,
        defaults={"fingerprint": crypto.key_fingerprint(master), "is_active": False, "retired_at": timezone.now()},
    )


@transaction.atomic
def import_backup(
    actor: audit.Actor,
    destination: Destination,
    object_key: str,
    manifest_key: str,
    data: manifest.Manifest,
    hold: holds.HoldState,
) -> tuple[str, Backup]:
    register_keys(data)
    backup = (
        Backup.objects.select_for_update(no_key=True)
        .filter(sha256=data["sha256"], object_key=data["object_key"])
        .first()
    )
    if backup is None:
        backup = create_backup_from(actor, data, hold)
        outcome = "imported"
    elif backup.copies.filter(destination=destination).exists():
        return "unchanged", backup
    else:
        outcome = "attached"
        # The copies of one backup may disagree when writing a pin's record to
        # one destination failed: the newer state is the one that was meant.
        if holds.newer(hold, backup.hold_changed_at):
            set_hold(backup, hold)
            backup.save(update_fields=["pinned", "legal_hold", "hold_reason", "hold_changed_at"])
    copy = Copy.objects.create(
        backup=backup,
        destination=destination,
        key=object_key,
        manifest_key=manifest_key,
        size=data["stored_bytes"],
        sha256=data["sha256"],
        status=Copy.DURABLE,
        durable_at=backup.finished_at,
        locked_until=parse_time(data.get("locked_until")),
    )
    audit.record(
        actor,
        "backup.import",
        backup,
        {"destination": destination.name, "key": copy.key, "hold": backup.hold() or "none"},
    )
    return outcome, backup


def set_hold(backup: Backup, hold: holds.HoldState) -> None:
    backup.pinned, backup.legal_hold = hold["pinned"], hold["legal_hold"]
    backup.hold_reason, backup.hold_changed_at = hold["hold_reason"], hold["hold_changed_at"]


def create_backup_from(actor: audit.Actor, data: manifest.Manifest, hold: holds.HoldState) -> Backup:
    """The backup as its manifest describes it, in the catalog's plan of the
    name its manifest gives, if there is one; else settle_plan gives it one
    once every destination is read."""
    source = source_for(actor, data["source"])
    plan = BackupPlan.objects.filter(name=data.get("plan") or "", source=source).first()
    encryption = data.get("encryption") or {}
    started, finished = parse_time(data.get("started_at")), parse_time(data.get("finished_at"))
    wanted_id = data.get("backup_id")
    backup = Backup(
        # The old id when it is free, so audit events and notes that name it still match.
        pk=wanted_id if wanted_id and not Backup.objects.filter(pk=wanted_id).exists() else None,
        source=source,
        plan=plan,
        label=data.get("label") or "",
        trigger=data.get("trigger") or "manual",
        keep_until=parse_time(data.get("keep_until")),
        status=Backup.SUCCEEDED,
        format=data["format"],
        compression=data["compression"],
        compression_level=compression_level_of(data),
        encrypted=bool(encryption),
        key_id=newest_key_id(data),
        key_wraps=encryption.get("key_wraps") or {},
        object_key=data["object_key"],
        raw_bytes=data.get("raw_bytes") or 0,
        stored_bytes=data["stored_bytes"],
        sha256=data["sha256"],
        server_version=data.get("server_version") or "",
        tool_version=data.get("tool_version") or "",
        table_counts=data.get("table_counts") or {},
        database_defaults=database_defaults_of(data),
        partitions=partitions_of(data),
        roles=[role for role in data.get("roles") or [] if isinstance(role, str)],
        globals_sha256=data.get("globals_sha256") or "",
        # Older manifests have no created_at (the time it was queued): then its start.
        created_at=parse_time(data.get("created_at")) or started or finished or timezone.now(),
        started_at=started,
        finished_at=finished,
        log=f"Imported from its manifest by the catalog rebuild on {timezone.now():%Y-%m-%d %H:%M}.\n",
        **imported_fields(data),
    )
    set_hold(backup, hold)
    backup.save(force_insert=True)
    if data.get("wal"):  # a physical base backup: the WAL it needs, so it can become good again
        registry.steps_of(backup.format).imported(backup, data["wal"])
    return backup


def imported_fields(data: manifest.Manifest) -> dict[str, Any]:
    """A dump imported from elsewhere stays marked so (catalog/imports.py);
    who imported it, when that account is still here."""
    imported = data.get("imported") or {}
    if not imported:
        return {}
    return {
        "imported_by": User.objects.filter(username=imported.get("by") or "").first(),
        "imported_from": (imported.get("from") or "")[:300],
        "imported_format": (imported.get("format") or "")[:200],
    }


def newest_key_id(data: manifest.Manifest) -> str:
    """After a key rotation the manifest is signed by the new key, which has a
    wrap of the data key: that key opens the backup from now on."""
    encryption = data.get("encryption") or {}
    if data.get("manifest_key_id") in (encryption.get("key_wraps") or {}):
        return data["manifest_key_id"]
    return encryption.get("key_id", "")


def source_for(actor: audit.Actor, identity: Mapping[str, Any]) -> Source:
    """The catalog's source for a manifest's source identity, recreated if gone."""
    source = (
        Source.objects.filter(slug=identity.get("slug")).first()
        or Source.objects.filter(name=identity.get("name")).first()
    )
    if source:
        return source
    source = Source(name=identity.get("name") or identity.get("slug") or "Imported source", engine=identity["engine"])
    source.slug = identity.get("slug") or ""
    target = identity.get("target") or ""
    if source.engine == "sqlite":
        source.sqlite_path = target
    elif match := PG_TARGET.match(target):
        source.user, source.host, source.port, source.dbname = (
            match["user"],
            match["host"],
            int(match["port"]),
            match["dbname"],
        )
    # A password or DSN never reaches a manifest; an administrator sets it again.
    return services.save_source(actor, source)


def parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def reset_id_sequences() -> None:
    """Backups were created with their old ids; new ones must come after them."""
    with connection.cursor() as cursor:
        for sql in connection.ops.sequence_reset_sql(no_style(), [Backup]):
            cursor.execute(sql)


def partitions_of(data: manifest.Manifest) -> dict[str, list[str]]:
    """The manifest's partitioned parents, when they are what they should be
    (older manifests have none; a restore then chooses partitions by name)."""
    partitions = data.get("partitions")
    if isinstance(partitions, dict) and all(
        isinstance(parent, str) and isinstance(leaves, list) and all(isinstance(leaf, str) for leaf in leaves)
        for parent, leaves in partitions.items()
    ):
        return partitions
    return {}


def database_defaults_of(data: manifest.Manifest) -> dict[str, str]:
    """The source database's character set and collation (MariaDB/MySQL
    manifests), when they are names; else none, and a restore uses utf8mb4."""
    defaults = data.get("database_defaults")
    if isinstance(defaults, dict) and all(
        key in ("charset", "collation") and isinstance(value, str) and value.isidentifier()
        for key, value in defaults.items()
    ):
        return defaults
    return {}


def compression_level_of(data: manifest.Manifest) -> int | None:
    """The level the manifest says its backup was compressed at. Older manifests
    do not say: every backup was compressed at the default level of the time
    then (LEVELS_BEFORE_RECORDED). None
    when not compressed, or for a level its compression does not have."""
    if "compression_level" not in data:
        return LEVELS_BEFORE_RECORDED.get(data["compression"])
    level, bounds = data["compression_level"], COMPRESSION_LEVELS.get(data["compression"])
    if bounds and isinstance(level, int) and not isinstance(level, bool) and bounds[0] <= level <= bounds[1]:
        return level
    return None


# --- plans ------------------------------------------------------------------

# A plan whose manifests do not describe it (written before they did): its
# schedule and retention are unknown, and a guessed rule could prune backups
# the real one kept, so it keeps every backup until an administrator sets one.
KEEP_EVERYTHING = {"retention_mode": retention.DAYS, "keep_days": 36500, "keep_manual_days": 36500}  # a hundred years


@dataclass
class PlanFound:
    """What the manifests read say about one plan of one source."""

    source: Source
    name: str
    backups: set[int] = field(default_factory=set)
    # {pk: Destination} holding copies of its backups
    destinations: dict[int, Destination] = field(default_factory=dict)
    # (time, backup id, format, compression, encrypted) of its newest backup
    newest: tuple[datetime, int, str, str, bool] | None = None
    # (time, backup id, plan_definition) of its newest manifest that has one
    described: tuple[datetime, int, dict[str, Any]] | None = None


def note_plan(
    found: dict[tuple[int, str], PlanFound], backup: Backup, destination: Destination, data: manifest.Manifest
) -> None:
    """Remembers which plan the manifest names, for settle_plan."""
    name = data.get("plan")
    if not name:
        return  # a backup of no plan
    if (backup.source_id, name) not in found:
        found[backup.source_id, name] = PlanFound(backup.source, name)
    plan_found = found[backup.source_id, name]
    plan_found.backups.add(backup.pk)
    plan_found.destinations.setdefault(destination.pk, destination)
    at = backup.finished_at or backup.created_at
    if plan_found.newest is None or at >= plan_found.newest[0]:
        plan_found.newest = (at, backup.pk, data["format"], data["compression"], bool(data.get("encryption")))
    definition = data.get("plan_definition")
    if isinstance(definition, dict) and (plan_found.described is None or at >= plan_found.described[0]):
        plan_found.described = (at, backup.pk, definition)


@dataclass
class PlanOutcome:
    found: PlanFound
    action: str  # recreated, linked, unchanged, taken, deleted, failed
    backups: int = 0  # how many backups it was given
    plan: BackupPlan | None = None
    detail: str = ""

    def describe(self) -> str:
        """A line for the administrator, or "" when nothing happened."""
        plan, backups = f"Plan {self.found.name} ({self.found.source.name})", count_text(self.backups, "backup")
        belong, stay = ("belongs", "stays") if self.backups == 1 else ("belong", "stay")
        if self.action == "recreated":
            assert self.plan is not None  # give_plan() always passes the plan it recreated
            destinations = ", ".join(d.name for d in self.plan.destinations.all()) or "none"
            return (
                f"{plan}: recreated PAUSED {self.detail}; {backups} {belong} to it again; destinations: "
                f"{destinations}. Review it, then resume it."
            )
        if self.action == "linked":
            return f"{plan}: {backups} handed to the existing plan."
        if self.action == "taken":
            return (
                f"{plan}: {backups} {stay} without a plan, because the name belongs to a plan of {self.detail}. "
                "Rename that plan and run the rebuild again."
            )
        if self.action == "deleted":
            return (
                f"{plan}: the plan was deleted ({self.detail}); {backups} {stay} without a plan, and retention "
                "does not prune them. Make a plan of that name for this source and run the rebuild again "
                "to hand them to it."
            )
        if self.action == "failed":
            return f"{plan}: not made again ({self.detail}); {backups} {stay} without a plan."
        return ""


def settle_plan(actor: audit.Actor, found: PlanFound) -> PlanOutcome:
    """Gives the plan-less backups of `found` the plan their manifests name:
    the catalog's plan of that name and source, else the plan made again."""
    try:
        with transaction.atomic():
            return give_plan(actor, found)
    except (DataError, IntegrityError) as exc:
        return PlanOutcome(found, "failed", len(found.backups), detail=str(exc).strip()[:200])


def give_plan(actor: audit.Actor, found: PlanFound) -> PlanOutcome:
    planless = Backup.objects.filter(pk__in=found.backups, plan__isnull=True)
    count = planless.count()
    if not count:
        # All known with a plan: a healthy catalog read again, or a plan renamed since.
        return PlanOutcome(found, "unchanged")
    plan = BackupPlan.objects.filter(name=found.name).first()
    if plan is not None and plan.source_id != found.source.pk:
        return PlanOutcome(found, "taken", count, detail=str(plan.source))
    if plan is None:
        deleted = AuditEvent.objects.filter(action="plan.delete", changes__name=found.name).last()
        if deleted:  # an administrator's decision, which the rebuild does not undo
            when = f"by {deleted.actor_label} on {deleted.created_at:%Y-%m-%d}"
            return PlanOutcome(found, "deleted", count, detail=when)
        plan, detail = recreate_plan(actor, found, count)
        outcome = PlanOutcome(found, "recreated", count, plan, detail)
    else:
        audit.record(actor, "plan.adopt", plan, {"backups": count})
        outcome = PlanOutcome(found, "linked", count, plan)
    planless.update(plan=plan)
    monitor.plan_changed(plan)
    return outcome


def recreate_plan(actor: audit.Actor, found: PlanFound, count: int) -> tuple[BackupPlan, str]:
    """The plan as its newest manifest describes it, or with the defaults when
    none does, PAUSED: its source may have no password yet, and a plan made
    from files should be reviewed before it runs again. Retention applies to a
    paused plan too, by the rule it had. Returns (plan, how it was made, in words)."""
    plan, problem = described_plan(found)
    if plan is None:
        plan, was_enabled = default_plan(found), None
        detail = (
            f"with the rebuild's defaults ({problem}): set its schedule and retention, which keeps every "
            "backup until you do"
        )
    else:
        assert found.described is not None  # described_plan() made the plan from it
        was_enabled = plan.enabled  # as the manifest says, checked
        detail = f"as the manifest of backup {found.described[1]} describes it" + (
            "" if was_enabled else ", where it was paused already"
        )
    plan.enabled = False
    plan.save()
    plan.destinations.set(found.destinations.values())
    sync_plan_schedule(plan)  # none while paused
    audit.record(
        actor,
        "plan.recreate",
        plan,
        {
            **{name: getattr(plan, name) for name in BackupPlan.DEFINITION_FIELDS},
            "destinations": sorted(d.name for d in found.destinations.values()),
            "backups": count,
            "was_enabled": was_enabled,
            "from": detail,
        },
    )
    return plan, detail


def described_plan(found: PlanFound) -> tuple[BackupPlan | None, str]:
    """(unsaved plan, "") from the newest manifest's description, checked as
    the plan form checks it; (None, why not) when there is none to use."""
    if found.described is None:
        return None, "its manifests are older than the plan's description in them"
    definition = found.described[2]
    # A field the description lacks came after its manifest was written
    # (compression_level, dump_jobs): it takes the model's default, as the
    # migration that added it gave every plan of the time.
    plan = BackupPlan(
        source=found.source,
        name=found.name,
        **{name: definition[name] for name in BackupPlan.DEFINITION_FIELDS if name in definition and name != "name"},
    )
    try:
        plan.created_at = parse_time(definition.get("created_at")) or plan.created_at
        plan.full_clean(exclude=["source"], validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        fields = "; ".join(f"{name}: {' '.join(errors)}" for name, errors in exc.message_dict.items())
        return None, f"the manifest's description of it cannot be used: {fields}"[:300]
    except (TypeError, ValueError) as exc:
        return None, f"the manifest's description of it cannot be used: {exc}"[:300]
    problem = validate_cron(plan.schedule)
    if plan.format not in FORMATS_BY_ENGINE[found.source.engine]:
        problem = f"format {plan.format} is not one of a {found.source.engine} source"
    if not (table_choice(plan.export_tables) and table_choice(plan.export_sets)):
        problem = "its table choice is not understood"
    if problem:
        return None, f"the manifest's description of it cannot be used: {problem}"
    return plan, ""


def table_choice(value: object) -> bool:
    """An export plan's tables or named sets: a list of {"…": "text"}."""
    return isinstance(value, list) and all(
        isinstance(item, dict) and all(isinstance(text, str) for text in item.values()) for item in value
    )


def default_plan(found: PlanFound) -> BackupPlan:
    """A plan the manifests do not describe: stored as its newest backup was,
    with the model's defaults and KEEP_EVERYTHING otherwise."""
    assert found.newest is not None  # note_plan() sets it with the first backup
    _, _, fmt, compression, encrypted = found.newest
    return BackupPlan(
        source=found.source, name=found.name, format=fmt, compression=compression, encrypt=encrypted, **KEEP_EVERYTHING
    )

"""Catalog rebuild: bring the history back from the manifests in a destination.

After the metadata database is lost, every stored object still has its signed
manifest beside it. Each manifest is authenticated with the master key it
names before anything is imported, the object's size must match, and a
backup already in the catalog (same checksum and key) is never duplicated,
so importing twice changes nothing.
"""

import re
from dataclasses import dataclass, field
from datetime import datetime

from django.core.management.color import no_style
from django.db import connection, transaction
from django.utils import timezone

from catalog import audit, keyring, services
from catalog.engine import crypto, manifest
from catalog.engine.errors import EngineError
from catalog.models import Backup, BackupPlan, Copy, Key, Source

PG_TARGET = re.compile(r"^(?P<user>[^@/]*)@(?P<host>[^:/]+):(?P<port>\d+)/(?P<dbname>.+)$")


@dataclass
class ImportReport:
    imported: list = field(default_factory=list)  # new backups
    attached: list = field(default_factory=list)  # a further copy of a known backup
    unchanged: list = field(default_factory=list)
    refused: list = field(default_factory=list)  # (key, reason)

    def summary(self):
        copies = "copy" if len(self.attached) == 1 else "copies"
        return (
            f"{len(self.imported)} imported, {len(self.attached)} {copies} added, "
            f"{len(self.unchanged)} already known, {len(self.refused)} refused"
        )


def rebuild_from(actor, destination):
    """Imports every authenticated backup found in the destination."""
    report = ImportReport()
    storage = destination.storage()
    sizes = storage.list_sizes()
    for manifest_key in sorted(k for k in sizes if k.endswith(manifest.SUFFIX)):
        object_key = manifest_key[: -len(manifest.SUFFIX)]
        try:
            data = authentic_manifest(storage, manifest_key)
            if object_key not in sizes:
                raise Unimportable("its object is missing")
            if sizes[object_key] != data.get("stored_bytes"):
                raise Unimportable(f"the object has {sizes[object_key]} bytes, the manifest says {data.get('stored_bytes')}")
            outcome, backup = import_backup(actor, destination, object_key, manifest_key, data)
        except Unimportable as exc:
            report.refused.append((manifest_key, str(exc)))
            continue
        getattr(report, outcome).append(backup.pk)
    if report.imported:
        reset_id_sequences()
    return report


class Unimportable(Exception):
    pass


def authentic_manifest(storage, manifest_key):
    try:
        data = manifest.loads(storage.get_bytes(manifest_key))
    except (EngineError, ValueError) as exc:
        raise Unimportable(f"the manifest cannot be read ({exc})")
    key_id = data.get("manifest_key_id", "")
    try:
        master = keyring.master_key(key_id)
    except keyring.KeyUnavailable as exc:
        raise Unimportable(f"{exc}; put the key file there to import it")
    if not manifest.verify_manifest(data, crypto.derive_manifest_key(master)):
        raise Unimportable("the manifest's signature does not verify: it was changed or is not ours")
    register_key(key_id, master)
    encryption = data.get("encryption") or {}
    # The key that sealed the object, and those a key rotation wrapped its data key for.
    for other in {encryption.get("key_id"), *(encryption.get("key_wraps") or {})} - {None, "", key_id}:
        try:
            register_key(other, keyring.master_key(other))
        except keyring.KeyUnavailable:
            pass  # importable; restorable once one of its keys is there
    return data


def register_key(key_id, master):
    Key.objects.get_or_create(
        key_id=key_id,
        defaults={"fingerprint": crypto.key_fingerprint(master), "is_active": False, "retired_at": timezone.now()},
    )


@transaction.atomic
def import_backup(actor, destination, object_key, manifest_key, data):
    backup = Backup.objects.filter(sha256=data["sha256"], object_key=data["object_key"]).first()
    if backup is None:
        backup = create_backup_from(actor, data)
        outcome = "imported"
    elif backup.copies.filter(destination=destination).exists():
        return "unchanged", backup
    else:
        outcome = "attached"
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
    audit.record(actor, "backup.import", backup, {"destination": destination.name, "key": copy.key})
    return outcome, backup


def create_backup_from(actor, data):
    source = source_for(actor, data["source"])
    plan = BackupPlan.objects.filter(name=data.get("plan") or "", source=source).first()
    encryption = data.get("encryption") or {}
    started, finished = parse_time(data.get("started_at")), parse_time(data.get("finished_at"))
    wanted_id = data.get("backup_id")
    backup = Backup.objects.create(
        # The old id when it is free, so audit events and notes that name it still match.
        pk=wanted_id if wanted_id and not Backup.objects.filter(pk=wanted_id).exists() else None,
        source=source,
        plan=plan,
        label=data.get("label") or "",
        trigger=data.get("trigger") or "manual",
        status=Backup.SUCCEEDED,
        format=data["format"],
        compression=data["compression"],
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
        created_at=started or finished or timezone.now(),
        started_at=started,
        finished_at=finished,
        log=f"Imported from its manifest by the catalog rebuild on {timezone.now():%Y-%m-%d %H:%M}.\n",
    )
    if data.get("wal"):  # a physical base backup: the WAL it needs, so it can become good again
        from pitr.basebackups import import_wal_bounds

        import_wal_bounds(backup, data["wal"])
    return backup


def newest_key_id(data):
    """After a key rotation the manifest is signed by the new key, which has a
    wrap of the data key: that key opens the backup from now on."""
    encryption = data.get("encryption") or {}
    if data.get("manifest_key_id") in (encryption.get("key_wraps") or {}):
        return data["manifest_key_id"]
    return encryption.get("key_id", "")


def source_for(actor, identity):
    """The catalog's source for a manifest's source identity, recreated if gone."""
    source = Source.objects.filter(slug=identity.get("slug")).first() or Source.objects.filter(
        name=identity.get("name")
    ).first()
    if source:
        return source
    source = Source(name=identity.get("name") or identity.get("slug") or "Imported source", engine=identity["engine"])
    source.slug = identity.get("slug") or ""
    target = identity.get("target") or ""
    if source.engine == "sqlite":
        source.sqlite_path = target
    elif match := PG_TARGET.match(target):
        source.user, source.host, source.port, source.dbname = (
            match["user"], match["host"], int(match["port"]), match["dbname"]
        )
    # A password or DSN never reaches a manifest; an administrator sets it again.
    return services.save_source(actor, source)


def parse_time(text):
    return datetime.fromisoformat(text) if text else None


def reset_id_sequences():
    """Backups were created with their old ids; new ones must come after them."""
    with connection.cursor() as cursor:
        for sql in connection.ops.sequence_reset_sql(no_style(), [Backup]):
            cursor.execute(sql)

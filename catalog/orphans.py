"""Things in a destination that the catalog does not know: objects left by a
crash, manifests whose object is gone, partial files and unfinished S3
multipart uploads. Scanning only reads; removal happens on request, item by
item, and only for items a fresh scan still finds.

An object with its manifest beside it is a whole backup, most likely from a
lost catalog: it is offered for import (catalog rebuild) and never removed
unless someone picks it explicitly.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from django.db import transaction

from catalog import audit, backup_globals, holds
from catalog.engine import manifest
from catalog.engine.errors import EngineError, StorageError
from catalog.engine.storage.base import PROBE_KEY, Partial, Storage
from catalog.models import Backup, Copy, Destination

OBJECT, MANIFEST, BACKUP, PARTIAL, HOLD = "object", "manifest", "backup", "partial", "hold"
KIND_TEXT = {
    BACKUP: "A whole backup (object and manifest) the catalog does not know: import it with the catalog rebuild.",
    OBJECT: "An object without a manifest, e.g. left by a crash.",
    MANIFEST: "A manifest whose object is gone.",
    PARTIAL: "An unfinished write (a partial file or an incomplete multipart upload).",
    HOLD: "A record that belongs beside a backup's manifest (its pin or hold, its roles) whose backup is gone.",
}


@dataclass
class Orphan:
    kind: str
    key: str
    size: int | None = None
    partial: Partial | None = None  # the storage's own description, for removal

    @property
    def token(self) -> str:
        upload = self.partial.get("upload_id", "") if self.partial else ""
        return f"{self.kind}:{self.key}:{upload}"

    def explain(self) -> str:
        return KIND_TEXT[self.kind]


def known_keys(destination: Destination) -> set[str]:
    """Keys the catalog accounts for: live copies and their manifests, and
    everything of a backup still being written."""
    keys: set[str] = set()
    for copy in destination.copies.exclude(status__in=[Copy.PRUNED, Copy.FAILED]):
        keys.add(copy.key)
        keys.add(copy.manifest_key or manifest.manifest_key_for(copy.key))
        keys.add(holds.hold_key(copy))
        keys.add(backup_globals.key_for(copy))
    return keys


def active_keys(destination: Destination) -> set[str]:
    """Object keys of backups running right now: their partial writes are not orphans."""
    return set(destination.copies.filter(backup__status__in=Backup.ACTIVE_STATUSES).values_list("key", flat=True))


def opened_here(destination: Destination) -> Storage:
    """The destination's storage; a folder on another host's disk is
    refused with where to go instead (the scan reads a directory listing,
    which only that host has)."""
    if problem := destination.elsewhere_text():
        raise StorageError(f"{problem}. Scan it from Strongroom's pages on {destination.host}, which can read it.")
    return destination.storage()


def scan(destination: Destination) -> list[Orphan]:
    storage = opened_here(destination)
    known, writing = known_keys(destination), active_keys(destination)
    sizes = storage.list_sizes()
    orphans: list[Orphan] = []
    for key, size in sorted(sizes.items()):
        if key in known or key == PROBE_KEY:
            continue
        companion = next(
            (suffix for suffix in manifest.COMPANION_SUFFIXES if key.endswith(manifest.SUFFIX + suffix)), None
        )
        if companion:
            # Part of a whole backup while its manifest is there (imported with it).
            base_manifest = key[: -len(companion)]
            if base_manifest not in sizes or base_manifest in known:
                orphans.append(Orphan(HOLD, key, size))
            continue
        if key.endswith(manifest.SUFFIX):
            base = key[: -len(manifest.SUFFIX)]
            if base not in sizes or base in known:
                orphans.append(Orphan(MANIFEST, key, size))
            continue  # a whole backup is listed once, under its object
        has_manifest = manifest.manifest_key_for(key) in sizes
        orphans.append(Orphan(BACKUP if has_manifest else OBJECT, key, size))
    for partial in storage.list_partials():
        if partial["base"] not in writing:
            orphans.append(Orphan(PARTIAL, partial["key"], partial.get("size"), partial))
    return orphans


def remove(actor: audit.Actor, destination: Destination, tokens: Iterable[str]) -> tuple[list[str], list[str]]:
    """Removes the chosen orphans; returns (removed keys, errors in words)."""
    chosen = set(tokens)
    storage = opened_here(destination)
    removed: list[str] = []
    errors: list[str] = []
    for orphan in scan(destination):
        if orphan.token not in chosen:
            continue
        try:
            if orphan.kind == PARTIAL:
                assert orphan.partial is not None  # scan() gives every partial its description
                storage.remove_partial(orphan.partial)
            else:
                for key in manifest.stored_keys(orphan.key) if orphan.kind == BACKUP else [orphan.key]:
                    storage.delete(key)
        except EngineError as exc:
            errors.append(f"{orphan.key}: {exc}")
            continue
        removed.append(orphan.key)
    if removed or errors:
        with transaction.atomic():
            audit.record(actor, "destination.orphans_removed", destination, {"removed": removed, "errors": errors})
    return removed, errors

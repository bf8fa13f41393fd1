"""Pins and legal holds in storage, so that a rebuilt catalog keeps them.

The manifest written with a backup already says whether it was pinned or held
then. A pin or hold that changes later is written to every durable copy as a
*hold record*: a small signed JSON object beside the manifest, at
`<manifest key>.hold`, naming the object and its SHA-256. A rebuild takes the
record over the manifest's own fields, and the newer record when two
destinations disagree.

Why a record beside the manifest rather than rewriting the manifest itself:
- The manifest is written once with the object and, on an immutable
  destination, locked with it: every rewrite would leave one more locked
  version in an Object Lock bucket that nobody can delete until the lock
  expires, and a pin is exactly the kind of thing that changes back and forth.
  The record is written without a lock: it is state, not evidence (the audit
  trail is the evidence), and the object itself stays locked whatever it says.
- Key rotation rewrites manifests too (read, add the new wrap, re-sign,
  write). A pin doing its own read-modify-write of the same manifest at the
  same time could write back the manifest without the new wrap, and once the
  old key is destroyed the backup could no longer be opened from storage
  alone. The hold record never touches the manifest, so neither can undo the
  other.
- A damaged or missing record loses only the hold state, never the backup:
  the rebuild then keeps the manifest's own fields and says so.
"""

import logging
from collections.abc import Mapping
from datetime import datetime
from functools import partial
from typing import Any, TypedDict

from django.db import transaction

from catalog import audit, keyring, queues
from catalog.engine import crypto, manifest
from catalog.engine.errors import EngineError
from catalog.engine.storage.base import Storage
from catalog.models import Backup, Copy

log = logging.getLogger(__name__)

# A hold record is a few hundred bytes; a bigger file under its name is not read.
MAX_RECORD_BYTES = 64 << 10


class HoldState(TypedDict):
    """A pin and hold as read back from a manifest or a hold record (checked_fields)."""

    pinned: bool
    legal_hold: bool
    hold_reason: str
    hold_changed_at: datetime | None


def hold_key(copy: Copy) -> str:
    return manifest.hold_key_for(copy.manifest_key or manifest.manifest_key_for(copy.key))


def hold_fields(backup: Backup) -> dict[str, Any]:
    """The hold state as the manifest and the hold record carry it."""
    return {
        "pinned": backup.pinned,
        "legal_hold": backup.legal_hold,
        "hold_reason": backup.hold_reason,
        "hold_changed_at": backup.hold_changed_at.isoformat() if backup.hold_changed_at else None,
    }


def signed_record(backup: Backup, copy: Copy) -> manifest.Manifest:
    key_id, master = keyring.active_key()
    record = manifest.build_hold_record(
        backup_id=backup.pk,
        object_key=copy.key,
        sha256=backup.sha256,
        pinned=backup.pinned,
        legal_hold=backup.legal_hold,
        hold_reason=backup.hold_reason,
        changed_at=backup.hold_changed_at.isoformat() if backup.hold_changed_at else None,
    )
    record["manifest_key_id"] = key_id
    return manifest.sign_manifest(record, crypto.derive_manifest_key(master))


def store_hold_state(actor: audit.Actor, backup_id: int, pass_on: bool = True) -> list[str]:
    """Writes the backup's current pin and hold to every durable copy.
    A copy in a folder on another host's disk gets it from that host: the
    write is queued for its own queue (`pass_on`), where it writes the state
    the backup has then.

    Called after the change has committed: a destination that cannot be
    written never undoes a pin in the catalog. Each failure is logged and
    audited (`backup.hold_not_stored`) and returned in words, for the page to
    show. The backup's row stays locked while the records are written, so two
    changes in quick succession reach storage in the order they were made:
    the later change waits for this write, then writes its own state."""
    failures: list[str] = []
    away: set[str] = set()
    with transaction.atomic():
        backup = Backup.objects.select_for_update(no_key=True).get(pk=backup_id)
        copies = backup.copies.filter(status=Copy.DURABLE).select_related("destination")
        for copy in copies:
            if pass_on and not copy.destination.reachable_here():
                away.add(copy.destination.host)
                continue
            try:
                data = manifest.dumps(signed_record(backup, copy))
                copy.destination.storage().put_bytes(hold_key(copy), data)
            except (EngineError, keyring.KeyUnavailable) as exc:
                failures.append(f"{copy.destination}: {exc}")
            except Exception as exc:  # the pin is committed; a bug here must not turn it into a 500
                log.exception("Writing the hold record of %s failed unexpectedly", copy)
                failures.append(f"{copy.destination}: unexpected error ({type(exc).__name__}); see the log")
        if failures:
            log.warning("The pin or hold of backup %s did not reach storage: %s", backup_id, "; ".join(failures))
            audit.record(actor, "backup.hold_not_stored", backup, {**hold_fields(backup), "errors": failures})
    for host in sorted(away):  # once the change is committed, for that host's worker to read
        transaction.on_commit(partial(pass_hold_state_on, host, backup_id))
    return failures


def pass_hold_state_on(host: str, backup_id: int) -> None:
    queues.enqueue_on_host(host, "catalog.tasks.store_hold_state", backup_id, task_name=f"hold-{backup_id}-{host}")


# --- reading, for the catalog rebuild ----------------------------------------


class HoldUnreadable(Exception):
    """A hold record that cannot be trusted; str() says why."""


def read_hold_record(storage: Storage, key: str, size: int, data: Mapping[str, Any]) -> HoldState:
    """The authenticated hold record at `key` for the manifest `data`, as hold
    fields; raises HoldUnreadable."""
    if size > MAX_RECORD_BYTES:
        raise HoldUnreadable(f"it has {size} bytes, too many for a hold record")
    try:
        record = manifest.loads(storage.get_bytes(key))
    except (EngineError, ValueError) as exc:
        raise HoldUnreadable(f"it cannot be read ({exc})") from exc
    try:
        master = keyring.master_key(str(record.get("manifest_key_id", "")))
    except keyring.KeyUnavailable as exc:
        raise HoldUnreadable(f"it cannot be checked: {exc}") from exc
    if not manifest.verify_manifest(record, crypto.derive_manifest_key(master)):
        raise HoldUnreadable("its signature does not verify: it was changed or is not ours")
    if record.get("kind") != manifest.HOLD_KIND:
        raise HoldUnreadable("it is not a hold record")
    if record.get("object_key") != data.get("object_key") or record.get("sha256") != data.get("sha256"):
        raise HoldUnreadable("it belongs to another backup")
    return checked_fields(record, "changed_at")


def manifest_hold(data: Mapping[str, Any]) -> HoldState:
    """The hold fields the manifest itself carries (none before they were added)."""
    return checked_fields(data, "hold_changed_at")


def checked_fields(data: Mapping[str, Any], stamp: str) -> HoldState:
    pinned, legal_hold, reason = data.get("pinned", False), data.get("legal_hold", False), data.get("hold_reason", "")
    if not (isinstance(pinned, bool) and isinstance(legal_hold, bool) and isinstance(reason or "", str)):
        raise HoldUnreadable("its pin, hold or reason is not understood")
    try:
        changed = datetime.fromisoformat(data[stamp]) if data.get(stamp) else None
    except (TypeError, ValueError) as exc:
        raise HoldUnreadable(f"its {stamp} is not a time") from exc
    if changed is not None and changed.tzinfo is None:
        raise HoldUnreadable(f"its {stamp} has no time zone")
    return {"pinned": pinned, "legal_hold": legal_hold, "hold_reason": (reason or "")[:300], "hold_changed_at": changed}


def newer(found: HoldState, known_changed_at: datetime | None) -> bool:
    """Whether hold fields `found` are newer than a catalog's state changed at `known_changed_at`."""
    changed = found["hold_changed_at"]
    return changed is not None and (known_changed_at is None or changed > known_changed_at)

"""Master keys: making a new one active (generated or imported), rotating to
it, and destroying a retired one.

A rotation never re-encrypts data. An object's header holds its data key
wrapped by the key that sealed it, and the header cannot change (its hash
authenticates every segment), so the rotation reads the header of one durable
copy (a ranged read of its first bytes), unwraps the data key with a key that
opens it, wraps it again with the new key and keeps that wrap in the catalog
(Backup.key_wraps) and in every copy's manifest (re-signed with the new key).
It also re-seals every stored connection secret with the new key. A backup is
either re-wrapped completely (every manifest, then the catalog) or left as it
was; running the rotation again finishes whatever is left.
"""

import base64
import binascii
import logging
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import TypedDict

from django.apps import apps
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from catalog import audit, holds, jobs, keyring, queues
from catalog.engine import crypto, manifest
from catalog.engine.errors import CorruptionError, EngineError
from catalog.errors import Refused
from catalog.models import Backup, BackupQuerySet, Copy, Key, KeyRotation, SealedSecrets

log = logging.getLogger(__name__)

# An encryption header is about a hundred bytes (magic, sizes, key id, wrap, nonce prefix).
HEAD_BYTES = 4096


class RewrapFailed(Exception):
    """This backup could not be re-wrapped; str() says why, without secrets."""


# --- which keys are still needed ------------------------------------------------


class KeyNeeds(TypedDict):
    """What needs one master key (see usage)."""

    backups: list[int]
    secrets: list[str]
    opens: int


def retained_encrypted_backups() -> BackupQuerySet:
    """Encrypted backups that still have a durable copy somewhere."""
    return (
        Backup.objects.filter(
            encrypted=True, status__in=Backup.WITH_DATA, pruned_at__isnull=True, copies__status=Copy.DURABLE
        )
        .distinct()
        .order_by("pk")
    )


def opening_keys(backup: Backup) -> set[str]:
    """The ids of the master keys that can open a backup: the one that sealed
    it (or the newest it was re-wrapped for) and every rotation wrap."""
    return {backup.key_id, *backup.key_wraps} - {""}


def live_key_ids() -> set[str]:
    return set(Key.objects.filter(destroyed_at__isnull=True).values_list("key_id", flat=True))


def sealed_models() -> list[type[SealedSecrets]]:
    return [model for model in apps.get_models() if issubclass(model, SealedSecrets)]


def sealed_rows() -> Iterator[tuple[type[SealedSecrets], int, str, str]]:
    """(model, pk, label, token) of every stored secret."""
    for model in sealed_models():
        for row in model._default_manager.exclude(secret_token=""):
            yield model, row.pk, f"{model._meta.verbose_name} “{row}”", row.secret_token


def usage(key_ids: Iterable[str] | None = None) -> dict[str, KeyNeeds]:
    """{key id: {"backups": [backup ids], "secrets": [labels], "opens": count}}:
    the backups and secrets that need that key (no other live key opens
    them), and how many retained backups it opens at all."""
    live = live_key_ids()
    needs: dict[str, KeyNeeds] = {key_id: {"backups": [], "secrets": [], "opens": 0} for key_id in (key_ids or live)}
    for backup in retained_encrypted_backups().only("pk", "key_id", "key_wraps"):
        openers = opening_keys(backup)
        for key_id in openers & set(needs):
            needs[key_id]["opens"] += 1
        usable = openers & live
        if len(usable) == 1:
            (only,) = usable
            if only in needs:
                needs[only]["backups"].append(backup.pk)
    for _model, _pk, label, token in sealed_rows():
        key_id = keyring.secret_key_id(token)
        if key_id in needs:
            needs[key_id]["secrets"].append(label)
    return needs


def backups_to_rewrap(key_id: str) -> list[Backup]:
    """Retained backups that the key `key_id` cannot open yet."""
    return [backup for backup in retained_encrypted_backups() if key_id not in opening_keys(backup)]


# --- creating a key and starting a rotation ---------------------------------------


def decode_pasted_key(text: str) -> bytes:
    """32 bytes from a pasted base64 key, or Refused with the reason."""
    try:
        key = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Refused("The pasted key is not valid base64.") from exc
    if len(key) != 32:
        raise Refused(f"A master key is 32 bytes (256 bits); the pasted one is {len(key)} bytes.")
    return key


def read_uploaded_key_file(data: bytes) -> tuple[str, bytes]:
    """(key id, 32 bytes) from an uploaded Strongroom key file, or Refused."""
    try:
        key_id, key = crypto.parse_key_file(data.decode("utf-8"), "The uploaded file")
    except UnicodeDecodeError as exc:
        raise Refused("The uploaded file is not a Strongroom master key file.") from exc
    except CorruptionError as exc:
        raise Refused(f"{exc}.") from exc
    return key_id, key


def check_new_key(key_id: str, key: bytes) -> None:
    if not keyring.KEY_ID.match(key_id):
        raise Refused("The key file's id may only use letters, digits, dot, dash and underscore (64 at most).")
    if Key.objects.filter(key_id=key_id).exists() or keyring.key_path(key_id).exists():
        raise Refused(f"A key with id {key_id} exists already.")
    same = Key.objects.filter(fingerprint=crypto.key_fingerprint(key)).first()
    if same:
        raise Refused(f"This key is already known as {same.key_id}; a rotation needs a new key.")


def start_rotation(
    actor: audit.Actor, key: bytes | None = None, key_id: str | None = None, enqueue: bool = True
) -> tuple[KeyRotation, bytes | None]:
    """Makes a new master key active (generated unless `key` bytes are given)
    and queues the rotation job that re-wraps every backup for it.

    Returns (rotation, key bytes if generated else None): a generated key's
    bytes go back to the caller once, for the administrator to keep a copy."""
    if KeyRotation.objects.filter(status__in=KeyRotation.ACTIVE_STATUSES).exists():
        raise Refused("A key rotation is still running; wait for it to finish (or cancel it) first.")
    generated = key is None
    key = crypto.generate_master_key() if key is None else key
    key_id = key_id or keyring.new_key_id()
    check_new_key(key_id, key)
    previous = Key.objects.filter(is_active=True).first()
    user = actor if isinstance(actor, User) else None
    sealed = None
    if keyring.key_sealer() is not None:
        try:  # before the transaction: sealing may call KMS
            sealed = keyring.seal(key_id, key)
        except keyring.KeyUnavailable as exc:
            raise Refused(f"{exc}. No new key was made.") from exc
    try:
        with transaction.atomic():
            new_key = keyring.install_key(key_id, key, Key.GENERATED if generated else Key.IMPORTED, sealed=sealed)
            audit.record(
                actor,
                "key.generate" if generated else "key.import",
                new_key,
                {"key_id": key_id, "fingerprint": new_key.fingerprint, "origin": new_key.origin},
            )
            rotation = KeyRotation.objects.create(
                new_key=new_key,
                previous_key_id=previous.key_id if previous else "",
                requested_by=user,
                total=len(backups_to_rewrap(key_id)),
            )
            rotation.append_log(
                f"Requested by {actor_label(actor)}: {key_id} is now the active key"
                + (f", replacing {previous.key_id}." if previous else ".")
            )
            rotation.save(update_fields=["log"])
            audit.record(
                actor,
                "key.rotate",
                rotation,
                {"from": rotation.previous_key_id, "to": key_id, "backups": rotation.total},
            )
            if enqueue:
                transaction.on_commit(lambda: queue_rotation(rotation))
    except BaseException:
        keyring.key_path(key_id).unlink(missing_ok=True)
        raise
    log.warning(
        "Master key %s is now active (%s), in %s. Keep a copy of its file away from this machine.",
        key_id,
        "generated" if generated else "imported",
        keyring.key_location(new_key),
    )
    return rotation, (key if generated else None)


def actor_label(actor: audit.Actor) -> str:
    return str(actor) if actor is None or isinstance(actor, str) else actor.get_username()


def queue_rotation(rotation: KeyRotation) -> None:
    queues.enqueue_work("catalog.tasks.run_key_rotation", rotation.pk, task_name=f"key-rotation-{rotation.pk}")


def resume_rotation(actor: audit.Actor, rotation: KeyRotation, enqueue: bool = True) -> KeyRotation:
    """Runs a finished rotation again to finish what it left (failed backups,
    backups that ended with the old key while it ran)."""
    stale = timezone.now() - timedelta(seconds=settings.HEARTBEAT_TIMEOUT)
    if rotation.is_active() and (rotation.heartbeat_at or rotation.created_at) > stale:
        raise Refused("This rotation is still running.")
    if not rotation.new_key.is_active:
        raise Refused(f"{rotation.new_key} is no longer the active key: start a new rotation instead.")
    with transaction.atomic():
        updated = KeyRotation.objects.filter(pk=rotation.pk, status=rotation.status).update(
            status=KeyRotation.QUEUED, cancel_requested=False, finished_at=None
        )
        if not updated:
            raise Refused("This rotation was resumed already.")
        audit.record(actor, "key.rotate.resume", rotation, {"to": rotation.new_key.key_id})
        if enqueue:
            transaction.on_commit(lambda: queue_rotation(rotation))
    rotation.refresh_from_db()
    return rotation


def cancel_rotation(actor: audit.Actor, rotation: KeyRotation) -> None:
    with transaction.atomic():
        updated = KeyRotation.objects.filter(
            pk=rotation.pk, status__in=KeyRotation.ACTIVE_STATUSES, cancel_requested=False
        ).update(cancel_requested=True)
        if not updated:
            raise Refused("This rotation is not running.")
        audit.record(actor, "key.rotate.cancel", rotation, {})
    # A queued rotation that no worker took yet ends here; a running one stops between backups.
    KeyRotation.objects.filter(pk=rotation.pk, status=KeyRotation.QUEUED).update(
        status=KeyRotation.CANCELLED, finished_at=timezone.now(), summary="Cancelled before it started."
    )


# --- the rotation job -----------------------------------------------------------------


def run_rotation(rotation_id: int) -> KeyRotation | None:
    """The worker's side: re-seal the secrets, re-wrap every backup not yet
    wrapped for the new key. Returns the rotation, or None if not claimed."""
    rotation = jobs.claim(KeyRotation, rotation_id, related=("new_key", "requested_by"))
    if rotation is None:
        return None
    actor = rotation.requested_by or "key rotation"
    new_id = rotation.new_key.key_id
    try:
        new_master = keyring.master_key(new_id)
    except keyring.KeyUnavailable as exc:
        return finish_rotation(rotation, KeyRotation.FAILED, f"{exc}: nothing was re-wrapped.")
    resealed, secret_failures = reseal_secrets(actor, new_id)
    rotation.append_log(f"Re-sealed {resealed} stored secret{'s' if resealed != 1 else ''} with {new_id}.")
    for failure in secret_failures:
        rotation.append_log(f"Not re-sealed: {failure}")
    pending = backups_to_rewrap(new_id)
    rotation.total = rotation.done + len(pending)
    save_progress(rotation)
    failures: list[int] = []
    for backup in pending:
        if KeyRotation.objects.filter(pk=rotation.pk, cancel_requested=True).exists():
            return finish_rotation(
                rotation,
                KeyRotation.CANCELLED,
                f"Cancelled after {rotation.done} of {rotation.total} backups; resume it to finish the rest.",
            )
        try:
            rewrap_backup(actor, backup, new_id, new_master)
        except RewrapFailed as exc:
            failures.append(backup.pk)
            rotation.append_log(f"Backup #{backup.pk}: not re-wrapped — {exc}")
        else:
            rotation.done += 1
            rotation.append_log(f"Backup #{backup.pk}: re-wrapped for {new_id}, its manifests rewritten.")
        save_progress(rotation)
    problems = len(failures) + len(secret_failures)
    if problems:
        what = []
        if failures:
            what.append(
                f"{len(failures)} backup{'s' if len(failures) != 1 else ''} not re-wrapped "
                f"({', '.join(f'#{pk}' for pk in failures[:10])})"
            )
        if secret_failures:
            what.append(f"{len(secret_failures)} secret(s) not re-sealed")
        return finish_rotation(
            rotation,
            KeyRotation.FAILED,
            f"Re-wrapped {rotation.done} of {rotation.total} backups; "
            + " and ".join(what)
            + ": see the log for the reasons, then resume the rotation.",
        )
    return finish_rotation(
        rotation,
        KeyRotation.SUCCEEDED,
        f"Re-wrapped {rotation.done} of {rotation.total} backups and re-sealed the stored "
        f"secrets; {new_id} alone now opens them.",
    )


def save_progress(rotation: KeyRotation) -> None:
    rotation.heartbeat_at = timezone.now()
    KeyRotation.objects.filter(pk=rotation.pk).update(
        done=rotation.done, total=rotation.total, log=rotation.log, heartbeat_at=rotation.heartbeat_at
    )


def finish_rotation(rotation: KeyRotation, status: str, summary: str) -> KeyRotation:
    rotation.append_log(summary)
    jobs.finish(
        rotation,
        status,
        f"key.rotate.{status}",
        {"to": rotation.new_key.key_id, "done": rotation.done, "total": rotation.total},
        actor="key rotation",
        summary=summary[:500],
        log=rotation.log,
        done=rotation.done,
        total=rotation.total,
    )
    rotation.refresh_from_db()
    return rotation


def reseal_secrets(actor: audit.Actor, key_id: str) -> tuple[int, list[str]]:
    """Seals every stored secret with `key_id` again. Returns (count, failures)."""
    count = 0
    failures: list[str] = []
    for model, pk, label, token in list(sealed_rows()):
        if keyring.secret_key_id(token) == key_id:
            continue
        try:
            sealed = keyring.encrypt_secret(keyring.decrypt_secret(token), key_id=key_id)
        except keyring.KeyUnavailable as exc:
            failures.append(f"{label}: {exc}")
            continue
        with transaction.atomic():
            # Only if nobody changed it meanwhile: a new value is sealed with the active key anyway.
            if model._default_manager.filter(pk=pk, secret_token=token).update(secret_token=sealed):
                row = model._default_manager.get(pk=pk)
                audit.record(actor, f"{model._meta.model_name}.reseal", row, {"key_id": key_id})
                count += 1
    return count, failures


def read_header(backup: Backup) -> crypto.Header:
    """The encryption header of a backup, read from the first durable copy
    that answers (a ranged read: only the first bytes travel)."""
    reasons: list[str] = []
    for copy in backup.readable_copies():
        try:
            parsed = crypto.read_header(copy.destination.storage().read_head(copy.key, HEAD_BYTES))
        except (EngineError, CorruptionError) as exc:
            reasons.append(f"{copy.destination}: {exc}")
            continue
        if parsed is None:
            reasons.append(f"{copy.destination}: the object is shorter than its header")
            continue
        return parsed[0]
    raise RewrapFailed("its encryption header could not be read (" + "; ".join(reasons or ["no durable copy"]) + ")")


def rewrap_backup(actor: audit.Actor, backup: Backup, new_id: str, new_master: bytes) -> None:
    """Wraps the backup's data key for `new_id`, rewrites every copy's
    manifest with the wraps, then records them in the catalog. On any failure
    the manifests already rewritten are put back, and nothing changes."""
    header = read_header(backup)
    try:
        _used, data_key = crypto.open_data_key(header, keyring.lookup, backup.key_wraps)
    except CorruptionError as exc:
        raise RewrapFailed(f"its data key cannot be unwrapped: {exc}") from exc
    wraps = dict(backup.key_wraps)
    wraps[header["key_id"]] = base64.b64encode(header["wrapped_data_key"]).decode()
    wraps[new_id] = base64.b64encode(crypto.wrap_data_key(new_master, new_id, data_key)).decode()
    copies = list(backup.copies.filter(status=Copy.DURABLE).select_related("destination"))
    rewritten: list[tuple[Copy, bytes]] = []
    try:
        for copy in copies:
            rewritten.append(rewrite_manifest(copy, wraps, new_id, new_master))
    except RewrapFailed:
        for copy, original in rewritten:
            put_back_manifest(copy, original)
        raise
    with transaction.atomic():
        Backup.objects.filter(pk=backup.pk).update(key_wraps=wraps, key_id=new_id)
        audit.record(actor, "backup.rewrap", backup, {"key_id": new_id, "manifests": len(copies)})
    if backup.hold_changed_at:
        # Its hold records are signed with the old key too: signed again with the
        # active one, they still verify once the old key is destroyed.
        holds.store_hold_state(actor, backup.pk)


def manifest_location(copy: Copy) -> str:
    return copy.manifest_key or manifest.manifest_key_for(copy.key)


def lock_for(copy: Copy) -> datetime | None:
    """A rewritten manifest keeps its copy's Object Lock date, if still ahead."""
    return copy.locked_until if copy.is_locked() else None


def rewrite_manifest(copy: Copy, wraps: Mapping[str, str], new_id: str, new_master: bytes) -> tuple[Copy, bytes]:
    """Returns (copy, the original manifest bytes) once the new one is stored."""
    storage = copy.destination.storage()
    location = manifest_location(copy)
    try:
        original = storage.get_bytes(location)
        data = manifest.loads(original)
    except (EngineError, ValueError) as exc:
        raise RewrapFailed(f"its manifest on {copy.destination} cannot be read ({exc})") from exc
    signer = data.get("manifest_key_id", "")
    try:
        genuine = manifest.verify_manifest(data, crypto.derive_manifest_key(keyring.master_key(signer)))
    except keyring.KeyUnavailable as exc:
        raise RewrapFailed(f"its manifest on {copy.destination} cannot be checked: {exc}") from exc
    if not genuine:
        raise RewrapFailed(
            f"its manifest on {copy.destination} does not verify: it was changed; verify the backup before rotating it"
        )
    data.pop("hmac", None)
    data["encryption"] = {**(data.get("encryption") or {}), "key_wraps": wraps}
    data["manifest_key_id"] = new_id
    signed = manifest.sign_manifest(data, crypto.derive_manifest_key(new_master))
    try:
        storage.put_bytes(location, manifest.dumps(signed), retain_until=lock_for(copy))
    except EngineError as exc:
        raise RewrapFailed(f"its manifest on {copy.destination} could not be rewritten ({exc})") from exc
    return copy, original


def put_back_manifest(copy: Copy, original: bytes) -> None:
    try:
        copy.destination.storage().put_bytes(manifest_location(copy), original, retain_until=lock_for(copy))
    except EngineError as exc:
        # The rewritten one is still genuine (signed by the new key, and the
        # object's own header still opens with the old key): nothing is lost.
        log.warning("Could not put back the manifest of %s: %s", copy, exc)


# --- a copy away from this machine -----------------------------------------------------


def key_file_bytes(key: Key) -> bytes:
    """The key's file exactly as it is on disk, or, for a key sealed in the
    metadata database, the standard key file of it; or Refused saying why not."""
    if key.destroyed_at:
        raise Refused(f"{key} was destroyed: its file is gone.")
    path = keyring.key_path(key.key_id)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        if key.sealed_key:
            return sealed_key_file(key)
        raise Refused(f"The key file of {key} is not in {settings.KEY_DIR}.") from exc
    except OSError as exc:
        raise Refused(f"The key file of {key} cannot be read ({exc.strerror}).") from exc
    # Only the file of the key the catalog knows by this id leaves the machine.
    try:
        key_id, key_bytes = crypto.parse_key_file(data.decode("utf-8"), str(path))
    except (UnicodeDecodeError, CorruptionError) as exc:
        raise Refused(f"{path} is not a Strongroom master key file.") from exc
    if key_id != key.key_id or crypto.key_fingerprint(key_bytes) != key.fingerprint:
        raise Refused(f"{path} is not the key the catalog knows as {key} (its fingerprint differs).")
    return data


def sealed_key_file(key: Key) -> bytes:
    """A key file as Strongroom writes them (for `python -m catalog.engine.decrypt`,
    or to import elsewhere), of a key sealed in the metadata database."""
    try:
        key_bytes = keyring.open_sealed(key.key_id, key.fingerprint, key.sealed_key)
    except keyring.KeyUnavailable as exc:
        raise Refused(f"{exc}.") from exc
    return crypto.key_file_text(key.key_id, key_bytes).encode()


def download_key(user: User, key: Key) -> bytes:
    """The key file's bytes for an administrator who re-entered their password;
    the download is audited and counts as a copy held away from this machine."""
    data = key_file_bytes(key)
    with transaction.atomic():
        mark_copy_held(user, key, Key.DOWNLOADED)
        audit.record(user, "key.download", key, {"key_id": key.key_id, "fingerprint": key.fingerprint})
    return data


def confirm_copy_held(user: User, key: Key) -> None:
    """An administrator says they hold a copy of the key file (checked against
    its fingerprint) away from this machine."""
    if key.destroyed_at:
        raise Refused(f"{key} was destroyed: there is nothing left to keep.")
    with transaction.atomic():
        mark_copy_held(user, key, Key.CONFIRMED)
        audit.record(user, "key.copy_confirmed", key, {"key_id": key.key_id, "fingerprint": key.fingerprint})


def mark_copy_held(user: User, key: Key, how: str) -> None:
    key.copy_held_at, key.copy_held_by, key.copy_held_how = timezone.now(), user, how
    key.save(update_fields=["copy_held_at", "copy_held_by", "copy_held_how"])


def key_without_a_copy() -> Key | None:
    """The active key when its file on this machine is its only copy, else None."""
    key = Key.objects.filter(is_active=True).first()
    return key if key and key.needs_a_copy() else None


# --- destroying a retired key ------------------------------------------------------------


def destruction_refusal(key: Key, needs: KeyNeeds | None = None) -> str:
    """Why `key` cannot be destroyed now, in words, or ""."""
    if key.destroyed_at:
        return f"{key} was destroyed already."
    if key.is_active:
        return f"{key} is the active key: rotate to a new key first."
    if KeyRotation.objects.filter(status__in=KeyRotation.ACTIVE_STATUSES).exists():
        return "A key rotation is running: wait for it to finish."
    if Backup.objects.active().exists():
        return "Backups are running and may still be sealed with it: wait for them to finish."
    need = needs if needs is not None else usage([key.key_id])[key.key_id]
    reasons: list[str] = []
    if need["backups"]:
        ids = ", ".join(f"#{pk}" for pk in need["backups"][:10]) + (" …" if len(need["backups"]) > 10 else "")
        reasons.append(f"{len(need['backups'])} retained backup{'s' if len(need['backups']) != 1 else ''} ({ids})")
    if need["secrets"]:
        reasons.append(
            f"{len(need['secrets'])} stored secret{'s' if len(need['secrets']) != 1 else ''} "
            f"({', '.join(need['secrets'][:5])})"
        )
    if reasons:
        return (
            f"{key} is still needed by {' and '.join(reasons)}: no live key opens them. "
            "Resume the rotation to re-wrap them (its log says why they were not), then destroy it."
        )
    return ""


def destroy_key(actor: audit.Actor, key: Key) -> Key:
    """Deletes a retired key's file for good, once nothing retained needs it."""
    key.refresh_from_db()
    reason = destruction_refusal(key)
    if reason:
        raise Refused(reason)
    with transaction.atomic():
        # Its sealed copy goes with it: no host can open it from the database any more.
        updated = Key.objects.filter(pk=key.pk, destroyed_at__isnull=True, is_active=False).update(
            destroyed_at=timezone.now(), sealed_key=""
        )
        if not updated:
            raise Refused(f"{key} was destroyed or made active meanwhile.")
        audit.record(
            actor,
            "key.destroy",
            key,
            {"key_id": key.key_id, "fingerprint": key.fingerprint, "sealed_copy_wiped": bool(key.sealed_key)},
        )
        # Last, so that a file that cannot be deleted leaves the key as it was.
        keyring.key_path(key.key_id).unlink(missing_ok=True)
    key.refresh_from_db()
    log.warning("Master key %s was destroyed: its file and sealed copy are deleted.", key.key_id)
    return key

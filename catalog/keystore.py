"""Moving master keys into the database store, and re-sealing them there
(`manage.py seal_keys`).

Each live key is sealed in its row under what this host is configured with
(the KEK, the AWS KMS key, or both: catalog/keyring.py). Its bytes come from
its key file in this host's key directory, or from its sealed copy opened
with the current or a previous KEK (STRONGROOM_KEK_PREVIOUS, or one given to
the command), so the same run moves key files into the database, re-seals
under a new KEK and moves rows to a new KMS key. A row already sealed as this
host would seal it is left as it is, so running it again changes nothing.
Each change is audited with what the key was and is sealed under, never with
the key. With `remove_files`, a key file is deleted once the sealed copy in
the database has been read back and opens to the same key with the current
KEK alone.
"""

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction

from catalog import audit, keyring
from catalog.engine import crypto, keyseal
from catalog.engine.errors import CorruptionError
from catalog.errors import Refused
from catalog.models import Key

log = logging.getLogger(__name__)


@dataclass
class SealReport:
    sealed: list[str] = field(default_factory=list)  # key ids sealed now (first time or re-sealed)
    unchanged: list[str] = field(default_factory=list)  # already sealed as this host seals
    files_removed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # keys left as they were, and why
    lines: list[str] = field(default_factory=list)  # what happened, a line per key, for the command


def sealed_under(sealed: str, opened: keyseal.Opened | None = None) -> dict[str, str]:
    """What a sealed value is sealed under, for the audit trail (no secret)."""
    if not sealed:
        return {"scheme": "key file only"}
    try:
        scheme, kek_fp, _payload = keyseal.parse(sealed)
    except keyseal.Damaged:
        return {"scheme": "unreadable"}
    found = {"scheme": scheme}
    if kek_fp:
        found["kek"] = kek_fp
    if opened and opened.kms_key_arn:
        found["kms_key"] = opened.kms_key_arn
    return found


def key_file(key: Key, report: SealReport) -> bytes | None:
    """The key's bytes from its file in this host's key directory, if there is
    one and it is the key the catalog knows by that id."""
    path = keyring.key_path(key.key_id)
    if not path.exists():
        return None
    try:
        key_id, key_bytes = crypto.load_key_file(str(path))
    except CorruptionError as exc:
        report.lines.append(f"{key.key_id}: its file is not used ({exc}).")
        return None
    if key_id != key.key_id or crypto.key_fingerprint(key_bytes) != key.fingerprint:
        report.lines.append(f"{key.key_id}: its file {path} is not the key the catalog knows by that id: not used.")
        return None
    return key_bytes


def seal_keys(actor: audit.Actor, previous_keks: Sequence[bytes] = (), remove_files: bool = False) -> SealReport:
    """Seals every live master key in the metadata database as this host is
    configured to (see the module's docstring). Refused when keys are files
    here (no KEK, no KMS key) or the KMS key cannot be described."""
    configured = keyring.key_sealer()
    if configured is None:
        raise Refused(
            "Keys are kept as files on this host: set STRONGROOM_KEK (or STRONGROOM_KEK_FILE), 32 random bytes in "
            "base64, and/or STRONGROOM_KMS_KEY_ID first, the same on every host."
        )
    current = dataclasses.replace(configured, previous_keks=())  # what sealed copies must open with from now on
    sealer = dataclasses.replace(configured, previous_keks=(*configured.previous_keks, *previous_keks))
    try:
        kms_arn = sealer.kms.arn() if sealer.kms else ""
    except keyseal.SealError as exc:
        raise Refused(f"The AWS KMS key {settings.KMS_KEY_ID} cannot be used: {exc}.") from exc
    report = SealReport()
    for key in Key.objects.filter(destroyed_at__isnull=True).order_by("created_at", "pk"):
        seal_one(actor, key, sealer, current, kms_arn, report)
        if remove_files and key.key_id not in report.problems:
            remove_file(actor, key, current, report)
    note_other_files(report)
    return report


def seal_one(
    actor: audit.Actor,
    key: Key,
    sealer: keyseal.Sealer,
    current: keyseal.Sealer,
    kms_arn: str,
    report: SealReport,
) -> None:
    from_file = key_file(key, report)
    opened, why_not = None, ""
    if key.sealed_key:
        try:
            opened = sealer.open(key.key_id, key.fingerprint, key.sealed_key)
        except keyseal.SealError as exc:
            why_not = str(exc)
    key_bytes = opened.key if opened else from_file
    if key_bytes is None:
        where = f"its sealed copy does not open here ({why_not})" if key.sealed_key else "it is not sealed yet"
        report.problems.append(key.key_id)
        report.lines.append(
            f"{key.key_id}: left as it was: there is no file of it in {settings.KEY_DIR}, and {where}. "
            "Run this on the host that has its file, or give the previous KEK (--previous-kek-file)."
        )
        return
    if opened and sealer.is_current(key.sealed_key) and (not sealer.kms or opened.kms_key_arn == kms_arn):
        report.unchanged.append(key.key_id)
        report.lines.append(f"{key.key_id}: already {current.describe()}.")
        return
    try:
        sealed = current.seal(key.key_id, key.fingerprint, key_bytes)
        current.open(key.key_id, key.fingerprint, sealed)  # read back before it replaces anything
    except keyseal.SealError as exc:
        report.problems.append(key.key_id)
        report.lines.append(f"{key.key_id}: left as it was: it could not be sealed ({exc}).")
        return
    with transaction.atomic():
        # Only over the value read above: a concurrent run or a destruction wins.
        updated = Key.objects.filter(pk=key.pk, sealed_key=key.sealed_key, destroyed_at__isnull=True).update(
            sealed_key=sealed
        )
        if not updated:
            report.problems.append(key.key_id)
            report.lines.append(f"{key.key_id}: left as it was: it changed meanwhile; run this again.")
            return
        audit.record(
            actor,
            "key.seal",
            key,
            {
                "key_id": key.key_id,
                "fingerprint": key.fingerprint,
                "was": sealed_under(key.sealed_key, opened),
                "now": sealed_under(sealed, keyseal.Opened(key_bytes, "", kms_arn)),
            },
        )
    was = "again" if opened else "from its key file"
    key.sealed_key = sealed
    report.sealed.append(key.key_id)
    report.lines.append(f"{key.key_id}: sealed {was}, {current.describe()}.")


def remove_file(actor: audit.Actor, key: Key, current: keyseal.Sealer, report: SealReport) -> None:
    """Deletes the key's file once its sealed copy, read back from the
    database, opens to the same key with what this host seals with now."""
    path = keyring.key_path(key.key_id)
    if not path.exists():
        return
    from_file = key_file(key, report)
    stored = Key.objects.filter(pk=key.pk).values_list("sealed_key", flat=True).first() or ""
    try:
        sealed_copy = current.open(key.key_id, key.fingerprint, stored).key if stored else None
    except keyseal.SealError as exc:
        report.lines.append(
            f"{key.key_id}: its file is kept: the sealed copy does not open with the current KEK ({exc})."
        )
        return
    if from_file is None or sealed_copy != from_file:
        report.lines.append(f"{key.key_id}: its file is kept: it is not the key sealed in the database.")
        return
    with transaction.atomic():
        audit.record(actor, "key.file.remove", key, {"key_id": key.key_id, "fingerprint": key.fingerprint})
        path.unlink()  # last: a file that cannot be deleted leaves no event behind
    report.files_removed.append(key.key_id)
    report.lines.append(f"{key.key_id}: its file {path} is removed; the database holds it.")


def note_other_files(report: SealReport) -> None:
    """Key files here that are no live key of the catalog: left alone, said."""
    key_dir = Path(settings.KEY_DIR)
    if not key_dir.is_dir():
        return
    live = set(Key.objects.filter(destroyed_at__isnull=True).values_list("key_id", flat=True))
    for path in sorted(key_dir.glob("*.key")):
        if path.stem not in live:
            report.lines.append(f"{path}: left alone: not a live key of this catalog.")

"""Master keys, where every host that needs them finds them, and the
encryption of connection secrets at rest.

The database records which key ids exist and which one is active. Key bytes
are held in one of two places:

- files under settings.KEY_DIR (mode 0600), one per key id: the default, for
  one host; a key made on one host is not on another;
- the database store, when a key-encryption key (settings.KEY_ENCRYPTION_KEY,
  from STRONGROOM_KEK) or an AWS KMS key (settings.KMS_KEY_ID) is set: each
  key sealed in its own row (Key.sealed_key, catalog/engine/keyseal.py), so a
  key made or rotated on one host is usable at once on every host that shares
  the metadata database and the KEK. No file is written then: one place to
  hold a key, destroyed everywhere at once; the Keys page exports a standard
  key file for the copy kept away from the hosts.

A file in KEY_DIR wins when both exist, so adopted keys and keys not yet
moved by `manage.py seal_keys` keep working. Secrets in the catalog (database
passwords, S3 secret keys) are sealed with a key derived from a master key,
and the token names that key's id so that it can still be opened after
rotation.
"""

import base64
import json
import logging
import os
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.utils import timezone

from catalog import dblocks
from catalog.engine import crypto, keyseal
from catalog.engine.errors import CorruptionError
from catalog.engine.files import make_private_dirs

if TYPE_CHECKING:  # catalog.models reads secrets through this module: imported where used
    from catalog.models import Key

log = logging.getLogger(__name__)


class KeyUnavailable(Exception):
    pass


class KeyFileMissing(KeyUnavailable):
    """A master key whose file is not in the key directory (nor, with the
    database store, sealed in the metadata database)."""

    def __init__(self, key_id: str, path: Path, elsewhere: str = "") -> None:
        super().__init__(f"Master key {key_id} is not in {path.parent}{elsewhere}")
        self.key_id, self.path = key_id, path


# A key id is a plain file name, never a path: for new keys (catalog.keys) and
# for ids read from manifests. \Z, not $: "$" lets a final line break through.
KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


def key_path(key_id: str) -> Path:
    # Ids also come from manifests and object headers, which whoever can write
    # to a destination could forge: "../x" must not reach a key file of theirs.
    if not KEY_ID.match(str(key_id)):
        raise KeyUnavailable(f"{str(key_id)[:80]!r} is not a master key id")
    return Path(settings.KEY_DIR) / f"{key_id}.key"


@lru_cache(maxsize=32)
def _read_key(path: str, mtime: float) -> bytes:
    return crypto.load_key_file(path)[1]


def master_key(key_id: str) -> bytes:
    """The bytes of master key `key_id`: its file in the key directory when
    this host has one, else its sealed copy in the metadata database."""
    from catalog.models import Key

    path = key_path(key_id)
    try:
        return _read_key(str(path), path.stat().st_mtime)
    except FileNotFoundError as exc:
        missing = exc
    row = Key.objects.filter(key_id=key_id).values_list("fingerprint", "sealed_key", "destroyed_at").first()
    if row and row[1]:
        return open_sealed(key_id, row[0], row[1])
    elsewhere = ""
    if key_sealer() is not None:
        elsewhere = (
            ", and it was destroyed"
            if row and row[2]
            else ", nor sealed in the metadata database: run `manage.py seal_keys` on the host that has its file"
        )
    raise KeyFileMissing(key_id, path, elsewhere) from missing


# --- the database store --------------------------------------------------------------


def key_sealer() -> keyseal.Sealer | None:
    """How this host seals master keys into the metadata database, or None
    when keys are files (neither a KEK nor a KMS key is set)."""
    kek, kms_key_id = settings.KEY_ENCRYPTION_KEY, settings.KMS_KEY_ID
    if kek is None and not kms_key_id:
        return None
    previous = settings.KEY_ENCRYPTION_KEY_PREVIOUS
    return keyseal.Sealer(
        kek=kek, previous_keks=(previous,) if previous else (), kms=keyseal.Kms(kms_key_id) if kms_key_id else None
    )


def key_store() -> str:
    """Where this host keeps master keys, in words (the Keys page, commands)."""
    sealer = key_sealer()
    if sealer is None:
        return f"key files in {settings.KEY_DIR}, on this host only"
    return f"the metadata database, {sealer.describe()}"


def seal(key_id: str, key: bytes, sealer: keyseal.Sealer | None = None) -> str:
    """The sealed text of a master key, for its row; KeyUnavailable if KMS fails."""
    sealer = sealer or key_sealer()
    assert sealer is not None, "sealing needs a KEK or a KMS key"
    try:
        return sealer.seal(key_id, crypto.key_fingerprint(key), key)
    except keyseal.SealError as exc:
        raise KeyUnavailable(f"Master key {key_id} could not be sealed: {exc}") from exc


# Keys opened from their sealed copy, by (key id, sealed text, what opens it):
# a key is opened once per process, not once per object (which would be a
# KMS call per object). A destroyed key's row loses its sealed text, so it is
# never looked up here again.
_opened: "OrderedDict[tuple[str, str, tuple[str, tuple[str, ...], str]], keyseal.Opened]" = OrderedDict()
_opened_lock = threading.Lock()
OPENED_KEYS_KEPT = 64


def open_sealed(key_id: str, fingerprint: str, sealed: str, sealer: keyseal.Sealer | None = None) -> bytes:
    return open_sealed_copy(key_id, fingerprint, sealed, sealer).key


def open_sealed_copy(
    key_id: str, fingerprint: str, sealed: str, sealer: keyseal.Sealer | None = None
) -> keyseal.Opened:
    """A master key from its sealed copy, or KeyUnavailable saying in plain
    words what this host lacks."""
    sealer = sealer or key_sealer()
    if sealer is None:
        raise KeyUnavailable(
            f"Master key {key_id} is sealed in the metadata database, and this host has no key-encryption key "
            "to open it: set STRONGROOM_KEK (or STRONGROOM_KEK_FILE), and STRONGROOM_KMS_KEY_ID if the other "
            "hosts have one, as on the other hosts"
        )
    cache_key = (key_id, sealed, sealer.identity())
    with _opened_lock:
        if cache_key in _opened:
            _opened.move_to_end(cache_key)
            return _opened[cache_key]
    try:
        opened = sealer.open(key_id, fingerprint, sealed)
    except keyseal.WrongKek as exc:
        raise KeyUnavailable(
            f"The key-encryption key does not open master key {key_id}: is STRONGROOM_KEK the same on every "
            f"host? ({exc})"
        ) from exc
    except keyseal.KmsFailed as exc:
        raise KeyUnavailable(f"Master key {key_id} cannot be unwrapped: {exc}") from exc
    except keyseal.SealError as exc:
        raise KeyUnavailable(f"Master key {key_id} cannot be opened: {exc}") from exc
    with _opened_lock:
        _opened[cache_key] = opened
        while len(_opened) > OPENED_KEYS_KEPT:
            _opened.popitem(last=False)
    return opened


def forget_opened_keys() -> None:
    """Empties this process's cache of opened keys (as a new process starts)."""
    with _opened_lock:
        _opened.clear()


def active_key() -> tuple[str, bytes]:
    """(key_id, key bytes) of the active master key; creates one on first use."""
    from catalog.models import Key

    key = Key.objects.filter(is_active=True).first() or first_master_key()
    return key.key_id, master_key(key.key_id)


# Any constant will do, so long as nothing else takes the same advisory lock.
FIRST_KEY_LOCK = 0x4B45595F4F4E45  # "KEY_ONE"


def first_master_key() -> "Key":
    """Makes the master key on first use. Two first encrypted backups at once
    must not both make one (the second would retire the first's key at once
    and leave two files to keep safe): they queue, and the second finds the
    first's key."""
    from django.db import transaction

    from catalog.models import Key

    with transaction.atomic():
        dblocks.hold_until_commit(FIRST_KEY_LOCK)
        return Key.objects.filter(is_active=True).first() or adopt_saved_key() or create_master_key()


def new_key_id() -> str:
    # The random part keeps two keys made in the same second apart.
    return "mk-" + timezone.now().strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


# A generated key id (new_key_id) says when the key was made, in UTC.
GENERATED_ID = re.compile(r"^mk-(?P<time>\d{8}-\d{6})-[0-9a-f]+\Z")


def made_at(key_id: str) -> datetime | None:
    """When a generated key was made, from its id; None for another id."""
    match = GENERATED_ID.match(key_id)
    try:
        return datetime.strptime(match["time"], "%Y%m%d-%H%M%S").replace(tzinfo=UTC) if match else None
    except ValueError:
        return None


def saved_keys() -> dict[str, bytes]:
    """{key id: key bytes} of the master key files in the key directory that
    are what their name says, leaving out keys the catalog knows as destroyed."""
    from catalog.models import Key

    found: dict[str, bytes] = {}
    for path in sorted(Path(settings.KEY_DIR).glob("*.key")):
        try:
            key_id, key = crypto.load_key_file(str(path))
        except CorruptionError as exc:
            log.warning("Not a master key file, left alone: %s", exc)
            continue
        if key_id == path.stem and KEY_ID.match(key_id):
            found[key_id] = key
    destroyed = set(Key.objects.filter(key_id__in=found, destroyed_at__isnull=False).values_list("key_id", flat=True))
    return {key_id: key for key_id, key in found.items() if key_id not in destroyed}


def newest_saved_key(saved: Mapping[str, bytes]) -> str | None:
    """The key id among `saved` that was made last, or None when that cannot be
    told: a rotation only ever makes a new key active, so the newest generated
    id is the key that was active; an id of another form carries no time."""
    if len(saved) <= 1:
        return next(iter(saved), None)
    times = {key_id: made_at(key_id) for key_id in saved}
    if None in times.values():
        return None
    return max(saved, key=lambda key_id: (times[key_id], key_id))


def adopt_saved_key() -> "Key | None":
    """After a reinstall the DBA copies the saved key files back into the key
    directory: the catalog takes the newest of them as its active key again,
    rather than generate another file that would need keeping safe too.
    Returns the Key, or None when there is no file to adopt (or several that
    cannot be told apart: then a new key is made, as on a first install)."""
    from catalog import audit
    from catalog.models import Key

    saved = saved_keys() if Path(settings.KEY_DIR).is_dir() else {}
    key_id = newest_saved_key(saved)
    if key_id is None:
        if saved:
            log.warning(
                "The key directory holds several master key files (%s) and no catalog says which was "
                "active; a new key is made.",
                ", ".join(sorted(saved)),
            )
        return None
    fingerprint = crypto.key_fingerprint(saved[key_id])
    if Key.objects.filter(key_id=key_id).exclude(fingerprint=fingerprint).exists():
        log.warning("The key file %s is not the key the catalog knows by that id; a new key is made.", key_id)
        return None
    # With the database store, sealed too: the other hosts need it as well.
    sealed = {"sealed_key": seal(key_id, saved[key_id])} if key_sealer() is not None else {}
    key, _ = Key.objects.update_or_create(
        key_id=key_id,
        defaults={
            "fingerprint": fingerprint,
            "is_active": True,
            "retired_at": None,
            "origin": Key.IMPORTED,
            **sealed,
        },
    )
    made = made_at(key_id)
    if made and key.created_at > made:  # its age decides when it is due for rotation
        key.created_at = made
        key.save(update_fields=["created_at"])
    audit.record(
        "keyring", "key.adopt", key, {"key_id": key_id, "fingerprint": fingerprint, "saved_key_files": len(saved)}
    )
    log.warning("Master key %s, found in %s, is the active key again.", key_id, settings.KEY_DIR)
    return key


def install_key(key_id: str, key_bytes: bytes, origin: str = "generated", sealed: str | None = None) -> "Key":
    """Registers the key as the active one, retiring the previous, and keeps
    its bytes: sealed in its row (the database store: no file is written;
    `sealed` when the caller sealed it before its transaction, since that may
    call KMS), or in a key file, removed again if the database refuses."""
    from django.db import transaction

    from catalog.models import Key

    sealer = key_sealer()
    if sealer is not None:
        sealed = sealed or seal(key_id, key_bytes, sealer)
        with transaction.atomic():
            Key.objects.filter(is_active=True).update(is_active=False, retired_at=timezone.now())
            return Key.objects.create(
                key_id=key_id,
                fingerprint=crypto.key_fingerprint(key_bytes),
                is_active=True,
                origin=origin,
                sealed_key=sealed,
            )
    make_private_dirs(settings.KEY_DIR)  # the data directory above it too, when it is new
    crypto.write_key_file(str(key_path(key_id)), key_id, key_bytes)
    try:
        with transaction.atomic():
            Key.objects.filter(is_active=True).update(is_active=False, retired_at=timezone.now())
            return Key.objects.create(
                key_id=key_id, fingerprint=crypto.key_fingerprint(key_bytes), is_active=True, origin=origin
            )
    except BaseException:
        key_path(key_id).unlink(missing_ok=True)
        raise


def create_master_key() -> "Key":
    """Generates a master key file and registers it as the active key."""
    key_id = new_key_id()
    key = install_key(key_id, crypto.generate_master_key())
    log.warning(
        "Generated master key %s in %s. Keep a copy of its file somewhere else (the Keys page exports it): "
        "without it, encrypted backups cannot be restored.",
        key_id,
        key_location(key),
    )
    return key


def key_location(key: "Key") -> str:
    """Where this host finds the key, in words: its file, or its sealed copy."""
    path = key_path(key.key_id)
    if path.exists() or not key.sealed_key:
        return str(path)
    sealer = key_sealer()
    return "the metadata database" + (f", {sealer.describe()}" if sealer else "")


def lookup(key_id: str) -> bytes:
    """Keyring callable for the engine's Decryptor: id -> key bytes."""
    try:
        return master_key(key_id)
    except KeyUnavailable as exc:
        raise KeyError(key_id) from exc


def _secrets_key(master: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"strongroom secrets v1")
    return hkdf.derive(master)


def encrypt_secret(values: Mapping[str, str], key_id: str | None = None) -> str:
    """Seals `values` with the active master key, or with `key_id` (key rotation)."""
    if key_id is None:
        key_id, master = active_key()
    else:
        master = master_key(key_id)
    nonce = os.urandom(12)
    sealed = AESGCM(_secrets_key(master)).encrypt(nonce, json.dumps(values).encode(), key_id.encode())
    return f"v1:{key_id}:{base64.b64encode(nonce + sealed).decode()}"


def secret_key_id(token: str) -> str:
    """The id of the master key a sealed secret needs."""
    return token.split(":", 2)[1]


def decrypt_secret(token: str) -> dict[str, str]:
    version, key_id, payload = token.split(":", 2)
    if version != "v1":
        raise ValueError("Unknown secret format")
    raw = base64.b64decode(payload)
    try:
        plain = AESGCM(_secrets_key(master_key(key_id))).decrypt(raw[:12], raw[12:], key_id.encode())
    except InvalidTag as exc:
        path = key_path(key_id)
        which = f"file {path}" if path.exists() else f"{key_id}, sealed in the metadata database,"
        raise KeyUnavailable(f"Master key {which} does not open the stored secrets: is it the right key?") from exc
    return json.loads(plain)


def redact_dsn(dsn: str) -> str:
    """A DSN fit for a page: the password replaced by ***."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
            return urlunsplit(parts._replace(netloc=netloc))
        return dsn
    words = []
    for word in dsn.split():
        if word.lower().startswith("password="):
            word = "password=***"
        words.append(word)
    return " ".join(words)

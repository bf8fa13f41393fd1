"""What a backup's Download buttons send: the plain dump (decrypted and
decompressed, as `pg_restore` or `sqlite3` take it) or the stored files as
they are (the object, its manifest and its globals, in one tar, for a copy
kept elsewhere or for `python -m catalog.engine.decrypt`).

Both read a stored copy and the master keys only: no connection to the source
is needed, so a backup stays downloadable after its database is gone.
Both stream: the object is never held in memory. A streamed response cannot
say "failed" once it has started, so what can be checked before the first
byte (the copy opens, its manifest reads, its size is the recorded one, the
key is here) is checked first, and a copy that fails is skipped for the next.
What only the last byte can tell (the SHA-256) breaks the download off
instead of ending it, so the browser reports it failed rather than whole."""

import hashlib
from collections.abc import Iterable, Iterator

from django.conf import settings

from catalog import backup_globals, keyring
from catalog.engine import manifest
from catalog.engine.compression import FORMAT_EXTENSIONS
from catalog.engine.errors import CorruptionError, EngineError, StorageError
from catalog.engine.pipeline import restore_stream
from catalog.engine.tarstream import end_of_archive, member_header, padding
from catalog.models import Backup, Copy


def open_first_copy(backup: Backup) -> tuple[Copy | None, Iterator[bytes] | None, list[str]]:
    """(copy, reader, problems): the first copy that opens. A copy the storage
    refuses (its key leads outside the destination) or cannot read is skipped
    here, before any byte is sent, since a streamed response cannot say so later."""
    problems: list[str] = []
    for copy in backup.readable_copies():
        try:
            return copy, copy.destination.storage().open_reader(copy.key), problems
        except EngineError as exc:
            problems.append(f"{copy.destination}: {exc}")
    return None, None, problems


def missing_key(backup: Backup) -> str:
    """Why the plain dump cannot be made (its master key is not here), or ""."""
    if not backup.encrypted:
        return ""
    needed = list(dict.fromkeys(key_id for key_id in [backup.key_id, *backup.key_wraps] if key_id))
    reasons = []
    for key_id in needed:
        try:
            keyring.master_key(key_id)
            return ""
        except keyring.KeyUnavailable as exc:
            reasons.append(str(exc))
    names = " or ".join(needed) or "(none recorded)"
    if keyring.key_sealer() is not None:  # the database store: say why each key did not open
        return (
            f"Backup #{backup.pk} needs master key {names}, which this host cannot open ({'; '.join(reasons)}). "
            "Download the stored files and decrypt them where the key is."
        )
    return (
        f"Backup #{backup.pk} needs master key {names}, which is not in {settings.KEY_DIR}. Copy the key file "
        f"there, or download the stored files and decrypt them where the key is."
    )


def plain_name(backup: Backup) -> str:
    # An export is a tar archive, a member per table, whatever its format.
    return f"{backup.source.slug}-backup-{backup.pk}.{FORMAT_EXTENSIONS.get(backup.format, 'tar')}"


def plain_chunks(backup: Backup, reader: Iterable[bytes]) -> Iterator[bytes]:
    """The dump as the database tool wrote it; stops at the first bad byte."""
    return restore_stream(reader, keyring=keyring.lookup, expected_sha256=backup.sha256, key_wraps=backup.key_wraps)


def stored_name(backup: Backup) -> str:
    return f"{backup.source.slug}-backup-{backup.pk}-stored.tar"


class StoredFiles:
    """One copy's files, as stored: the object (opened last, once its
    companions are read and its size is the recorded one) and the small
    companions beside it, named as the decrypt command looks for them."""

    def __init__(self, backup: Backup, copy: Copy) -> None:
        self.backup, self.copy = backup, copy
        storage = copy.destination.storage()
        name = copy.key.rsplit("/", 1)[-1]
        manifest_name = manifest.manifest_key_for(name)
        self.companions = [(manifest_name, storage.get_bytes(copy.manifest_key or manifest.manifest_key_for(copy.key)))]
        if backup.globals_sha256:
            globals_bytes = storage.get_bytes(backup_globals.key_for(copy))
            if hashlib.sha256(globals_bytes).hexdigest() != backup.globals_sha256:
                raise CorruptionError("its roles and database properties are not the ones stored")
            self.companions.append((manifest.globals_key_for(manifest_name), globals_bytes))
        try:
            self.size = storage.size(copy.key)
        except OSError as exc:
            raise StorageError(f"Cannot read {copy.key}: {exc.strerror}") from exc
        if copy.size and self.size != copy.size:
            raise CorruptionError(f"the object has {self.size} bytes; {copy.size} were stored")
        self.folder = f"{backup.source.slug}-backup-{backup.pk}"
        self.name = name
        self.reader = storage.open_reader(copy.key)

    def tar_chunks(self) -> Iterator[bytes]:
        """A tar archive, written as it is sent."""
        mtime = int((self.backup.finished_at or self.backup.created_at).timestamp())
        header = member_header(f"{self.folder}/{self.name}", self.size, mtime)
        yield header
        digest, size = hashlib.sha256(), 0
        for chunk in self.reader:
            digest.update(chunk)
            size += len(chunk)
            yield chunk
        if size != self.size:
            raise CorruptionError(f"{self.copy.destination}: the object ended after {size} of {self.size} bytes")
        expected = self.copy.sha256 or self.backup.sha256
        if expected and digest.hexdigest() != expected:
            raise CorruptionError(f"{self.copy.destination}: the object's SHA-256 is not the one recorded")
        written = len(header) + size
        tail = [padding(size)]
        for name, data in self.companions:
            tail += [member_header(f"{self.folder}/{name}", len(data), mtime), data, padding(len(data))]
        written += sum(len(part) for part in tail)
        tail.append(end_of_archive(written))
        yield b"".join(tail)


def open_stored_files(backup: Backup) -> tuple[StoredFiles | None, list[str]]:
    """(StoredFiles, problems): the first copy whose files all read."""
    problems: list[str] = []
    for copy in backup.readable_copies():
        try:
            return StoredFiles(backup, copy), problems
        except EngineError as exc:
            problems.append(f"{copy.destination}: {exc}")
    return None, problems

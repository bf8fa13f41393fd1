"""Segmented AES-256-GCM, data keys wrapped by master keys, key files.

Stored layout: a plaintext header, then segments of `segment_size` plaintext
bytes sealed with AES-256-GCM (ciphertext + 16-byte tag). The nonce of
segment n is the header's 8-byte prefix ‖ n (32-bit big-endian); the
associated data is SHA-256(header) ‖ final-flag. Tampering, reordering,
truncation at a segment boundary and trailing bytes all fail authentication.

The header carries the key id and the wrapped data key, so an object plus its
master key file is enough to decrypt it (catalog.engine.decrypt). The header
can never change (its hash is every segment's associated data), so key
rotation wraps the same data key again under the new master key and keeps
those extra wraps beside the object (catalog and manifest): `wraps`, a
{key id: base64 of the wrapped data key} dict, lets a newer key open it.
"""

import base64
import hashlib
import os
import struct
import tempfile
from collections.abc import Callable, Mapping
from typing import TypedDict

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from catalog.engine.errors import CorruptionError, KeyMissing

MAGIC = b"SRENC1\0"
TAG_SIZE = 16
DEFAULT_SEGMENT_SIZE = 1 << 20
KEY_FILE_HEADER = "strongroom-master-key v1"

# Maps a key id to its master key's bytes; raises KeyError for a key it lacks.
Keyring = Callable[[str], bytes]
# Extra wraps of an object's data key added by key rotation: {key id: base64 text (or bytes)}.
KeyWraps = Mapping[str, str | bytes]


class Header(TypedDict):
    segment_size: int
    key_id: str
    wrapped_data_key: bytes
    nonce_prefix: bytes


def generate_master_key() -> bytes:
    return os.urandom(32)


def key_fingerprint(master_key: bytes) -> str:
    """Identifies a key without revealing it (safe to show and log)."""
    return hashlib.sha256(b"strongroom fingerprint" + master_key).hexdigest()[:16]


def wrap_data_key(master_key: bytes, key_id: str, data_key: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(master_key).encrypt(nonce, data_key, key_id.encode())


def unwrap_data_key(master_key: bytes, key_id: str, wrapped: bytes) -> bytes:
    try:
        return AESGCM(master_key).decrypt(wrapped[:12], wrapped[12:], key_id.encode())
    except (InvalidTag, ValueError) as exc:
        raise CorruptionError("wrong master key or damaged key wrap") from exc


def derive_manifest_key(master_key: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"strongroom manifest v1")
    return hkdf.derive(master_key)


def is_encrypted(first_bytes: bytes) -> bool:
    return first_bytes.startswith(MAGIC)


def _pack_header(segment_size: int, key_id: str, wrapped: bytes, prefix: bytes) -> bytes:
    key_bytes = key_id.encode()
    return (
        MAGIC
        + struct.pack(">I", segment_size)
        + struct.pack(">H", len(key_bytes))
        + key_bytes
        + struct.pack(">H", len(wrapped))
        + wrapped
        + prefix
    )


def read_header(data: bytes | bytearray) -> tuple[Header, int] | None:
    """Parses a header from the start of `data`.

    Returns (header dict, header length), or None if more bytes are needed."""
    if len(data) < len(MAGIC) + 6:
        return None
    if not data.startswith(MAGIC):
        raise CorruptionError("not a Strongroom encrypted object")
    offset = len(MAGIC)
    (segment_size,) = struct.unpack_from(">I", data, offset)
    offset += 4
    (key_len,) = struct.unpack_from(">H", data, offset)
    offset += 2
    if len(data) < offset + key_len + 2:
        return None
    key_id = bytes(data[offset : offset + key_len]).decode()
    offset += key_len
    (wrapped_len,) = struct.unpack_from(">H", data, offset)
    offset += 2
    if len(data) < offset + wrapped_len + 8:
        return None
    wrapped = bytes(data[offset : offset + wrapped_len])
    offset += wrapped_len
    prefix = bytes(data[offset : offset + 8])
    offset += 8
    header: Header = {
        "segment_size": segment_size,
        "key_id": key_id,
        "wrapped_data_key": wrapped,
        "nonce_prefix": prefix,
    }
    return header, offset


def _nonce(prefix: bytes, counter: int) -> bytes:
    if counter >= 1 << 32:
        raise CorruptionError("too many segments for one nonce prefix")
    return prefix + struct.pack(">I", counter)


class Encryptor:
    """Streams plaintext in, sealed segments out. A fresh data key per object."""

    def __init__(
        self,
        master_key: bytes | None,
        key_id: str,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        _shared: tuple[bytes, bytes] | None = None,
    ) -> None:
        data_key, wrapped = _shared or (os.urandom(32), None)
        if not wrapped:
            if master_key is None:
                raise ValueError("A new data key needs a master key to wrap it")
            wrapped = wrap_data_key(master_key, key_id, data_key)
        self.key_id = key_id
        self.segment_size = segment_size
        self.data_key_wrapped = wrapped
        self._data_key = data_key
        self._aead = AESGCM(data_key)
        self._prefix = os.urandom(8)
        self.header = _pack_header(segment_size, key_id, self.data_key_wrapped, self._prefix)
        self._aad = hashlib.sha256(self.header).digest()
        self._buffer = bytearray()
        self._counter = 0
        self._header_sent = False

    def sibling(self) -> "Encryptor":
        """An Encryptor for a small object stored beside this one (a backup's
        globals): the same data key under the same wrap, so that the extra
        wraps key rotation adds open both, and a nonce prefix of its own
        (random 64 bits, as every object's)."""
        return Encryptor(None, self.key_id, self.segment_size, _shared=(self._data_key, self.data_key_wrapped))

    def _seal(self, plaintext: bytes | bytearray, final: bool) -> bytes:
        nonce = _nonce(self._prefix, self._counter)
        self._counter += 1
        return self._aead.encrypt(nonce, bytes(plaintext), self._aad + (b"\x01" if final else b"\x00"))

    def _start(self) -> bytes:
        if self._header_sent:
            return b""
        self._header_sent = True
        return self.header

    def update(self, data: bytes) -> bytes:
        self._buffer += data
        out = [self._start()]
        # Keep at least one byte back: only finalize() knows which segment is last.
        while len(self._buffer) > self.segment_size:
            out.append(self._seal(self._buffer[: self.segment_size], final=False))
            del self._buffer[: self.segment_size]
        return b"".join(out)

    def finalize(self) -> bytes:
        out = self._start() + self._seal(self._buffer, final=True)
        self._buffer = bytearray()
        return out


def open_data_key(header: Header, keyring: Keyring, wraps: KeyWraps | None = None) -> tuple[str, bytes]:
    """The data key of an object, from its header's wrap when that key is
    available, else from any extra wrap (key rotation) whose key is.

    Returns (key id used, data key); raises KeyMissing naming the keys that would do."""
    candidates = [(header["key_id"], header["wrapped_data_key"])]
    for key_id, wrapped in (wraps or {}).items():
        if key_id != header["key_id"]:
            candidates.append((key_id, base64.b64decode(wrapped) if isinstance(wrapped, str) else wrapped))
    for key_id, wrapped in candidates:
        try:
            master_key = keyring(key_id)
        except KeyError:
            continue
        return key_id, unwrap_data_key(master_key, key_id, wrapped)
    names = " or ".join(dict.fromkeys(key_id for key_id, _ in candidates))
    raise KeyMissing(f"master key {names} is not available")


class Decryptor:
    """Streams sealed bytes in, plaintext out; stops at the first bad segment.

    `keyring` maps a key id to master key bytes (raising KeyError if unknown);
    `wraps` are the object's extra wraps of its data key (see open_data_key)."""

    def __init__(self, keyring: Keyring, wraps: KeyWraps | None = None) -> None:
        self._keyring = keyring
        self._wraps = wraps or {}
        self._buffer = bytearray()
        self._aead: AESGCM | None = None
        self._counter = 0
        self.key_id: str | None = None
        # Set by _open() from the header.
        self._prefix = b""
        self._sealed_size = 0
        self._aad = b""
        self._header_length = 0

    @property
    def opened(self) -> bool:
        """Whether the header has been read and its data key opened."""
        return self._aead is not None

    def _open(self) -> bool:
        parsed = read_header(self._buffer)
        if parsed is None:
            return False
        header, length = parsed
        self.key_id, data_key = open_data_key(header, self._keyring, self._wraps)
        self._aead = AESGCM(data_key)
        self._prefix = header["nonce_prefix"]
        self._sealed_size = header["segment_size"] + TAG_SIZE
        self._aad = hashlib.sha256(bytes(self._buffer[:length])).digest()
        self._header_length = length
        del self._buffer[:length]
        return True

    def _open_segment(self, sealed: bytes | bytearray, final: bool) -> bytes:
        assert self._aead is not None, "opened by _open() first"
        nonce = _nonce(self._prefix, self._counter)
        try:
            plain = self._aead.decrypt(nonce, bytes(sealed), self._aad + (b"\x01" if final else b"\x00"))
        except InvalidTag as exc:
            offset = self._header_length + self._counter * self._sealed_size
            raise CorruptionError(
                f"encrypted segment {self._counter} (bytes {offset}–{offset + len(sealed) - 1}) "
                "is damaged, reordered or truncated",
                offset=offset,
                length=len(sealed),
            ) from exc
        self._counter += 1
        return plain

    def update(self, data: bytes) -> bytes:
        self._buffer += data
        if self._aead is None and not self._open():
            return b""
        out = []
        while len(self._buffer) > self._sealed_size:
            out.append(self._open_segment(self._buffer[: self._sealed_size], final=False))
            del self._buffer[: self._sealed_size]
        return b"".join(out)

    def finalize(self) -> bytes:
        if self._aead is None:
            raise CorruptionError("encrypted object is truncated (incomplete header)")
        if len(self._buffer) < TAG_SIZE:
            raise CorruptionError("encrypted object is truncated (final segment missing)")
        plain = self._open_segment(self._buffer, final=True)
        self._buffer = bytearray()
        return plain


def write_key_file(path: str, key_id: str, key: bytes) -> None:
    """Writes a master key file with mode 0600, atomically, and never over an
    existing one: losing a master key loses every backup sealed with it."""
    directory = os.path.dirname(os.path.abspath(path))
    text = key_file_text(key_id, key)
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".key-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temp, path)  # unlike rename, fails if the path exists
        os.unlink(temp)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def key_file_text(key_id: str, key: bytes) -> str:
    """A master key file's text: what write_key_file writes, and what the
    Keys page exports of a key sealed in the metadata database."""
    return f"{KEY_FILE_HEADER}\nid: {key_id}\nkey: {base64.b64encode(key).decode()}\n"


def load_key_file(path: str) -> tuple[str, bytes]:
    """Returns (key_id, key bytes) from a master key file."""
    try:
        with open(path) as handle:
            text = handle.read()
    except OSError as exc:
        raise CorruptionError(f"cannot read key file {path}: {exc.strerror}") from exc
    return parse_key_file(text, path)


def parse_key_file(text: str, path: str = "the key file") -> tuple[str, bytes]:
    """Returns (key_id, key bytes) from the text of a master key file."""
    lines = text.splitlines()
    fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    if not lines or lines[0].strip() != KEY_FILE_HEADER or "id" not in fields or "key" not in fields:
        raise CorruptionError(f"{path} is not a Strongroom master key file")
    try:
        key = base64.b64decode(fields["key"], validate=True)
    except ValueError as exc:
        raise CorruptionError(f"{path} does not hold a base64 key") from exc
    if len(key) != 32:
        raise CorruptionError(f"{path} does not hold a 256-bit key")
    return fields["id"].strip(), key

"""Reading a stored object back end to end: SHA-256 of the stored bytes,
every encrypted segment authenticated, the compressed stream decoded to its
end, and where the first damage is when there is some."""

import hashlib
from dataclasses import asdict, dataclass

from catalog.engine.errors import CorruptionError
from catalog.engine.pipeline import restore_stream


@dataclass
class ObjectCheck:
    stored_bytes: int = 0
    plain_bytes: int = 0
    sha256: str = ""
    ok: bool = False
    error: str = ""
    offset: int = None  # first bad byte (or the start of the first bad segment or chunk), when known

    def as_dict(self):
        return asdict(self)


def check_object(chunks, keyring, expected_sha256, expected_size, expected_plain=None, key_wraps=None):
    """Reads every chunk once; never raises CorruptionError, returns what it found."""
    result = ObjectCheck()
    hasher = hashlib.sha256()
    chunk_start = 0

    def counted():
        nonlocal chunk_start
        for chunk in chunks:
            chunk_start = result.stored_bytes
            result.stored_bytes += len(chunk)
            hasher.update(chunk)
            yield chunk

    try:
        for data in restore_stream(counted(), keyring=keyring, key_wraps=key_wraps):
            result.plain_bytes += len(data)
    except CorruptionError as exc:
        result.error = str(exc)
        result.offset = exc.offset if exc.offset is not None else chunk_start
        result.sha256 = ""
        return result
    result.sha256 = hasher.hexdigest()
    if result.stored_bytes != expected_size:
        result.error = f"the object has {result.stored_bytes} bytes; {expected_size} were stored"
        result.offset = min(result.stored_bytes, expected_size)
    elif result.sha256 != expected_sha256:
        result.error = f"SHA-256 is {result.sha256}, expected {expected_sha256}"
    elif expected_plain and result.plain_bytes != expected_plain:
        result.error = f"the dump inside has {result.plain_bytes} bytes; {expected_plain} were dumped"
    else:
        result.ok = True
    return result

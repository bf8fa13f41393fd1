"""Reading a stored object back end to end: SHA-256 of the stored bytes,
every encrypted segment authenticated, the compressed stream decoded to its
end, and where the first damage is, as precisely as it can be known.

The catalog keeps one SHA-256 of the whole object, which says *whether* the
bytes differ, never *where*. So the report says what is certain:
- a size that differs is said first, with the shorter length as the offset;
- an encrypted object names the first segment that fails authentication (the
  first bad byte lies inside it, its exact place is not known);
- an unencrypted one can only say how far the compressed stream decoded;
- the exact first bad byte comes from comparing with another copy that is
  intact (first_difference), which the catalog's verification does when the
  backup has one.
"""

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from catalog.engine.crypto import Keyring, KeyWraps
from catalog.engine.errors import CorruptionError
from catalog.engine.pipeline import plain_length


@dataclass
class ObjectCheck:
    stored_bytes: int = 0
    plain_bytes: int = 0
    sha256: str = ""
    ok: bool = False
    error: str = ""
    offset: int | None = None  # the first bad byte, only when it is known exactly
    segment_start: int | None = None  # otherwise: the damage lies in the segment starting here…
    segment_length: int | None = None  # …this many bytes long

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_object(
    chunks: Iterable[bytes],
    keyring: Keyring | None,
    expected_sha256: str,
    expected_size: int,
    expected_plain: int | None = None,
    key_wraps: KeyWraps | None = None,
) -> ObjectCheck:
    """Reads every chunk once; never raises CorruptionError, returns what it found."""
    result = ObjectCheck()
    hasher = hashlib.sha256()

    def counted() -> Iterator[bytes]:
        for chunk in chunks:
            result.stored_bytes += len(chunk)
            hasher.update(chunk)
            yield chunk

    stream = counted()
    damage: CorruptionError | None = None
    decoded_until: int | None = None
    try:
        # Frames decompressed side by side: only their lengths are needed here.
        result.plain_bytes = plain_length(stream, keyring=keyring, key_wraps=key_wraps)
    except CorruptionError as exc:
        damage, decoded_until = exc, result.stored_bytes
        for _chunk in stream:  # read on: the size and SHA-256 of the whole say what kind of damage it is
            pass
    result.sha256 = hasher.hexdigest()
    if result.stored_bytes != expected_size:
        result.error = size_difference(result.stored_bytes, expected_size)
        result.offset = min(result.stored_bytes, expected_size)
    elif result.sha256 != expected_sha256:
        differ = (
            f"the stored bytes differ from those written "
            f"(SHA-256 {result.sha256[:16]}…, expected {expected_sha256[:16]}…)"
        )
        if damage is not None and damage.offset is not None and damage.length is not None:
            result.segment_start, result.segment_length = damage.offset, damage.length
            result.error = (
                f"{differ}: the first bad byte is within the segment starting at byte {damage.offset} "
                f"(segment length {damage.length}), the first that fails authentication"
            )
        elif damage is not None:
            result.error = (
                f"{differ}: {damage} after reading {decoded_until} bytes, so the first bad byte "
                f"is within the first {decoded_until}"
            )
        else:
            result.error = f"{differ}; a checksum of the whole object cannot tell where"
    elif damage is not None:
        # The bytes are those that were written, and still do not decode (a wrong key, or a bug when writing).
        result.error = str(damage)
    elif expected_plain and result.plain_bytes != expected_plain:
        result.error = f"the dump inside has {result.plain_bytes} bytes; {expected_plain} were dumped"
    else:
        result.ok = True
    return result


def size_difference(found: int, expected: int) -> str:
    if found < expected:
        return (
            f"the object has {found} bytes; {expected} were stored: it is cut short, "
            f"the last {expected - found} are missing"
        )
    return f"the object has {found} bytes; {expected} were stored: {found - expected} bytes were added after its end"


def first_difference(chunks: Iterable[bytes], other_chunks: Iterable[bytes]) -> int | None:
    """The offset of the first byte where two streams of chunks differ (the
    shorter one's length when one is the start of the other), or None when
    they are equal. Stops reading at the difference."""
    first, second = iter(chunks), iter(other_chunks)
    left = right = memoryview(b"")
    offset = 0
    while True:
        left, right = refill(first, left), refill(second, right)
        if not left or not right:
            return None if not left and not right else offset
        length = min(len(left), len(right))
        if left[:length] != right[:length]:
            return offset + next(i for i in range(length) if left[i] != right[i])
        offset += length
        left, right = left[length:], right[length:]


def refill(chunks: Iterator[bytes], view: memoryview) -> memoryview:
    """`view`, or the next non-empty chunk when it is empty; empty at the end."""
    while not view:
        chunk = next(chunks, None)
        if chunk is None:
            return view
        view = memoryview(chunk)
    return view

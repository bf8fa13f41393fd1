"""What every storage backend offers, and the pieces they share.

A backend's writer makes a copy durable only in commit() (local files are
written under a temporary name, fsynced, renamed and their directory
fsynced; S3 objects are streamed as a multipart upload whose size is
confirmed after completion). abort() removes whatever was written.
"""

import errno
import io
import os
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any, NotRequired, Protocol, TypedDict

from catalog.engine.errors import StorageError

READ_CHUNK = 1 << 20
PROBE_KEY = ".strongroom-probe"


class Writer(Protocol):
    """One object being written: durable only once commit() returns its size."""

    def write(self, data: bytes) -> None: ...

    def commit(self) -> int: ...

    def abort(self) -> None: ...


class Partial(TypedDict):
    """A write that never finished: `key` of the leftover, `base` the object's key."""

    key: str
    base: str
    size: NotRequired[int]  # local
    upload_id: NotRequired[str]  # S3: the unfinished multipart upload
    started: NotRequired[datetime | None]


class Storage(Protocol):
    """What every backend offers, keys relative to the destination."""

    def describe(self) -> str: ...

    def open_writer(self, key: str, retain_until: datetime | None = None) -> Writer: ...

    def put_bytes(self, key: str, data: bytes, retain_until: datetime | None = None) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def open_reader(self, key: str) -> Iterator[bytes]: ...

    def read_head(self, key: str, length: int) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int: ...

    def delete(self, key: str) -> None: ...

    def cleanup_partials(self, key: str) -> None: ...

    def list_keys(self, prefix: str = "") -> list[str]: ...

    def list_sizes(self) -> dict[str, int]: ...

    def list_partials(self) -> list[Partial]: ...

    def remove_partial(self, partial: Partial) -> None: ...

    def probe(self) -> None: ...


def check_key(key: str) -> str:
    path = PurePosixPath(key)
    if path.is_absolute() or ".." in path.parts or not key:
        raise StorageError(f"Refusing an object key outside the destination: {key!r}")
    return key


def is_inside(path: str | os.PathLike[str], directory: str | os.PathLike[str]) -> bool:
    """Whether `path` lies in `directory` once `..` and symlinks are resolved in both."""
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([path, directory]) == directory


def outside_roots(path: str | os.PathLike[str], roots: Iterable[str | os.PathLike[str]]) -> str | None:
    """Why a local destination's directory is not allowed, or None when it is."""
    if any(is_inside(path, root) for root in roots):
        return None
    allowed = ", ".join(str(root) for root in roots) or "none"
    return (
        f"{path} is outside the directories local destinations may use ({allowed}); "
        "an administrator of the server can add one to the LOCAL_DESTINATION_ROOTS setting"
    )


def describe_os_error(exc: OSError, where: object) -> str:
    if exc.errno == errno.ENOSPC:
        return f"Disk full on {where}"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"Permission denied writing to {where}"
    if exc.errno == errno.ENOENT:
        return f"{where} does not exist"
    return f"Cannot write to {where}: {exc.strerror or exc}"


class QuotaWriter:
    """Wraps a writer and refuses to store more than `allowance` bytes, so a
    backup larger than expected stops before it fills the destination."""

    def __init__(self, writer: Writer, allowance: int, message: str) -> None:
        self.writer = writer
        self.allowance = allowance
        self.message = message
        self.size = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.allowance:
            self.writer.abort()
            raise StorageError(self.message)
        self.writer.write(data)

    def commit(self) -> int:
        return self.writer.commit()

    def abort(self) -> None:
        self.writer.abort()


class ViewFile(io.RawIOBase):
    """A part's or block's bytes as the seekable file a cloud SDK reads,
    without a copy: a part is a view of a reused buffer, and bytes of it would
    be one more part in memory. The SDKs read the body through (checksums,
    signing, sending), then seek back to the start for another pass or a
    retry. `PIECE`, when set, caps what one read returns, which keeps the
    pieces in flight small (fewer bytes than asked for are fine for a raw
    file: every reader loops until b"")."""

    PIECE: int | None = None

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view = view
        self._position = 0

    def __len__(self) -> int:
        return len(self._view)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        size = len(self._view) if size is None or size < 0 else min(size, self.PIECE or size)
        end = min(len(self._view), self._position + size)
        piece = bytes(self._view[self._position : end])
        self._position = max(self._position, end)
        return piece

    def readinto(self, buffer: Any) -> int:
        piece = self.read(len(buffer))
        buffer[: len(piece)] = piece
        return len(piece)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._view)}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position

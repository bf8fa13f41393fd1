"""What every storage backend offers, and the pieces they share.

A backend's writer makes a copy durable only in commit() (local files are
written under a temporary name, fsynced, renamed and their directory
fsynced; S3 objects are streamed as a multipart upload whose size is
confirmed after completion). abort() removes whatever was written.
"""

import errno
import os
from pathlib import PurePosixPath

from catalog.engine.errors import StorageError

READ_CHUNK = 1 << 20
PROBE_KEY = ".strongroom-probe"


def check_key(key):
    path = PurePosixPath(key)
    if path.is_absolute() or ".." in path.parts or not key:
        raise StorageError(f"Refusing an object key outside the destination: {key!r}")
    return key


def is_inside(path, directory):
    """Whether `path` lies in `directory` once `..` and symlinks are resolved in both."""
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([path, directory]) == directory


def outside_roots(path, roots):
    """Why a local destination's directory is not allowed, or None when it is."""
    if any(is_inside(path, root) for root in roots):
        return None
    allowed = ", ".join(str(root) for root in roots) or "none"
    return (f"{path} is outside the directories local destinations may use ({allowed}); "
            "an administrator of the server can add one to the LOCAL_DESTINATION_ROOTS setting")


def describe_os_error(exc, where):
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

    def __init__(self, writer, allowance, message):
        self.writer = writer
        self.allowance = allowance
        self.message = message
        self.size = 0

    def write(self, data):
        self.size += len(data)
        if self.size > self.allowance:
            self.writer.abort()
            raise StorageError(self.message)
        self.writer.write(data)

    def commit(self):
        return self.writer.commit()

    def abort(self):
        self.writer.abort()

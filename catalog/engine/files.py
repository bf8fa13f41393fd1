"""Files and folders only the service user can read.

Everything Strongroom writes (the metadata database, spools, scratch files,
local copies and their manifests, keys, logs) holds data or secrets, so it is
made 0600 (files) and 0700 (folders) here, whatever the process umask: the
umask set at start-up (backupsite/settings.py) covers the rest, but a copy's
privacy must not depend on how the process was started.
"""

import os
from typing import BinaryIO

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
# What the process umask becomes at start-up: nothing for group and others.
PRIVATE_UMASK = 0o077


def make_private_dirs(path: str | os.PathLike[str]) -> str:
    """Creates `path` and every missing folder above it, each 0700. Folders
    that already exist are left as they are (the start-up check warns about
    Strongroom's own ones when others can read them). Returns `path`."""
    path = os.path.abspath(path)
    missing = []
    folder = path
    while not os.path.isdir(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_DIR)
        except FileExistsError:
            if not os.path.isdir(folder):
                raise
            continue  # made meanwhile by another process, which made it private too
        # mkdir's mode passes through the umask, which may take more than group and others.
        os.chmod(folder, PRIVATE_DIR)
    return path


def create_private_file(path: str | os.PathLike[str]) -> BinaryIO:
    """Opens a new file (it must not exist) for binary writing, mode 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    return os.fdopen(fd, "wb")


def open_to_others(path: str | os.PathLike[str]) -> str:
    """What users other than its owner may do to `path`, in words ("read",
    "read and write"), or "" when nothing. A folder others may only pass
    through (x without r), for example to reach a point-in-time restore's
    data directory owned by the restored server's OS user, lets them list
    nothing and is not counted as open."""
    mode = os.stat(path).st_mode
    return " and ".join(word for word, bits in (("read", 0o044), ("write", 0o022)) if mode & bits)

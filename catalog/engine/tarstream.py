"""Writing a tar archive as a stream of bytes, member by member, without a
file to seek in: an export, a directory-format dump, a download of stored
files. Python's tarfile builds the headers; these add what a stream needs."""

import tarfile


def member_header(name: str, size: int, mtime: float, mode: int = 0o600) -> bytes:
    """The header of a regular file `name` of `size` bytes (PAX, UTF-8 names)."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, int(mtime), mode
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


def padding(size: int) -> bytes:
    """What follows a member of `size` bytes, up to a whole block."""
    return b"\0" * (-size % tarfile.BLOCKSIZE)


def end_of_archive(written: int) -> bytes:
    """After `written` bytes of members: two empty blocks, then padding to a
    whole record, as tar writes it."""
    end = 2 * tarfile.BLOCKSIZE
    return b"\0" * (end + (-(written + end)) % tarfile.RECORDSIZE)

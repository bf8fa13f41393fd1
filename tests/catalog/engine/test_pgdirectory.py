"""unpack(): a directory-format dump stored as a tar archive goes back into a
private directory for pg_restore, and nothing else does."""

import io
import os
import stat
import tarfile

import pytest

from catalog.engine.errors import CorruptionError
from catalog.engine.pgdirectory import unpack


def archive(*members):
    """A tar stream of (name, bytes) members; bytes None makes a symlink."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def chunks(data, size=1000):
    return (data[i : i + size] for i in range(0, len(data), size))


def test_pg_dumps_own_files_come_back_private_and_the_stream_is_read_to_its_end(tmp_path):
    data = archive(
        ("3358.dat", b"x" * 5000),
        ("blobs.toc", b"1 blob_16400.dat\n"),
        ("blob_16400.dat", b"lo"),
        ("toc.dat", b"PGDMP"),
    )
    seen = []

    def counted():
        for chunk in chunks(data):
            seen.append(len(chunk))
            yield chunk

    unpack(counted(), tmp_path / "dump")

    assert sum(seen) == len(data)  # the trailing zero blocks too: the pipeline checks the SHA-256 at the end
    assert sorted(os.listdir(tmp_path / "dump")) == ["3358.dat", "blob_16400.dat", "blobs.toc", "toc.dat"]
    assert (tmp_path / "dump" / "3358.dat").read_bytes() == b"x" * 5000
    assert stat.S_IMODE(os.stat(tmp_path / "dump").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "dump" / "toc.dat").st_mode) == 0o600


@pytest.mark.parametrize(
    "members, reason",
    [
        ([("../escape.dat", b"x"), ("toc.dat", b"PGDMP")], "'../escape.dat', which is not a file of pg_dump"),
        ([("/tmp/3358.dat", b"x"), ("toc.dat", b"PGDMP")], "which is not a file of pg_dump"),
        ([("3358.dat", None), ("toc.dat", b"PGDMP")], "'3358.dat', which is not a file of pg_dump"),
        ([("notes.txt", b"x"), ("toc.dat", b"PGDMP")], "'notes.txt'"),
        ([("toc.dat", b"PGDMP"), ("toc.dat", b"PGDMP2")], "'toc.dat'"),
        ([("3358.dat", b"x")], "no table of contents"),
    ],
)
def test_anything_pg_dump_does_not_write_is_refused(tmp_path, members, reason):
    with pytest.raises(CorruptionError, match=reason.replace("(", r"\(")):
        unpack(chunks(archive(*members)), tmp_path / "dump")
    assert not (tmp_path / "escape.dat").exists()


def test_a_truncated_archive_is_reported_as_truncated(tmp_path):
    data = archive(("3358.dat", b"y" * 20000), ("toc.dat", b"PGDMP"))

    with pytest.raises(CorruptionError, match="truncated"):
        unpack(chunks(data[:9000]), tmp_path / "dump")

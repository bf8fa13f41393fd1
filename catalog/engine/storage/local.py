"""A local directory: files written under a temporary name, fsynced,
renamed, and their directory fsynced."""

import contextlib
import os
import secrets
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

from catalog.engine.errors import StorageError
from catalog.engine.files import create_private_file, make_private_dirs
from catalog.engine.storage.base import (
    PROBE_KEY,
    READ_CHUNK,
    Partial,
    check_key,
    describe_os_error,
    is_inside,
    outside_roots,
)

PARTIAL_MARK = ".partial-"  # local files being written are named <key>.partial-<random>


def fsync_directory(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalWriter:
    def __init__(self, storage: "LocalStorage", key: str) -> None:
        self.final = storage.path_for(key)
        self.root = storage.root
        self.temp = self.final.with_name(f"{self.final.name}{PARTIAL_MARK}{secrets.token_hex(4)}")
        self.size = 0
        try:
            # Backups, manifests and the folders they sit in are the service
            # user's alone (0600, 0700), whatever the umask of the process.
            make_private_dirs(self.final.parent)
            self._file = create_private_file(self.temp)
        except OSError as exc:
            raise StorageError(describe_os_error(exc, self.root)) from exc

    def write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            self.abort()
            raise StorageError(describe_os_error(exc, self.root)) from exc
        self.size += len(data)

    def commit(self) -> int:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.rename(self.temp, self.final)
            fsync_directory(self.final.parent)
        except OSError as exc:
            self.abort()
            raise StorageError(describe_os_error(exc, self.root)) from exc
        return self.size

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temp)


class LocalStorage:
    def __init__(
        self, root: str | os.PathLike[str], allowed_roots: Iterable[str | os.PathLike[str]] | None = None
    ) -> None:
        self.root = str(root)
        # None: any directory (the engine used on its own, e.g. by the decrypt command).
        self.allowed_roots = allowed_roots

    def describe(self) -> str:
        return self.root

    def check_root(self) -> None:
        """Checked on every access, not only when the destination was saved: the
        directory (or one of its parents) may have become a symlink since."""
        if not self.root:
            raise StorageError("No directory is set for this destination")
        if self.allowed_roots is not None and (problem := outside_roots(self.root, self.allowed_roots)):
            raise StorageError(problem)

    def path_for(self, key: str) -> Path:
        self.check_root()
        path = Path(self.root) / check_key(key)
        if not is_inside(path, self.root):
            raise StorageError(f"Refusing {key!r}: a symlink leads it outside {self.root}")
        return path

    def open_writer(self, key: str, retain_until: datetime | None = None) -> LocalWriter:
        return LocalWriter(self, key)

    def put_bytes(self, key: str, data: bytes, retain_until: datetime | None = None) -> None:
        writer = self.open_writer(key)
        writer.write(data)
        writer.commit()

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.path_for(key).read_bytes()
        except OSError as exc:
            raise StorageError(f"Cannot read {key} from {self.root}: {exc.strerror}") from exc

    def open_reader(self, key: str) -> Iterator[bytes]:
        try:
            handle = open(self.path_for(key), "rb")  # noqa: SIM115 - closed by the returned generator
        except OSError as exc:
            raise StorageError(f"Cannot read {key} from {self.root}: {exc.strerror}") from exc

        def chunks() -> Iterator[bytes]:
            with handle:
                while chunk := handle.read(READ_CHUNK):
                    yield chunk

        return chunks()

    def read_head(self, key: str, length: int) -> bytes:
        """The first `length` bytes of an object (e.g. its encryption header)."""
        try:
            with open(self.path_for(key), "rb") as handle:
                return handle.read(length)
        except OSError as exc:
            raise StorageError(f"Cannot read {key} from {self.root}: {exc.strerror}") from exc

    def exists(self, key: str) -> bool:
        return self.path_for(key).is_file()

    def size(self, key: str) -> int:
        return self.path_for(key).stat().st_size

    def delete(self, key: str) -> None:
        try:
            self.path_for(key).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"Cannot delete {key} from {self.root}: {exc.strerror}") from exc
        self._remove_empty_parents(self.path_for(key).parent)

    def _remove_empty_parents(self, directory: Path) -> None:
        root = Path(self.root).resolve()
        directory = directory.resolve()
        while directory != root and root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def cleanup_partials(self, key: str) -> None:
        final = self.path_for(key)
        if final.parent.is_dir():
            for leftover in final.parent.glob(f"{final.name}{PARTIAL_MARK}*"):
                leftover.unlink(missing_ok=True)
        self._remove_empty_parents(final.parent)

    def list_keys(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self.list_sizes() if k.startswith(prefix))

    def list_sizes(self) -> dict[str, int]:
        """{key: size} of every complete object (partial files are listed apart)."""
        return {key: size for key, size in self._files() if PARTIAL_MARK not in key}

    def list_partials(self) -> list[Partial]:
        """Temporary files of writes that never finished."""
        return [
            {"key": key, "size": size, "base": key.split(PARTIAL_MARK)[0]}
            for key, size in self._files()
            if PARTIAL_MARK in key
        ]

    def remove_partial(self, partial: Partial) -> None:
        path = self.path_for(partial["key"])
        path.unlink(missing_ok=True)
        self._remove_empty_parents(path.parent)

    def _files(self) -> list[tuple[str, int]]:
        self.check_root()
        root = Path(self.root)
        if not root.is_dir():
            return []
        return [(str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*") if p.is_file()]

    def probe(self) -> None:
        self.check_root()
        try:
            make_private_dirs(self.root)
        except OSError as exc:
            raise StorageError(describe_os_error(exc, self.root)) from exc
        payload = secrets.token_bytes(64)
        self.put_bytes(PROBE_KEY, payload)
        if self.get_bytes(PROBE_KEY) != payload:
            raise StorageError(f"The probe read back from {self.root} differs from what was written")
        self.delete(PROBE_KEY)

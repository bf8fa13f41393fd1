"""Streaming compressors: zstd (threaded), gzip, or none."""

import zlib
from typing import Protocol

import zstandard

DEFAULT_LEVELS = {"zstd": 3, "gzip": 6}
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"


class Compressor(Protocol):
    def compress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class Decompressor(Protocol):
    def decompress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...

    def complete(self) -> bool:
        """Whether the stream's end was seen (a truncated stream is not complete)."""
        ...


class _Passthrough:
    def compress(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""

    def decompress(self, data: bytes) -> bytes:
        return data

    def complete(self) -> bool:
        return True


class _Zstd:
    def __init__(self, level: int) -> None:
        # threads=-1: one compression thread per core, so zstd is rarely the slowest stage.
        # write_checksum: the frame carries an xxhash of the content, so damage
        # inside unencrypted zstd is caught on decompression.
        # job_size 1 MiB: zstd's default job size (4 × its window) kept some 75 MB of
        # buffers across its threads; 1 MiB jobs keep it near 20 MB at the same speed
        # (bench/RESULTS.md, the memory target).
        params = zstandard.ZstdCompressionParameters.from_level(
            level, threads=-1, job_size=1 << 20, write_checksum=True
        )
        self._obj = zstandard.ZstdCompressor(compression_params=params).compressobj()

    def compress(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def flush(self) -> bytes:
        return self._obj.flush()


class _ZstdReader:
    def __init__(self) -> None:
        self._obj = zstandard.ZstdDecompressor().decompressobj()

    def decompress(self, data: bytes) -> bytes:
        return self._obj.decompress(data)

    def flush(self) -> bytes:
        return b""

    def complete(self) -> bool:
        return self._obj.eof


class _Gzip:
    def __init__(self, level: int) -> None:
        self._obj = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

    def compress(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def flush(self) -> bytes:
        return self._obj.flush()


class _GzipReader:
    def __init__(self) -> None:
        self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def decompress(self, data: bytes) -> bytes:
        return self._obj.decompress(data)

    def flush(self) -> bytes:
        return self._obj.flush()

    def complete(self) -> bool:
        return self._obj.eof


def make_compressor(name: str, level: int | None = None) -> Compressor:
    if name == "zstd":
        return _Zstd(level or DEFAULT_LEVELS["zstd"])
    if name == "gzip":
        return _Gzip(level or DEFAULT_LEVELS["gzip"])
    if name == "none":
        return _Passthrough()
    raise ValueError(f"Unknown compression {name!r}")


def make_decompressor(name: str) -> Decompressor:
    if name == "zstd":
        return _ZstdReader()
    if name == "gzip":
        return _GzipReader()
    if name == "none":
        return _Passthrough()
    raise ValueError(f"Unknown compression {name!r}")


def detect_compression(first_bytes: bytes) -> str:
    if first_bytes.startswith(ZSTD_MAGIC):
        return "zstd"
    if first_bytes.startswith(GZIP_MAGIC):
        return "gzip"
    return "none"


FORMAT_EXTENSIONS = {"custom": "dump", "plain": "sql", "tar": "tar", "sqlite": "sqlite", "basebackup": "tar"}
COMPRESSION_EXTENSIONS = {"zstd": ".zst", "gzip": ".gz", "none": ""}


def extension_for(fmt: str, compression: str, encrypted: bool) -> str:
    ext = FORMAT_EXTENSIONS[fmt] + COMPRESSION_EXTENSIONS[compression]
    return ext + ".enc" if encrypted else ext

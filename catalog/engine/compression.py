"""Streaming compression: zstd (threaded), gzip, or none, and the way back."""

import zlib
from collections.abc import Callable, Iterator
from typing import Protocol

import zstandard

from catalog.engine.errors import CorruptionError

# zstd 1, not zstd's own default of 3: over pg_dump's uncompressed archive, with
# 1 MiB jobs, level 1 was both about twice as fast and 2-6 % smaller than
# level 3, on pgbench data and on the less compressible orders data alike
# (bench/RESULTS.md, issue 22). Higher levels are for plans that choose them.
DEFAULT_LEVELS = {"zstd": 1, "gzip": 6}
# What every backup was compressed at before levels were recorded (manifests
# without a level); not to change with DEFAULT_LEVELS.
LEVELS_BEFORE_RECORDED = {"zstd": 3, "gzip": 6}
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"


class Compressor(Protocol):
    def compress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class _Passthrough:
    def compress(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


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


SKIPPABLE_MAGIC_HIGH = b"\x2a\x4d\x18"  # 0x184D2A5?, little-endian, after its low byte


class ZstdFrames:
    """Follows the frame and block headers of a zstd stream (RFC 8878) as
    its bytes pass, without decompressing, to tell whether the stream ends
    exactly where a frame ends: python-zstandard's streaming reader, which
    decompresses with bounded memory, gives a cut-short stream's first part
    back without an error."""

    def __init__(self) -> None:
        self._pending = bytearray()  # a header being gathered
        self._need = 4  # its length so far known
        self._state = "magic"
        self._skip = 0  # content bytes to pass over before the next header
        self._checksum = False
        self.frames = 0
        self.broken = False

    def feed(self, data: bytes | memoryview) -> None:
        view, pos = memoryview(data), 0
        while pos < len(view) and not self.broken:
            if self._skip:
                step = min(self._skip, len(view) - pos)
                self._skip -= step
                pos += step
                continue
            step = min(self._need - len(self._pending), len(view) - pos)
            self._pending += view[pos : pos + step]
            pos += step
            if len(self._pending) == self._need:
                self._header(bytes(self._pending))

    def complete(self) -> bool:
        return self.frames > 0 and self._state == "magic" and not self._pending and not self._skip and not self.broken

    def _expect(self, state: str, length: int) -> None:
        self._state, self._need, self._pending = state, length, bytearray()
        if length == 0:
            self._header(b"")

    def _header(self, header: bytes) -> None:
        if self._state == "magic":
            if header == ZSTD_MAGIC:
                self._expect("descriptor", 1)
            elif header[1:] == SKIPPABLE_MAGIC_HIGH and header[0] & 0xF0 == 0x50:
                self._expect("skippable size", 4)
            else:
                self.broken = True
        elif self._state == "skippable size":
            self._skip = int.from_bytes(header, "little")
            self._expect("magic", 4)
        elif self._state == "descriptor":
            descriptor = header[0]
            single_segment, content_size_flag = descriptor >> 5 & 1, descriptor >> 6
            self._checksum = bool(descriptor & 0b100)
            window = 0 if single_segment else 1
            dictionary = (0, 1, 2, 4)[descriptor & 0b11]
            content_size = (single_segment, 2, 4, 8)[content_size_flag]
            self._expect("frame header", window + dictionary + content_size)
        elif self._state == "frame header":
            self._expect("block", 3)
        elif self._state == "block":
            value = int.from_bytes(header, "little")
            last, kind, size = value & 1, value >> 1 & 0b11, value >> 3
            if kind == 3:  # reserved
                self.broken = True
                return
            self._skip = 1 if kind == 1 else size  # an RLE block holds one byte
            if last:
                self._expect("checksum", 4 if self._checksum else 0)
            else:
                self._expect("block", 3)
        elif self._state == "checksum":
            self.frames += 1
            self._expect("magic", 4)


class _Gzip:
    def __init__(self, level: int) -> None:
        self._obj = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

    def compress(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def flush(self) -> bytes:
        return self._obj.flush()


def make_compressor(name: str, level: int | None = None) -> Compressor:
    if name == "zstd":
        return _Zstd(level or DEFAULT_LEVELS["zstd"])
    if name == "gzip":
        return _Gzip(level or DEFAULT_LEVELS["gzip"])
    if name == "none":
        return _Passthrough()
    raise ValueError(f"Unknown compression {name!r}")


# What one read of a decompressed stream gives back at most, so memory stays
# flat however compressible the data (a 1 MiB chunk of pgbench's blank filler
# once came back as tens of MB at once; bench/RESULTS.md).
OUTPUT_PIECE = 1 << 20


def decompress_stream(name: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The chunks decompressed (`name`: zstd, gzip or none) in pieces of at
    most OUTPUT_PIECE bytes; CorruptionError when the data is damaged or
    cut short."""
    if name == "zstd":
        yield from _zstd_stream(chunks)
    elif name == "gzip":
        yield from _gzip_stream(chunks)
    else:
        yield from chunks


def _zstd_stream(chunks: Iterator[bytes]) -> Iterator[bytes]:
    frames = ZstdFrames()
    source = _ChunkFile(chunks, frames.feed)
    # Any object with read() will do (the stubs ask for IO[bytes]).
    reader = zstandard.ZstdDecompressor().stream_reader(
        source,  # type: ignore[arg-type]
        read_size=1 << 20,
        read_across_frames=True,
    )
    try:
        while data := reader.read(OUTPUT_PIECE):
            yield data
    except zstandard.ZstdError as exc:
        raise CorruptionError(f"the compressed data is damaged ({exc})") from exc
    if not frames.complete():
        raise CorruptionError("the compressed data is truncated")


def _gzip_stream(chunks: Iterator[bytes]) -> Iterator[bytes]:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        for chunk in chunks:
            data = chunk
            while data:
                if out := inflater.decompress(data, OUTPUT_PIECE):
                    yield out
                data = inflater.unconsumed_tail
        if tail := inflater.flush():
            yield tail
    except zlib.error as exc:
        raise CorruptionError(f"the compressed data is damaged ({exc})") from exc
    if not inflater.eof:
        raise CorruptionError("the compressed data is truncated")


class _ChunkFile:
    """A read-only file over chunks, for zstd's streaming reader; `seen`
    is told every piece it hands out."""

    def __init__(self, chunks: Iterator[bytes], seen: Callable[[memoryview], None]) -> None:
        self._chunks = chunks
        self._seen = seen
        self._rest = memoryview(b"")

    def read(self, size: int = -1) -> bytes:
        while not self._rest:
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._rest = memoryview(chunk)
        piece = self._rest if size < 0 else self._rest[:size]
        self._rest = self._rest[len(piece) :]
        self._seen(piece)
        return piece.tobytes()


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

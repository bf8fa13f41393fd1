"""Streaming compression: zstd (threaded), gzip, or none, and the way back."""

import os
import queue
import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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


# A stream of many frames could be cut exactly where a frame ends and still
# be a whole zstd stream, so the compressor marks where its stream starts and
# where it ends with two skippable frames (RFC 8878, 3.1.2: every zstd
# decoder passes over them, `zstd -d` included), and ZstdFrames calls a stream
# that has the first and lacks the second truncated. Streams written before
# frames (one frame, no marks) are judged as before.
MARK_MAGIC = b"\x50\x2a\x4d\x18"  # 0x184D2A50, little-endian
STREAM_START = b"strongroom zstd frames 1"
STREAM_END = b"strongroom zstd end"


def mark(payload: bytes) -> bytes:
    return MARK_MAGIC + len(payload).to_bytes(4, "little") + payload


# The uncompressed input of one zstd frame. Frames are decompressed
# independently, so verification spreads them over threads; ending one every
# 8 MiB cost nothing measurable in size (a 194 MB raw pg_dump archive: -0.007 %
# at level 1, +0.005 % at level 3, against one frame).
FRAME_BYTES = 8 << 20


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
        self._compressor = zstandard.ZstdCompressor(compression_params=params)
        self._obj = self._compressor.compressobj()
        self._room = FRAME_BYTES  # input the current frame still takes
        self._start = mark(STREAM_START)  # given out with the first bytes

    def compress(self, data: bytes) -> bytes:
        # A frame ends every FRAME_BYTES of input, so that verification can
        # decompress frames side by side (count_decompressed).
        out, view = [self._start], memoryview(data)
        self._start = b""
        while view:
            if not self._room:  # ended only when more input comes: no empty frame at the end
                out.append(self._obj.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH))
                self._obj, self._room = self._compressor.compressobj(), FRAME_BYTES
            piece = view[: self._room]
            out.append(self._obj.compress(piece))
            self._room -= len(piece)
            view = view[len(piece) :]
        return b"".join(out)

    def flush(self) -> bytes:
        start, self._start = self._start, b""
        return start + self._obj.flush() + mark(STREAM_END)


SKIPPABLE_MAGIC_HIGH = b"\x2a\x4d\x18"  # 0x184D2A5?, little-endian, after its low byte


class ZstdFrames:
    """Follows the frame and block headers of a zstd stream (RFC 8878) as
    its bytes pass, without decompressing, to tell whether the stream ends
    exactly where a frame ends: python-zstandard's streaming reader, which
    decompresses with bounded memory, gives a cut-short stream's first part
    back without an error. It also notes where each frame ends, for
    cutting the stream into frames."""

    def __init__(self) -> None:
        self._pending = bytearray()  # a header being gathered
        self._need = 4  # its length so far known
        self._state = "magic"
        self._skip = 0  # content bytes to pass over before the next header
        self._checksum = False
        self.frames = 0
        self.broken = False
        self.position = 0  # bytes fed so far
        self.frame_ends: list[int] = []  # the position just past each frame (its reader may clear it)
        self.marked = False  # the stream started with STREAM_START…
        self.ended = False  # …and STREAM_END is the last thing in it so far

    def feed(self, data: bytes | memoryview) -> None:
        view, pos = memoryview(data), 0
        while not self.broken:
            if self._skip:
                if pos == len(view):
                    break
                step = min(self._skip, len(view) - pos)
                self._skip -= step
                pos += step
            elif len(self._pending) < self._need:
                if pos == len(view):
                    break
                step = min(self._need - len(self._pending), len(view) - pos)
                self._pending += view[pos : pos + step]
                pos += step
            else:  # a whole header, or the empty checksum of a frame without one once its last block is passed
                self._header(bytes(self._pending), self.position + pos)
        self.position += len(view)

    def complete(self) -> bool:
        whole = self.frames > 0 and self._state == "magic" and not self._pending and not self._skip
        return whole and not self.broken and (self.ended or not self.marked)

    def _expect(self, state: str, length: int) -> None:
        self._state, self._need, self._pending = state, length, bytearray()

    def _header(self, header: bytes, end: int) -> None:
        if self._state == "magic":
            if header == ZSTD_MAGIC:
                self.ended = False
                self._expect("descriptor", 1)
            elif header[1:] == SKIPPABLE_MAGIC_HIGH and header[0] & 0xF0 == 0x50:
                self._expect("skippable size", 4)
            else:
                self.broken = True
        elif self._state == "skippable size":
            size = int.from_bytes(header, "little")
            if size <= len(STREAM_START):  # it may be one of our marks: read it
                self._expect("skippable content", size)
            else:
                self._skip = size
                self.ended = False
                self._expect("magic", 4)
        elif self._state == "skippable content":
            if header == STREAM_START and end == len(mark(STREAM_START)):
                self.marked = True
            self.ended = header == STREAM_END
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
            self.frame_ends.append(end)
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


def count_decompressed(name: str, chunks: Iterator[bytes]) -> int:
    """How many bytes the chunks decompress to, with the same CorruptionError
    as decompress_stream when they are damaged or cut short. For a reader
    that needs only the count (verification): a zstd stream's frames are
    decompressed side by side, a few threads at once, so a stream of many
    frames is not decoded by one core alone."""
    if name == "zstd":
        return _ZstdCount(chunks).length()
    return sum(len(data) for data in decompress_stream(name, chunks))


# Decoding threads, and the compressed bytes handed to them and not yet
# decoded (whatever the frames' size): two or three frames of a pg_dump
# archive (some 1.8 MB each at level 1), enough for each thread to have one.
# 4 MiB verified a 388 MB dump as fast as 24 MiB did, with 62-65 MB peak RSS
# instead of 79-86 (54 MB reading it in order).
DECODERS = min(4, max(2, os.cpu_count() or 1))
IN_FLIGHT = 4 << 20


class _ZstdCount:
    """Cuts a zstd stream at its frames' ends (ZstdFrames) and decompresses
    each frame in a thread of the pool, which zstd lets run in parallel (it
    releases the GIL). The frames' lengths are summed in order, so the first
    damaged frame is the one reported."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._frames = ZstdFrames()
        self._space = threading.Condition()
        self._in_flight = 0
        self._failed = False  # a decoding thread stopped on an error: read no further
        self._frame: queue.SimpleQueue[bytes | None] | None = None  # the pieces of the frame being read
        self._results: list[Future[int]] = []  # each frame's length, in order

    def length(self) -> int:
        with ThreadPoolExecutor(DECODERS, thread_name_prefix="zstd-frame") as pool:
            try:
                self._split(pool)
            except BaseException:
                self._fail()
                raise
            finally:
                self._end_frame()
                if self._failed:  # frames after the one that failed need not be decoded
                    pool.shutdown(cancel_futures=True)
        length = sum(result.result() for result in self._results)  # raises the first damaged frame's error
        if not self._frames.complete():
            raise CorruptionError("the compressed data is truncated")
        return length

    def _split(self, pool: ThreadPoolExecutor) -> None:
        for chunk in self._chunks:
            start = self._frames.position
            self._frames.feed(chunk)
            begin = 0
            for end in [end - start for end in self._frames.frame_ends]:
                if not self._hand_over(pool, chunk[begin:end]):
                    return
                self._end_frame()
                begin = end
            self._frames.frame_ends.clear()
            # After bytes that are not zstd, the rest of the chunk goes with them: decoding them says so.
            if not self._hand_over(pool, chunk[begin:] if begin else chunk) or self._frames.broken:
                return

    def _hand_over(self, pool: ThreadPoolExecutor, piece: bytes) -> bool:
        """Gives `piece` to the frame being read, once there is room for it;
        False when a decoding thread failed and reading should stop."""
        if not piece:
            return not self._failed
        with self._space:
            self._space.wait_for(
                lambda: self._failed or not self._in_flight or self._in_flight + len(piece) <= IN_FLIGHT
            )
            if self._failed:
                return False
            self._in_flight += len(piece)
        if self._frame is None:
            self._frame = queue.SimpleQueue()
            self._results.append(pool.submit(self._decode, self._frame))
        self._frame.put(piece)
        return True

    def _end_frame(self) -> None:
        if self._frame is not None:
            self._frame.put(None)
            self._frame = None

    def _decode(self, pieces: queue.SimpleQueue[bytes | None]) -> int:
        """The length of one frame decompressed (in a thread of the pool)."""
        source = _ChunkFile(iter(pieces.get, None), self._decoded)
        reader = zstandard.ZstdDecompressor().stream_reader(
            source,  # type: ignore[arg-type]
            read_size=1 << 20,
            read_across_frames=True,
        )
        buffer, length = bytearray(OUTPUT_PIECE), 0
        try:
            while count := reader.readinto(buffer):
                length += count
        except zstandard.ZstdError as exc:
            self._fail()
            raise CorruptionError(f"the compressed data is damaged ({exc})") from exc
        except BaseException:
            self._fail()
            raise
        return length

    def _decoded(self, piece: memoryview) -> None:
        with self._space:
            self._in_flight -= len(piece)
            self._space.notify_all()

    def _fail(self) -> None:
        with self._space:
            self._failed = True
            self._space.notify_all()


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
    if first_bytes.startswith((ZSTD_MAGIC, MARK_MAGIC)):
        return "zstd"
    if first_bytes.startswith(GZIP_MAGIC):
        return "gzip"
    return "none"


# A directory-format dump is stored as one tar archive of its files.
FORMAT_EXTENSIONS = {
    "custom": "dump",
    "directory": "dir.tar",
    "plain": "sql",
    "mariadb": "sql",  # mariadb-dump's SQL, loaded with the mariadb client
    "tar": "tar",
    "sqlite": "sqlite",
    "basebackup": "tar",
}
COMPRESSION_EXTENSIONS = {"zstd": ".zst", "gzip": ".gz", "none": ""}


def extension_for(fmt: str, compression: str, encrypted: bool) -> str:
    ext = FORMAT_EXTENSIONS[fmt] + COMPRESSION_EXTENSIONS[compression]
    return ext + ".enc" if encrypted else ext

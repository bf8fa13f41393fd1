"""The backup stream: dump → compress → encrypt → hash → one writer per
destination, and the way back for reading a stored object.

The dump is read and transformed in the calling thread; each destination has
its own writer thread fed through a bounded queue, so memory stays at a few
chunks whatever the database size, and a slow upload slows the pipeline
instead of filling memory. One failing destination does not stop the others.
"""

import contextlib
import hashlib
import io
import itertools
import queue
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from catalog.engine import crypto
from catalog.engine.compression import count_decompressed, decompress_stream, detect_compression, make_compressor
from catalog.engine.errors import Cancelled, CorruptionError, EngineError, StorageError
from catalog.engine.storage.base import Writer


class DumpStream(Protocol):
    """What the pipeline reads: chunks of bytes, how many so far, and a way to stop."""

    raw_bytes: int

    def __iter__(self) -> Iterator[bytes]: ...

    def cancel(self) -> None: ...


# on_progress(phase, raw bytes read, bytes stored so far)
Progress = Callable[[str, int, int], object]


@dataclass
class PipelineResult:
    raw_bytes: int
    stored_bytes: int
    sha256: str
    sizes: dict[str, int] = field(default_factory=dict)  # destination name → stored size
    errors: dict[str, str] = field(default_factory=dict)  # destination name → what failed


class WriterFeed:
    """Runs one destination's writer in its own thread behind a bounded queue."""

    def __init__(self, name: str, writer: Writer, depth: int) -> None:
        self.name = name
        self.writer = writer
        self.error: str | None = None
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._run, name=f"writer-{name}", daemon=True)
        self._thread.start()

    def healthy(self) -> bool:
        return self.error is None

    def put(self, data: bytes) -> None:
        if self.healthy():
            self._queue.put(data)

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            if self.error is not None:
                continue  # keep draining so the producer never blocks
            try:
                self.writer.write(data)
            except Exception as exc:
                self.error = str(exc) if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
                self._abort_writer()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def commit(self) -> int | None:
        """Makes the copy durable; returns its size or records the error."""
        self.close()
        if not self.healthy():
            return None
        try:
            return self.writer.commit()
        except Exception as exc:
            self.error = str(exc) if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
            self._abort_writer()
            return None

    def abort(self) -> None:
        self.close()
        self._abort_writer()

    def _abort_writer(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.abort()


def watch_for_cancel(cancel_event: threading.Event, dump: DumpStream, done: threading.Event) -> threading.Thread:
    """Stops the dump as soon as someone asks, even while it is blocked."""

    def wait() -> None:
        while not done.is_set():
            if cancel_event.wait(0.2):
                dump.cancel()
                return

    thread = threading.Thread(target=wait, name="cancel-watch", daemon=True)
    thread.start()
    return thread


def run_pipeline(
    dump: DumpStream,
    *,
    compression: str = "zstd",
    level: int | None = None,
    encryptor: crypto.Encryptor | None = None,
    writers: Mapping[str, Writer],
    on_progress: Progress | None = None,
    cancel_event: threading.Event | None = None,
    queue_depth: int = 4,
) -> PipelineResult:
    compressor = make_compressor(compression, level)
    hasher = hashlib.sha256()
    feeds = [WriterFeed(name, writer, queue_depth) for name, writer in writers.items()]
    cancel_event = cancel_event or threading.Event()
    done = threading.Event()
    watcher = watch_for_cancel(cancel_event, dump, done)
    stored = 0

    def emit(data: bytes) -> None:
        nonlocal stored
        if not data:
            return
        hasher.update(data)
        stored += len(data)
        for feed in feeds:
            feed.put(data)

    try:
        for chunk in dump:
            if cancel_event.is_set():
                raise Cancelled("Cancelled by request")
            data = compressor.compress(chunk)
            emit(encryptor.update(data) if encryptor else data)
            if on_progress:
                on_progress("dumping", dump.raw_bytes, stored)
            if not any(feed.healthy() for feed in feeds):
                dump.cancel()
                raise StorageError("Every destination failed: " + all_errors(feeds))
        if cancel_event.is_set():
            raise Cancelled("Cancelled by request")  # the dump may end quietly when stopped
        tail = compressor.flush()
        emit(encryptor.update(tail) + encryptor.finalize() if encryptor else tail)
        if on_progress:
            on_progress("finishing", dump.raw_bytes, stored)
    except BaseException as exc:
        for feed in feeds:
            feed.abort()
        if cancel_event.is_set() and not isinstance(exc, Cancelled):
            raise Cancelled("Cancelled by request") from exc
        raise
    finally:
        done.set()
        watcher.join()

    result = PipelineResult(raw_bytes=dump.raw_bytes, stored_bytes=stored, sha256=hasher.hexdigest())
    for feed in feeds:
        size = feed.commit()
        if size is None:
            result.errors[feed.name] = feed.error or ""
        else:
            result.sizes[feed.name] = size
    return result


def all_errors(feeds: Iterable[WriterFeed]) -> str:
    return "; ".join(f"{feed.name}: {feed.error}" for feed in feeds if feed.error)


def restore_stream(
    chunks: Iterable[bytes],
    keyring: crypto.Keyring | None = None,
    expected_sha256: str | None = None,
    decompress: bool = True,
    key_wraps: crypto.KeyWraps | None = None,
) -> Iterator[bytes]:
    """Yields the plain dump from a stored object's chunks.

    Decrypts when the object starts with the encryption header (keyring maps a
    key id to master key bytes; key_wraps are the extra wraps of its data key
    that key rotation added, see crypto.open_data_key) and decompresses by
    magic number. The SHA-256 of the stored bytes can only be known at the
    end: a mismatch raises CorruptionError after the last chunk, so a consumer
    must treat its output as untrusted until the generator finishes.

    Three stages overlap, each releasing the GIL while it works: reading and
    hashing in one thread, decrypting in another, decompressing in the
    caller's. The key is looked up in the caller's thread (it may read the
    metadata database).
    """
    hasher = hashlib.sha256() if expected_sha256 else None

    def hashed() -> Iterator[bytes]:
        for chunk in chunks:
            if hasher is not None:
                hasher.update(chunk)
            yield chunk

    yield from decompressed(decrypted(read_ahead(hashed()), keyring, key_wraps), decompress)
    if hasher is not None and hasher.hexdigest() != expected_sha256:
        raise CorruptionError(f"SHA-256 mismatch: expected {expected_sha256}, stored bytes give {hasher.hexdigest()}")


def plain_length(
    chunks: Iterable[bytes], keyring: crypto.Keyring | None = None, key_wraps: crypto.KeyWraps | None = None
) -> int:
    """How many plain bytes a stored object's chunks hold, read to the end
    and checked as restore_stream reads them (the same stages, the same
    CorruptionError), for a reader that needs only the count: a zstd
    stream's frames are decompressed side by side (count_decompressed)
    rather than in order in the caller's thread."""
    plain = decrypted(read_ahead(chunks), keyring, key_wraps)
    with contextlib.closing(plain):
        return count_decompressed(*compression_of(plain))


def take_head(chunks: Iterator[bytes], length: int) -> bytes:
    """At least `length` bytes from the start of `chunks` (fewer only when
    there are no more), whole chunks joined."""
    head = b""
    while len(head) < length and (chunk := next(chunks, None)) is not None:
        head += chunk
    return head


def decrypted(
    chunks: Generator[bytes], keyring: crypto.Keyring | None, key_wraps: crypto.KeyWraps | None = None
) -> Generator[bytes]:
    """The plaintext of a stored object: decrypted when it starts with the
    encryption header, as it is otherwise. The header is read and its key
    looked up here; the segments are decrypted in a thread of their own.
    Like every stage, it closes the one before it when it ends, however it
    ends, so that a read-ahead thread stops then (an exception's traceback
    could otherwise keep it alive for long)."""
    with contextlib.closing(chunks):
        head = take_head(chunks, len(crypto.MAGIC))
        if not crypto.is_encrypted(head):
            if head:
                yield head
            yield from chunks
            return
        if keyring is None:
            raise CorruptionError("the object is encrypted and no master key was given")
        decryptor = crypto.Decryptor(keyring, key_wraps)
        first = decryptor.update(head)
        while not decryptor.opened and (chunk := next(chunks, None)) is not None:
            first += decryptor.update(chunk)
        if first:
            yield first

        def rest() -> Iterator[bytes]:
            for chunk in chunks:
                yield decryptor.update(chunk)
            yield decryptor.finalize()

        yield from read_ahead(rest())


def decompressed(plain: Generator[bytes], decompress: bool = True) -> Iterator[bytes]:
    """The stream decompressed by its magic number (as it is, when it has
    none or `decompress` is off); CorruptionError when it is damaged or cut short."""
    with contextlib.closing(plain):
        yield from decompress_stream(*compression_of(plain, decompress))


def compression_of(plain: Iterator[bytes], decompress: bool = True) -> tuple[str, Iterator[bytes]]:
    """The stream's compression by its magic number ("none" when it has none
    or `decompress` is off), and the stream whole again."""
    head = take_head(plain, 4)
    name = detect_compression(head) if decompress else "none"
    return name, itertools.chain([head] if head else [], plain)


class _Failed:
    """What the read-ahead thread hands over when its iterator raised."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


def read_ahead(chunks: Iterable[bytes], depth: int = 4) -> Generator[bytes]:
    """Iterates `chunks` in a thread of its own, up to `depth` chunks ahead of
    the consumer, so that reading them (and whatever the iterator does to
    each) overlaps what the consumer does with the ones before. An error is
    raised in the consumer as it was raised. A consumer that stops early
    stops the thread and waits for it, so the iterator is never running in
    two threads; it is left open for its owner (who may read on)."""
    handover: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                handover.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
            put(_END)
        except BaseException as exc:
            put(_Failed(exc))

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = handover.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield cast(bytes, item)  # a chunk: the two markers are handled above
    finally:
        stop.set()
        thread.join()


class ChunkFile(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (restore_stream's output)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:  # a writable buffer (memoryview, bytearray)
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    def drain(self) -> None:
        for _ in self._chunks:
            pass

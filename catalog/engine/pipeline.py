"""The backup stream: dump → compress → encrypt → hash → one writer per
destination, and the way back for reading a stored object.

The dump is read and transformed in the calling thread; each destination has
its own writer thread fed through a bounded queue, so memory stays at a few
chunks whatever the database size, and a slow upload slows the pipeline
instead of filling memory. One failing destination does not stop the others.
"""

import contextlib
import hashlib
import queue
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import zstandard

from catalog.engine import crypto
from catalog.engine.compression import Decompressor, detect_compression, make_compressor, make_decompressor
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
    magic number. The SHA-256
    of the stored bytes can only be known at the end: a mismatch raises
    CorruptionError after the last chunk, so a consumer must treat its output
    as untrusted until the generator finishes.
    """
    hasher = hashlib.sha256()
    stage = _Sniffer(keyring, decompress, key_wraps)
    for chunk in chunks:
        hasher.update(chunk)
        yield from stage.feed(chunk)
    yield from stage.finish()
    if expected_sha256 and hasher.hexdigest() != expected_sha256:
        raise CorruptionError(f"SHA-256 mismatch: expected {expected_sha256}, stored bytes give {hasher.hexdigest()}")


class _Sniffer:
    """Decides from the first bytes whether to decrypt and how to decompress."""

    def __init__(
        self, keyring: crypto.Keyring | None, decompress: bool, key_wraps: crypto.KeyWraps | None = None
    ) -> None:
        self.keyring = keyring
        self.key_wraps = key_wraps
        self.decompress = decompress
        self.head = b""
        self.decryptor: crypto.Decryptor | None = None
        self.decided = False
        self.plain_head = b""
        self.decompressor: Decompressor | None = None

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        if not self.decided:
            self.head += chunk
            if len(self.head) < len(crypto.MAGIC):
                return
            self._decide()
            chunk, self.head = self.head, b""
        yield from self._plain(self.decryptor.update(chunk) if self.decryptor else chunk)

    def _decide(self) -> None:
        self.decided = True
        if crypto.is_encrypted(self.head):
            if self.keyring is None:
                raise CorruptionError("the object is encrypted and no master key was given")
            self.decryptor = crypto.Decryptor(self.keyring, self.key_wraps)

    def finish(self) -> Iterator[bytes]:
        if not self.decided:
            self._decide()
            head, self.head = self.head, b""
            yield from self._plain(self.decryptor.update(head) if self.decryptor else head)
        if self.decryptor:
            yield from self._plain(self.decryptor.finalize())
        if self.decompressor is None:
            yield from self._start_decompressor()
        if self.decompressor is not None:
            yield self.decompressor.flush()
            if not self.decompressor.complete():
                raise CorruptionError("the compressed data is truncated")

    def _plain(self, data: bytes) -> Iterator[bytes]:
        if not data:
            return
        if self.decompressor is None:
            self.plain_head += data
            if len(self.plain_head) < 4:
                return
            yield from self._start_decompressor()
            return
        yield self._decompress(data)

    def _decompress(self, data: bytes) -> bytes:
        assert self.decompressor is not None, "started by _start_decompressor()"
        try:
            return self.decompressor.decompress(data)
        except (zstandard.ZstdError, zlib.error) as exc:
            raise CorruptionError(f"the compressed data is damaged ({exc})") from exc

    def _start_decompressor(self) -> Iterator[bytes]:
        name = detect_compression(self.plain_head) if self.decompress else "none"
        self.decompressor = make_decompressor(name)
        data, self.plain_head = self.plain_head, b""
        if data:
            yield self._decompress(data)

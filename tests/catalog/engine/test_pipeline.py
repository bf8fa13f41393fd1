"""The stream from dump to writers and back: compression, encryption,
hashing, one destination failing while another succeeds, cancel."""

import hashlib
import os
import threading

import pytest

from catalog.engine import crypto
from catalog.engine.compression import detect_compression, extension_for, make_compressor
from catalog.engine.errors import Cancelled, CorruptionError, StorageError
from catalog.engine.pipeline import restore_stream, run_pipeline
from catalog.engine.storage.local import LocalStorage


class ListDump:
    """Stands in for a dumper: yields chunks, counts bytes, can be cancelled."""

    def __init__(self, chunks, block_after=None):
        self.chunks = chunks
        self.raw_bytes = 0
        self.cancelled = threading.Event()
        self.block_after = block_after

    def __iter__(self):
        for number, chunk in enumerate(self.chunks):
            if number == self.block_after:
                self.cancelled.wait(10)  # like pg_dump blocked on a lock
            if self.cancelled.is_set():
                return
            self.raw_bytes += len(chunk)
            yield chunk

    def cancel(self):
        self.cancelled.set()


class FailingWriter:
    def __init__(self, fail_after):
        self.fail_after = fail_after
        self.size = 0
        self.aborted = False

    def write(self, data):
        self.size += len(data)
        if self.size > self.fail_after:
            raise StorageError("No space left on device")

    def commit(self):
        return self.size

    def abort(self):
        self.aborted = True


def sample_chunks():
    text = b"".join(b"%d\tsome row text \xc3\xa9\n" % n for n in range(60000))
    return [text[i : i + 65536] for i in range(0, len(text), 65536)] + [os.urandom(100000)]


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
@pytest.mark.parametrize("encrypted", [True, False])
def test_round_trip_through_a_local_destination(tmp_path, compression, encrypted):
    chunks = sample_chunks()
    master_key = crypto.generate_master_key()
    encryptor = crypto.Encryptor(master_key, "mk-1", segment_size=64 * 1024) if encrypted else None
    storage = LocalStorage(tmp_path)
    key = "plan/backup." + extension_for("custom", compression, encrypted)

    result = run_pipeline(
        ListDump(chunks), compression=compression, encryptor=encryptor, writers={"disk": storage.open_writer(key)}
    )

    stored = (tmp_path / key).read_bytes()
    assert result.errors == {}
    assert result.sizes == {"disk": len(stored)} and result.stored_bytes == len(stored)
    assert result.sha256 == hashlib.sha256(stored).hexdigest()
    assert result.raw_bytes == sum(map(len, chunks))
    assert crypto.is_encrypted(stored) == encrypted
    if not encrypted:
        assert detect_compression(stored) == compression
    restored = b"".join(
        restore_stream(storage.open_reader(key), keyring=lambda _: master_key, expected_sha256=result.sha256)
    )
    assert restored == b"".join(chunks)


def test_a_wrong_checksum_is_reported_after_the_last_chunk(tmp_path):
    storage = LocalStorage(tmp_path)
    run_pipeline(ListDump([b"rows"]), compression="gzip", writers={"disk": storage.open_writer("a.sql.gz")})
    with pytest.raises(CorruptionError, match="SHA-256 mismatch"):
        b"".join(restore_stream(storage.open_reader("a.sql.gz"), expected_sha256="0" * 64))


def test_damaged_compressed_data_is_refused(tmp_path):
    compressor = make_compressor("zstd")
    data = bytearray(compressor.compress(os.urandom(1000) * 50) + compressor.flush())
    data[len(data) // 2] ^= 0xFF
    with pytest.raises(CorruptionError, match="compressed data is damaged"):
        b"".join(restore_stream([bytes(data)]))


def test_an_encrypted_object_without_a_key_is_refused():
    encryptor = crypto.Encryptor(crypto.generate_master_key(), "mk-1")
    sealed = encryptor.update(b"rows") + encryptor.finalize()
    with pytest.raises(CorruptionError, match="no master key"):
        b"".join(restore_stream([sealed]))


def test_one_failing_destination_does_not_stop_the_other(tmp_path):
    chunks = sample_chunks()
    storage = LocalStorage(tmp_path)
    failing = FailingWriter(fail_after=50000)

    result = run_pipeline(
        ListDump(chunks), compression="none", writers={"disk": storage.open_writer("a.sql"), "full": failing}
    )

    assert result.errors == {"full": "No space left on device"}
    assert failing.aborted
    assert (tmp_path / "a.sql").read_bytes() == b"".join(chunks)


def test_when_every_destination_fails_the_dump_stops_and_nothing_is_left(tmp_path):
    dump = ListDump(sample_chunks() * 20)
    writers = {"full": FailingWriter(fail_after=10000), "also-full": FailingWriter(fail_after=20000)}

    with pytest.raises(StorageError, match="Every destination failed"):
        run_pipeline(dump, compression="none", writers=writers)

    assert dump.cancelled.is_set()
    assert all(writer.aborted for writer in writers.values())
    assert list(tmp_path.iterdir()) == []


def test_cancel_stops_a_blocked_dump_and_removes_partial_files(tmp_path):
    storage = LocalStorage(tmp_path)
    dump = ListDump(sample_chunks(), block_after=2)
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()

    with pytest.raises(Cancelled):
        run_pipeline(
            dump, compression="zstd", writers={"disk": storage.open_writer("plan/a.dump.zst")}, cancel_event=cancel
        )

    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_truncated_compressed_data_is_refused(compression):
    compressor = make_compressor(compression)
    data = compressor.compress(os.urandom(1000) * 50) + compressor.flush()
    with pytest.raises(CorruptionError, match="truncated"):
        b"".join(restore_stream([data[:-6]]))

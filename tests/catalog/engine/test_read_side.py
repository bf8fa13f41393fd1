"""Reading a stored object back: the stages overlap in threads yet fail as
one, memory stays flat however compressible the data, and a zstd stream cut
short anywhere is noticed although the streaming reader does not say so."""

import hashlib
import os
import random
import threading

import pytest
import zstandard

from catalog.engine import crypto
from catalog.engine.compression import OUTPUT_PIECE, ZstdFrames, make_compressor
from catalog.engine.errors import CorruptionError, StorageError
from catalog.engine.pipeline import read_ahead, restore_stream


def compressed(name, data, chunk=1 << 20):
    compressor = make_compressor(name)
    stored = b"".join(compressor.compress(data[i : i + chunk]) for i in range(0, len(data), chunk))
    return stored + compressor.flush()


def pieces(data, size=1 << 20):
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("name", ["zstd", "gzip"])
def test_very_compressible_data_comes_back_in_bounded_pieces(name):
    data = bytes(64 << 20) + os.urandom(1000)  # 64 MiB of zeros: a few KB stored
    stored = compressed(name, data)
    assert len(stored) < 1 << 20  # one chunk of it would once have come back whole

    out = list(restore_stream(pieces(stored)))

    assert b"".join(out) == data
    assert max(map(len, out)) <= OUTPUT_PIECE


def test_an_encrypted_compressed_object_round_trips_through_the_threads():
    master = crypto.generate_master_key()
    data = os.urandom(3 << 20) + bytes(5 << 20)
    encryptor = crypto.Encryptor(master, "k1")
    stored = encryptor.update(compressed("zstd", data)) + encryptor.finalize()
    digest = hashlib.sha256(stored).hexdigest()

    stream = restore_stream(pieces(stored, 100_000), keyring={"k1": master}.__getitem__, expected_sha256=digest)
    plain = b"".join(stream)

    assert plain == data


def test_a_damaged_segment_is_reported_with_its_place_from_the_decrypting_thread():
    master = crypto.generate_master_key()
    encryptor = crypto.Encryptor(master, "k1", segment_size=1 << 16)
    stored = bytearray(encryptor.update(os.urandom(1 << 20)) + encryptor.finalize())
    stored[300_000] ^= 1

    with pytest.raises(CorruptionError) as caught:
        b"".join(restore_stream(pieces(bytes(stored), 50_000), keyring={"k1": master}.__getitem__))

    damage = caught.value
    assert damage.offset is not None and damage.length is not None
    assert damage.offset <= 300_000 < damage.offset + damage.length


def test_a_reading_error_reaches_the_consumer_as_it_was_raised():
    error = StorageError("the bucket went away")

    def chunks():
        yield b"x" * 1000
        raise error

    with pytest.raises(StorageError) as caught:
        list(read_ahead(chunks()))

    assert caught.value is error


def test_a_consumer_that_stops_early_stops_the_reading_thread():
    read = []

    def endless():
        while True:
            read.append(1)
            yield b"x"

    stream = read_ahead(endless(), depth=2)
    next(stream)
    stream.close()

    so_far = len(read)
    assert not [t for t in threading.enumerate() if t.name == "read-ahead"]
    assert len(read) == so_far  # nothing reads on after close


def frames_complete(data, piece=None):
    frames = ZstdFrames()
    for part in pieces(data, piece or random.randint(1, 5000)) if data else []:
        frames.feed(part)
    return frames.complete()


@pytest.mark.parametrize(
    "stream",
    [
        compressed("zstd", os.urandom(3000) * 300 + bytes(2_000_000) + b"abc" * 300_000),  # threaded, checksum
        zstandard.ZstdCompressor(write_checksum=False, write_content_size=False).compress(os.urandom(200_000)),
        zstandard.ZstdCompressor().compress(b""),
        b"\x5a\x2a\x4d\x18" + (3).to_bytes(4, "little") + b"xyz" + zstandard.ZstdCompressor().compress(b"q" * 10),
    ],
    ids=["threaded-with-checksum", "no-checksum-no-size", "empty", "after-a-skippable-frame"],
)
def test_a_zstd_stream_is_complete_only_at_its_very_end(stream):
    cuts = set(range(min(len(stream), 400))) | set(random.sample(range(len(stream)), min(400, len(stream))))
    assert [cut for cut in sorted(cuts) if frames_complete(stream[:cut])] == []
    assert frames_complete(stream)
    assert frames_complete(stream, piece=1)


def test_a_stream_cut_exactly_before_its_checksum_is_truncated():
    stream = compressed("zstd", os.urandom(100_000))
    with pytest.raises(CorruptionError, match="truncated"):
        b"".join(restore_stream([stream[:-4]]))


def test_bytes_that_are_not_zstd_after_its_magic_are_damaged():
    with pytest.raises(CorruptionError, match="damaged|truncated"):
        b"".join(restore_stream([b"\x28\xb5\x2f\xfd" + os.urandom(5000)]))

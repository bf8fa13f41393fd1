"""Reading a stored object back: the stages overlap in threads yet fail as
one, memory stays flat however compressible the data, and a zstd stream cut
short anywhere is noticed although the streaming reader does not say so."""

import hashlib
import os
import random
import subprocess
import threading

import pytest
import zstandard

from catalog.engine import compression, crypto
from catalog.engine.compression import OUTPUT_PIECE, STREAM_END, STREAM_START, ZstdFrames, make_compressor, mark
from catalog.engine.errors import CorruptionError, StorageError
from catalog.engine.pipeline import plain_length, read_ahead, restore_stream


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


FRAME = 1 << 18  # small frames, so a few MB make many


@pytest.fixture
def small_frames(monkeypatch):
    monkeypatch.setattr(compression, "FRAME_BYTES", FRAME)


def table_like(size, seed=7):
    """Rows that compress a few times over, the same for the same seed."""
    rows = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += b"%d\t%s\t%d\n" % (len(out), rows.randbytes(12).hex().encode(), rows.randint(0, 10**9))
    return bytes(out[:size])


def frame_ends(stream):
    frames = ZstdFrames()
    frames.feed(stream)
    return frames.frame_ends


def outcome(read):
    try:
        return read()
    except CorruptionError as exc:
        return str(exc)


def both_ways(stored, piece=100_000):
    """What restore_stream (in order) and plain_length (frames side by side) make of `stored`."""
    ordered = outcome(lambda: len(b"".join(restore_stream(pieces(stored, piece)))))
    return ordered, outcome(lambda: plain_length(pieces(stored, piece)))


def test_the_compressor_ends_a_frame_every_frame_bytes_of_input(small_frames):
    data = table_like(5 * FRAME + 1000)
    stored = compressed("zstd", data, chunk=100_000)  # frames end inside chunks too

    ends = frame_ends(stored)
    start, end = mark(STREAM_START), mark(STREAM_END)
    assert stored.startswith(start) and stored.endswith(end)
    assert len(ends) == 6 and ends[-1] == len(stored) - len(end)
    starts = [len(start), *ends[:-1]]
    assert [
        len(zstandard.ZstdDecompressor().decompressobj().decompress(stored[a:b]))
        for a, b in zip(starts, ends, strict=True)
    ] == [FRAME] * 5 + [1000]
    assert (
        frame_ends(compressed("zstd", data[: 2 * FRAME]))
        == frame_ends(stored)[:1]
        + [  # no empty frame at the end
            len(compressed("zstd", data[: 2 * FRAME])) - len(end)
        ]
    )


@pytest.mark.parametrize("piece", [1, 777, 1 << 20])
def test_frame_ends_are_found_however_the_stream_is_cut_into_pieces(piece):
    parts = [
        zstandard.ZstdCompressor(write_checksum=True).compress(table_like(300_000, seed=1)),
        zstandard.ZstdCompressor(write_checksum=False, write_content_size=False).compress(os.urandom(200_000)),
        zstandard.ZstdCompressor().compress(b""),
    ]
    stream = b"".join(parts)
    frames = ZstdFrames()
    for part in pieces(stream, piece):
        frames.feed(part)
    assert frames.frame_ends == [len(parts[0]), len(parts[0]) + len(parts[1]), len(stream)]
    assert frames.position == len(stream) and frames.complete()


@pytest.mark.parametrize("encrypted", [False, True])
def test_a_stream_of_many_frames_round_trips_and_counts_exactly(small_frames, monkeypatch, encrypted):
    monkeypatch.setattr(compression, "IN_FLIGHT", 3 * 50_000)  # the reader waits for the decoding threads
    data = table_like(12 * FRAME + 12345) + bytes(3 * FRAME)
    stored = compressed("zstd", data)
    keyring = None
    if encrypted:
        master = crypto.generate_master_key()
        encryptor = crypto.Encryptor(master, "k1")
        stored = encryptor.update(stored) + encryptor.finalize()
        keyring = {"k1": master}.__getitem__
    assert len(frame_ends(compressed("zstd", data))) == 16

    assert b"".join(restore_stream(pieces(stored, 50_000), keyring=keyring)) == data
    assert plain_length(pieces(stored, 50_000), keyring=keyring) == len(data)
    assert not [t for t in threading.enumerate() if t.name.startswith("zstd-frame")]


def test_a_single_frame_stream_from_before_frames_is_counted():
    params = zstandard.ZstdCompressionParameters.from_level(3, threads=-1, job_size=1 << 20, write_checksum=True)
    data = table_like(3 << 20)
    stored = zstandard.ZstdCompressor(compression_params=params).compress(data)
    assert len(frame_ends(stored)) == 1

    assert both_ways(stored) == (len(data), len(data))


@pytest.mark.parametrize("frame", [1, 2])
def test_a_flipped_byte_inside_a_later_frame_is_found_the_same_way(small_frames, frame):
    data = table_like(6 * FRAME)
    stored = bytearray(compressed("zstd", data))
    ends = frame_ends(bytes(stored))
    stored[(ends[frame - 1] + ends[frame]) // 2] ^= 0x20  # in the middle of frame 2 or 3

    ordered, side_by_side = both_ways(bytes(stored))

    assert ordered.startswith("the compressed data is damaged (")
    assert side_by_side == ordered


def test_the_first_damaged_frame_is_the_one_reported(small_frames):
    stored = bytearray(compressed("zstd", table_like(6 * FRAME)))
    ends = frame_ends(bytes(stored))
    stored[ends[4] - 2] ^= 0xFF  # the checksum of frame 5
    stored[ends[0] + 4] = 0xFF  # the descriptor of frame 2: reserved bit set

    ordered, side_by_side = both_ways(bytes(stored), piece=1 << 20)

    assert side_by_side == ordered and "checksum" not in ordered


@pytest.mark.parametrize("where", ["inside a frame", "inside a frame header"])
def test_a_stream_of_many_frames_cut_short_is_truncated(small_frames, where):
    stored = compressed("zstd", table_like(4 * FRAME))
    ends = frame_ends(stored)
    cut = {"inside a frame": (ends[1] + ends[2]) // 2, "inside a frame header": ends[1] + 5}[where]
    assert both_ways(stored[:cut]) == ("the compressed data is truncated",) * 2


@pytest.mark.parametrize("frames", [1, 2, 4])
def test_a_stream_cut_exactly_at_a_frames_end_is_truncated(small_frames, frames):
    """The frames before such a cut make a whole zstd stream: the mark at the
    stream's end is what says it is cut (with one frame as much as with more)."""
    stored = compressed("zstd", table_like(4 * FRAME))
    cut = stored[: frame_ends(stored)[frames - 1]]
    assert both_ways(cut) == ("the compressed data is truncated",) * 2
    # Any zstd decoder still reads the stream itself, marks and all.
    assert zstandard.ZstdDecompressor().stream_reader(stored, read_across_frames=True).read() == table_like(4 * FRAME)


def test_the_zstd_tool_reads_a_stream_of_many_frames(small_frames):
    """An unencrypted object is decompressed with `zstd -dc` when Strongroom
    is not there (README, Disaster recovery without Strongroom)."""
    data = table_like(3 * FRAME + 5)
    done = subprocess.run(["zstd", "-dc"], input=compressed("zstd", data), capture_output=True, check=True)
    assert done.stdout == data


def test_bytes_that_are_not_zstd_after_a_frame_are_damaged_the_same_way(small_frames):
    stored = compressed("zstd", table_like(2 * FRAME))
    ordered, side_by_side = both_ways(stored + b"not zstd at all" * 1000)
    assert ordered.startswith("the compressed data is damaged (") and side_by_side == ordered

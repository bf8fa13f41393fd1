"""Local and S3 storage against a real directory and moto's S3 server."""

import os
from datetime import UTC

import pytest

from catalog.engine.errors import StorageError
from catalog.engine.storage.local import LocalStorage
from catalog.engine.storage.s3 import PART_SIZE, S3Storage
from tests.harness import s3


def test_local_writer_publishes_only_on_commit(tmp_path):
    storage = LocalStorage(tmp_path)
    writer = storage.open_writer("plan/one.dump")
    writer.write(b"abc")
    assert not storage.exists("plan/one.dump")
    assert writer.commit() == 3
    assert storage.get_bytes("plan/one.dump") == b"abc"
    assert [p.name for p in (tmp_path / "plan").iterdir()] == ["one.dump"]


def test_local_abort_leaves_nothing(tmp_path):
    storage = LocalStorage(tmp_path)
    writer = storage.open_writer("plan/one.dump")
    writer.write(b"abc")
    writer.abort()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("key", ["../escape", "/etc/passwd", "a/../../b", ""])
def test_keys_outside_the_destination_are_refused(tmp_path, key):
    with pytest.raises(StorageError, match="outside the destination"):
        LocalStorage(tmp_path).open_writer(key)


def test_local_delete_removes_empty_directories_but_not_the_root(tmp_path):
    storage = LocalStorage(tmp_path)
    storage.put_bytes("plan/2026/one.dump", b"x")
    storage.delete("plan/2026/one.dump")
    assert tmp_path.exists() and list(tmp_path.iterdir()) == []


def test_local_probe_says_what_is_wrong(tmp_path):
    LocalStorage(tmp_path).probe()
    assert list(tmp_path.iterdir()) == []
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError, match=str(blocker)):
        LocalStorage(blocker / "sub").probe()


def storage_in(s3_bucket, **options):
    """An S3Storage on the test bucket; options: prefix, part sizes."""
    return S3Storage(
        bucket=s3_bucket["bucket"],
        endpoint_url=s3_bucket["endpoint_url"],
        region=s3_bucket["region"],
        access_key_id=s3_bucket["access_key_id"],
        secret_access_key=s3_bucket["secret_access_key"],
        **options,
    )


@pytest.fixture
def bucket_storage(s3_bucket):
    return storage_in(s3_bucket, prefix="team/")


def test_s3_multipart_round_trip(bucket_storage, s3_bucket):
    payload = os.urandom(2 * PART_SIZE + 12345)
    writer = bucket_storage.open_writer("plan/big.dump")
    for start in range(0, len(payload), 1 << 20):
        writer.write(payload[start : start + (1 << 20)])
    assert writer.commit() == len(payload)

    assert s3.all_keys(s3_bucket["endpoint_url"], s3_bucket["bucket"]) == ["team/plan/big.dump"]
    assert b"".join(bucket_storage.open_reader("plan/big.dump")) == payload
    assert s3.open_uploads(s3_bucket["endpoint_url"], s3_bucket["bucket"]) == []


@pytest.mark.parametrize(
    "size, piece",
    [(3 * (5 << 20) + 777, 333_333), (2 * (5 << 20), 1 << 20), (5 << 20, 5 << 20), ((5 << 20) - 1, 4099)],
    ids=["tail, odd pieces", "whole parts", "one part in one write", "just under a part"],
)
def test_s3_parts_are_cut_where_they_always_were(s3_bucket, size, piece):
    """Two reused buffers, whatever the object's size: the stored object has
    the same bytes and the same parts (its ETag is derived from each part's
    MD5) as one uploaded in part_size slices of the payload."""
    import hashlib

    from catalog.engine.storage.s3 import multipart_etag

    part = 5 << 20
    storage = storage_in(s3_bucket, part_size=part)
    payload = os.urandom(size)
    writer = storage.open_writer("plan/parts.dump")
    for start in range(0, size, piece):
        writer.write(payload[start : start + piece])
    assert writer.commit() == size

    assert writer._buffers <= 2
    assert b"".join(storage.open_reader("plan/parts.dump")) == payload
    slices = [payload[start : start + part] for start in range(0, size, part)]
    etag = storage.client.head_object(Bucket=s3_bucket["bucket"], Key="plan/parts.dump")["ETag"]
    if size < part:
        assert etag == f'"{hashlib.md5(payload).hexdigest()}"'  # one plain PUT
    else:
        assert etag == multipart_etag([{"ETag": hashlib.md5(p).hexdigest()} for p in slices])
    assert s3.open_uploads(s3_bucket["endpoint_url"], s3_bucket["bucket"]) == []


def test_s3_empty_object_is_stored_empty(bucket_storage):
    writer = bucket_storage.open_writer("plan/empty.dump")
    assert writer.commit() == 0
    assert bucket_storage.get_bytes("plan/empty.dump") == b""


def test_a_part_body_reads_like_a_file_without_copying_the_part():
    from catalog.engine.storage.s3 import PartBody

    data = bytearray(os.urandom(PartBody.PIECE * 3 + 5))
    body = PartBody(memoryview(data)[1:])
    assert len(body) == len(data) - 1 and body.seekable() and body.readable()
    pieces = list(iter(lambda: body.read(1 << 20), b""))
    assert max(map(len, pieces)) == PartBody.PIECE  # botocore asks for 1 MiB; smaller pieces keep memory down
    assert b"".join(pieces) == data[1:] and body.tell() == len(data) - 1
    assert body.seek(0) == 0 and body.read() == data[1:]
    assert body.seek(-2, os.SEEK_END) == len(data) - 3 and body.read(10) == data[-2:]
    body.seek(4)
    assert body.seek(3, os.SEEK_CUR) == 7 and body.read(3) == data[8:11]


def test_s3_small_object_is_one_put(bucket_storage, s3_bucket):
    writer = bucket_storage.open_writer("plan/small.dump")
    writer.write(b"tiny")
    writer.commit()
    assert bucket_storage.get_bytes("plan/small.dump") == b"tiny"
    assert bucket_storage.list_keys("plan/") == ["plan/small.dump"]


def test_s3_abort_leaves_no_object_and_no_open_upload(bucket_storage, s3_bucket):
    writer = bucket_storage.open_writer("plan/big.dump")
    writer.write(os.urandom(PART_SIZE + 10))
    writer.abort()
    assert s3.all_keys(s3_bucket["endpoint_url"], s3_bucket["bucket"]) == []
    assert s3.open_uploads(s3_bucket["endpoint_url"], s3_bucket["bucket"]) == []


def test_s3_probe_and_delete(bucket_storage, s3_bucket):
    bucket_storage.probe()
    bucket_storage.put_bytes("a", b"1")
    assert bucket_storage.exists("a")
    bucket_storage.delete("a")
    assert not bucket_storage.exists("a")
    assert s3.all_keys(s3_bucket["endpoint_url"], s3_bucket["bucket"]) == []


def test_a_missing_bucket_is_named(s3_server):
    storage = S3Storage(
        bucket="no-such-bucket",
        endpoint_url=s3_server,
        region="us-east-1",
        access_key_id="testing",
        secret_access_key="testing",
    )
    with pytest.raises(StorageError, match="S3 bucket no-such-bucket does not exist"):
        storage.probe()


def test_s3_object_lock_holds_for_multipart_copies_too(s3_server):
    """Some servers ignore lock headers on multipart uploads; the writer makes sure."""
    from datetime import datetime, timedelta

    client = s3.client(s3_server)
    client.create_bucket(Bucket="worm-bucket", ObjectLockEnabledForBucket=True)
    storage = S3Storage(
        bucket="worm-bucket",
        endpoint_url=s3_server,
        region="us-east-1",
        access_key_id="testing",
        secret_access_key="testing",
        lock_mode="GOVERNANCE",
    )
    until = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    writer = storage.open_writer("big.dump", retain_until=until)
    writer.write(os.urandom(PART_SIZE + 100))
    writer.commit()

    head = client.head_object(Bucket="worm-bucket", Key="big.dump")
    assert head["ObjectLockMode"] == "GOVERNANCE" and head["ObjectLockRetainUntilDate"] >= until
    with pytest.raises(StorageError, match="denied"):
        storage.delete("big.dump")  # every version, and the server refuses
    assert client.list_object_versions(Bucket="worm-bucket")["Versions"]


def test_later_parts_grow_so_that_ten_thousand_parts_hold_more_than_a_terabyte(s3_bucket):
    """S3 takes at most 10,000 parts: at 8 MiB each an object could not pass
    78 GiB. The parts double in size every PARTS_PER_SIZE parts; moto's S3
    takes such an upload (parts of 5, 5, 10, 10, 20 MiB here, every second
    part doubling) and the ETag says each part was cut where planned."""
    import hashlib

    from catalog.engine.storage.s3 import MAX_PARTS, multipart_etag, part_size_for

    assert part_size_for(1) == part_size_for(1500) == 8 << 20 and part_size_for(1501) == 16 << 20
    assert sum(part_size_for(n) for n in range(1, MAX_PARTS + 1)) > 1.2 * (1 << 40)
    assert part_size_for(MAX_PARTS) == 512 << 20

    storage = storage_in(s3_bucket, part_size=5 << 20, parts_per_size=2)
    sizes = [part_size_for(n, 5 << 20, 2) for n in range(1, 6)]
    assert sizes == [5 << 20, 5 << 20, 10 << 20, 10 << 20, 20 << 20]
    payload = os.urandom(sum(sizes[:4]) + 3 * (1 << 20))
    writer = storage.open_writer("plan/growing.dump")
    for start in range(0, len(payload), 1 << 20):
        writer.write(payload[start : start + (1 << 20)])
    assert writer.commit() == len(payload)

    assert writer._buffers <= 2
    assert b"".join(storage.open_reader("plan/growing.dump")) == payload
    bounds = [sum(sizes[:n]) for n in range(5)] + [len(payload)]
    slices = [payload[bounds[n] : bounds[n + 1]] for n in range(5)]
    etag = storage.client.head_object(Bucket=s3_bucket["bucket"], Key="plan/growing.dump")["ETag"]
    assert etag == multipart_etag([{"ETag": hashlib.md5(p).hexdigest()} for p in slices])

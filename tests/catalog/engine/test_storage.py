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


@pytest.fixture
def bucket_storage(s3_bucket):
    return S3Storage(
        bucket=s3_bucket["bucket"],
        prefix="team/",
        endpoint_url=s3_bucket["endpoint_url"],
        region=s3_bucket["region"],
        access_key_id=s3_bucket["access_key_id"],
        secret_access_key=s3_bucket["secret_access_key"],
    )


def test_s3_multipart_round_trip(bucket_storage, s3_bucket):
    payload = os.urandom(2 * PART_SIZE + 12345)
    writer = bucket_storage.open_writer("plan/big.dump")
    for start in range(0, len(payload), 1 << 20):
        writer.write(payload[start : start + (1 << 20)])
    assert writer.commit() == len(payload)

    assert s3.all_keys(s3_bucket["endpoint_url"], s3_bucket["bucket"]) == ["team/plan/big.dump"]
    assert b"".join(bucket_storage.open_reader("plan/big.dump")) == payload
    assert s3.open_uploads(s3_bucket["endpoint_url"], s3_bucket["bucket"]) == []


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

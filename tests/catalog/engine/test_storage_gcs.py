"""Google Cloud Storage against the GCS emulator (tests/harness/gcs.py), over
HTTP as Strongroom reaches Google: resumable uploads chunk by chunk, resumed
reads and uploads, bounded memory, and errors in words."""

import json
import os
import subprocess
import sys
import tracemalloc

import pytest

from catalog.engine.errors import StorageError
from catalog.engine.storage.gcs import GcsStorage
from tests.harness.faulty_proxy import FaultyProxy
from tests.harness.gcs import READER, REPO
from tests.harness.pg import free_port

CHUNK = 256 << 10  # the smallest chunk GCS takes


def storage_in(bucket, **options):
    """A GcsStorage on the test bucket with the writer's key; options override."""
    arguments = {
        "bucket": bucket["bucket"],
        "prefix": "team/",
        "endpoint_url": bucket["endpoint_url"],
        "service_account_json": bucket["service_account_json"],
        "chunk_size": CHUNK,
        **options,
    }
    return GcsStorage(**arguments)


@pytest.fixture
def proxy(gcs_server):
    """A proxy in front of the emulator that breaks the requests a test tells it to."""
    proxy = FaultyProxy(gcs_server.endpoint_url, stall_seconds=10)
    yield proxy
    proxy.stop()


def write_in_pieces(writer, payload, piece=100_000):
    for start in range(0, len(payload), piece):
        writer.write(payload[start : start + piece])


def sessions(bucket):
    return bucket["server"].open_sessions(bucket["bucket"])


def uploads(proxy):
    """The chunk PUTs (and status queries) of resumable sessions the proxy saw."""
    return [seen for seen in proxy.plan.requests("put_object") if seen.key.startswith("upload/")]


def test_a_chunked_upload_round_trips(gcs_bucket, proxy):
    storage = storage_in(gcs_bucket, endpoint_url=proxy.url)
    payload = os.urandom(2 * CHUNK + 12345)
    writer = storage.open_writer("plan/big.dump")
    write_in_pieces(writer, payload)
    assert gcs_bucket["server"].all_keys(gcs_bucket["bucket"]) == []  # nothing visible before commit
    assert writer.commit() == len(payload)

    assert len(uploads(proxy)) == 3  # two whole chunks, then the rest ending the upload
    assert gcs_bucket["server"].all_keys(gcs_bucket["bucket"]) == ["team/plan/big.dump"]
    assert b"".join(storage.open_reader("plan/big.dump")) == payload
    assert storage.read_head("plan/big.dump", 10) == payload[:10]
    assert sessions(gcs_bucket) == {}


def test_a_small_object_is_one_upload_and_an_empty_one_is_stored_empty(gcs_bucket, proxy):
    storage = storage_in(gcs_bucket, endpoint_url=proxy.url)
    storage.put_bytes("plan/small.dump", b"tiny")
    assert uploads(proxy) == [] and len(proxy.plan.requests("post")) == 1

    assert storage.open_writer("plan/empty.dump").commit() == 0
    assert storage.get_bytes("plan/empty.dump") == b"" and storage.read_head("plan/empty.dump", 8) == b""
    assert storage.list_sizes() == {"plan/empty.dump": 0, "plan/small.dump": 4}


def test_an_object_of_whole_chunks_is_ended_by_an_empty_last_request(gcs_bucket):
    storage = storage_in(gcs_bucket)
    payload = os.urandom(2 * CHUNK)
    writer = storage.open_writer("plan/even.dump")
    writer.write(payload)
    assert writer.commit() == len(payload)
    assert storage.get_bytes("plan/even.dump") == payload


def test_abort_leaves_no_object_and_cancels_the_session(gcs_bucket):
    storage = storage_in(gcs_bucket)
    writer = storage.open_writer("plan/big.dump")
    writer.write(os.urandom(CHUNK + 10))
    held = sessions(gcs_bucket)
    assert list(held) == ["team/plan/big.dump"] and held["team/plan/big.dump"].stat().st_size == CHUNK

    writer.abort()

    assert gcs_bucket["server"].all_keys(gcs_bucket["bucket"]) == []
    assert sessions(gcs_bucket) == {} and not held["team/plan/big.dump"].exists()  # its bytes are gone too
    assert storage.list_partials() == []


def test_a_killed_write_leaves_nothing_in_the_bucket(gcs_bucket):
    """A worker killed mid-upload: its session keeps the chunks it got on the
    server's side until it expires (GCS: a week), out of the bucket and out
    of every listing, so there is no partial for the orphan scan to show."""
    script = (
        "import os, sys\n"
        "from catalog.engine.storage.gcs import GcsStorage\n"
        "storage = GcsStorage(sys.argv[1], 'team', sys.argv[2], chunk_size=256 << 10)\n"
        "storage.open_writer('plan/killed.dump').write(os.urandom(3 * (256 << 10)))\n"
        "print('sent', flush=True)\n"
        "sys.stdin.read()\n"
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", script, gcs_bucket["bucket"], gcs_bucket["endpoint_url"]],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout.readline() == "sent\n"
    worker.kill()
    worker.wait()

    storage = storage_in(gcs_bucket)
    assert list(sessions(gcs_bucket)) == ["team/plan/killed.dump"]
    assert storage.list_partials() == [] and storage.list_sizes() == {}
    assert gcs_bucket["server"].all_keys(gcs_bucket["bucket"]) == []
    storage.cleanup_partials("plan/killed.dump")  # nothing to do, and no error


def test_probe_delete_and_listings_stay_inside_the_prefix(gcs_bucket):
    storage = storage_in(gcs_bucket)
    storage.probe()
    assert gcs_bucket["server"].all_keys(gcs_bucket["bucket"]) == []

    bucket = gcs_bucket["server"].client().bucket(gcs_bucket["bucket"])
    bucket.blob("elsewhere/x").upload_from_string(b"x")
    bucket.blob("team/notes/").upload_from_string(b"")  # a folder made in the console
    storage.put_bytes("plan/a.dump", b"12")
    storage.put_bytes("plan/a.dump.manifest.json", b"{}")
    storage.put_bytes("other/b.dump", b"345")
    assert storage.list_keys() == ["other/b.dump", "plan/a.dump", "plan/a.dump.manifest.json"]
    assert storage.list_keys("plan/") == ["plan/a.dump", "plan/a.dump.manifest.json"]
    assert storage.list_sizes() == {"other/b.dump": 3, "plan/a.dump": 2, "plan/a.dump.manifest.json": 2}
    assert storage.exists("plan/a.dump") and storage.size("other/b.dump") == 3

    storage.delete("plan/a.dump")
    storage.delete("plan/a.dump")  # already gone: nothing to say
    assert not storage.exists("plan/a.dump")
    assert gcs_bucket["server"].all_keys(gcs_bucket["bucket"]) == [
        "elsewhere/x",
        "team/notes/",
        "team/other/b.dump",
        "team/plan/a.dump.manifest.json",
    ]


def test_a_read_broken_mid_way_resumes_where_it_stopped(gcs_bucket, proxy):
    storage = storage_in(gcs_bucket, endpoint_url=proxy.url)
    payload = os.urandom(3 << 20)
    storage.put_bytes("plan/big.dump", payload)

    reader = storage.open_reader("plan/big.dump")
    proxy.plan.add("reset_mid_body", op="get_object")  # the next GET is the object's bytes
    assert b"".join(reader) == payload

    reads = [seen for seen in proxy.plan.requests("get_object") if seen.key.startswith("download/")]
    assert [seen.action for seen in reads] == ["reset_mid_body", "forward"]


def test_a_read_that_keeps_breaking_gives_up_in_words(gcs_bucket, proxy):
    storage = storage_in(gcs_bucket, endpoint_url=proxy.url, max_attempts=3)
    storage.put_bytes("plan/big.dump", os.urandom(1 << 20))
    reader = storage.open_reader("plan/big.dump")
    proxy.plan.add("reset_mid_body", op="get_object", times=None)

    with pytest.raises(StorageError) as caught:
        b"".join(reader)
    host = proxy.url.removeprefix("http://")
    assert str(caught.value) == (
        f"Lost the connection to {host} for bucket {gcs_bucket['bucket']} (gave up after 3 attempts)"
    )


def test_a_read_resumed_after_the_object_was_replaced_fails_rather_than_mixing_two(gcs_bucket, proxy):
    """Every GET of a read, the first and those resuming it, names the
    generation the object had when the read began."""
    storage = storage_in(gcs_bucket, endpoint_url=proxy.url)
    storage.put_bytes("plan/big.dump", os.urandom(3 << 20))
    reader = storage.open_reader("plan/big.dump")
    storage.put_bytes("plan/big.dump", os.urandom(3 << 20))  # a new generation
    proxy.plan.add("reset", op="get_object")  # the read's first GET breaks; the second resumes it

    with pytest.raises(StorageError, match="plan/big.dump in bucket .* was replaced while it was being read"):
        b"".join(reader)
    reads = [seen for seen in proxy.plan.requests("get_object") if seen.key.startswith("download/")]
    assert [(seen.action, seen.status) for seen in reads] == [("reset", None), ("forward", 412)]


@pytest.mark.parametrize(
    "fault, before_commit",
    [("reset_after_forward", False), ("reset", False), ("503", False), ("reset_after_forward", True)],
    ids=["chunk delivered, answer lost", "chunk never sent", "server error", "last chunk delivered, answer lost"],
)
def test_an_upload_goes_on_after_a_broken_request(gcs_bucket, proxy, fault, before_commit):
    """After a failed request the session is asked what it holds, and the
    upload resumes from there: nothing sent twice, nothing missing."""
    storage = storage_in(gcs_bucket, endpoint_url=proxy.url)
    payload = os.urandom(3 * CHUNK + 777)
    writer = storage.open_writer("plan/big.dump")
    writer.write(payload[:CHUNK])  # the session is open and holds the first chunk
    if not before_commit:
        proxy.plan.add(fault, op="put_object")
    writer.write(payload[CHUNK:])
    if before_commit:
        proxy.plan.add(fault, op="put_object")
    assert writer.commit() == len(payload)

    assert proxy.plan.pending() == []
    assert storage.get_bytes("plan/big.dump") == payload
    assert sessions(gcs_bucket) == {}


def test_memory_stays_at_a_few_chunks_whatever_the_object_size(gcs_bucket):
    """A 64 MiB object written in 2 MiB chunks: Python's allocations peak at a
    few chunks (the emulator runs in its own process and is not counted)."""
    chunk = 2 << 20
    storage = storage_in(gcs_bucket, chunk_size=chunk)
    piece = os.urandom(256 << 10)
    writer = storage.open_writer("plan/large.dump")
    tracemalloc.start()
    try:
        for _ in range((64 << 20) // len(piece)):
            writer.write(piece)
        size = writer.commit()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert size == 64 << 20 and storage.size("plan/large.dump") == size  # and commit() checked its CRC32C
    assert peak < 3 * chunk, f"peak {peak} bytes"


def test_wrong_credentials_say_so_without_the_key(gcs_bucket, gcs_server):
    forged = gcs_server.forged_key()
    with pytest.raises(StorageError) as caught:
        storage_in(gcs_bucket, service_account_json=forged).probe()
    message = str(caught.value)
    assert message == f"Google did not accept the service account key for bucket {gcs_bucket['bucket']} (invalid_grant)"
    key = json.loads(forged)
    assert key["private_key_id"] not in message and "PRIVATE KEY" not in message


@pytest.mark.parametrize(
    "key, expected",
    [
        ("{not json", "The service account key for bucket {bucket} is not valid JSON"),
        ('{"type": "authorized_user"}', "The key for bucket {bucket} is not a service account key"),
        (
            '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\nMIIsecret"}',
            "The service account key for bucket {bucket} cannot be used",
        ),
    ],
    ids=["not JSON", "not a service account", "fields missing"],
)
def test_a_key_that_cannot_be_used_is_refused_in_words(gcs_bucket, key, expected):
    with pytest.raises(StorageError) as caught:
        storage_in(gcs_bucket, service_account_json=key)
    assert str(caught.value).startswith(expected.format(bucket=gcs_bucket["bucket"]))
    assert "MIIsecret" not in str(caught.value) and caught.value.__cause__ is None


def test_an_account_that_may_only_read_is_told_what_it_lacks(gcs_bucket, gcs_server):
    with pytest.raises(StorageError) as caught:
        storage_in(gcs_bucket, service_account_json=gcs_server.keys[READER]).probe()
    assert str(caught.value) == (
        f"Permission denied on bucket {gcs_bucket['bucket']}: the account lacks storage.objects.create"
    )


def test_a_missing_bucket_and_a_missing_object_are_told_apart(gcs_bucket, gcs_server):
    with pytest.raises(StorageError, match="^Google Cloud Storage bucket no-such-bucket does not exist$"):
        storage_in({**gcs_bucket, "bucket": "no-such-bucket"}).probe()
    with pytest.raises(StorageError, match="^plan/gone.dump is missing from bucket sr-test-"):
        storage_in(gcs_bucket).open_reader("plan/gone.dump")


def test_an_unreachable_server_is_named(gcs_bucket):
    closed = f"127.0.0.1:{free_port()}"
    with pytest.raises(StorageError) as caught:
        storage_in(gcs_bucket, endpoint_url=f"http://{closed}", service_account_json=None, max_attempts=2).probe()
    assert str(caught.value) == (f"Cannot reach {closed} for bucket {gcs_bucket['bucket']} (gave up after 2 attempts)")


def test_a_server_that_stops_answering_is_a_read_timeout(gcs_bucket, proxy):
    storage = storage_in(gcs_bucket, endpoint_url=proxy.url, read_timeout=1, max_attempts=1)
    proxy.plan.add("stall", times=None)
    with pytest.raises(StorageError, match="stopped answering \\(read timeout\\) for bucket"):
        storage.probe()


def test_no_key_is_needed_for_an_emulator_but_google_needs_one(gcs_bucket):
    storage_in(gcs_bucket, service_account_json=None).probe()  # anonymous, as emulators are used
    with pytest.raises(StorageError, match="No service account key is set for bucket"):
        GcsStorage(bucket="anything")

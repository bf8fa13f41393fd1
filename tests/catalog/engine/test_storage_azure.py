"""Azure Blob storage against Azurite, the Azure Storage emulator
(tests/harness/azurite.py): blocks staged and committed, nothing visible or
left behind by an unfinished write, reads resumed after a cut connection,
memory bounded whatever the size, and errors in words without a secret."""

import os
import re
import signal
import subprocess
import sys
import textwrap
import traceback
import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest

from catalog.engine.errors import StorageError
from catalog.engine.storage.azure import GET_SIZE, AzureStorage, block_size_for
from tests.harness import azurite
from tests.harness.faulty_proxy import FaultyProxy
from tests.support import wait_for

MiB = 1 << 20
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def storage_in(container, **options):
    """An AzureStorage on the test container with the account key; options:
    prefix, block sizes, attempts, another endpoint or credentials."""
    arguments = {
        "container": container["container"],
        "account_name": container["account_name"],
        "endpoint_url": container["endpoint_url"],
        "account_key": container["account_key"],
        "block_size": MiB,
        **options,
    }
    return AzureStorage(**arguments)


@pytest.fixture
def storage(azure_container):
    return storage_in(azure_container, prefix="team/")


def write_in_pieces(writer, payload, piece=333_333):
    for start in range(0, len(payload), piece):
        writer.write(payload[start : start + piece])


def test_an_object_of_several_blocks_is_visible_only_once_committed(storage, azure_container):
    payload = os.urandom(2 * MiB + 12345)
    writer = storage.open_writer("plan/big.dump")
    write_in_pieces(writer, payload)
    wait_for(lambda: writer._staged == 2)  # the two full blocks are staged; nothing is committed yet
    assert azurite.committed_blobs(azure_container) == [] and not storage.exists("plan/big.dump")
    assert azurite.uncommitted_blobs(azure_container) == ["team/plan/big.dump"]

    assert writer.commit() == len(payload)

    assert azurite.committed_blobs(azure_container) == ["team/plan/big.dump"]
    assert azurite.uncommitted_blobs(azure_container) == []
    blob = azurite.container_client(azure_container).get_blob_client("team/plan/big.dump")
    committed, uncommitted = blob.get_block_list("all")
    assert [block.size for block in committed] == [MiB, MiB, 12345] and uncommitted == []
    assert b"".join(storage.open_reader("plan/big.dump")) == payload
    assert storage.size("plan/big.dump") == len(payload) and storage.read_head("plan/big.dump", 7) == payload[:7]


def test_an_empty_object_is_stored_empty(storage):
    assert storage.open_writer("plan/empty.dump").commit() == 0
    assert storage.get_bytes("plan/empty.dump") == b"" and storage.read_head("plan/empty.dump", 10) == b""
    assert storage.list_sizes() == {"plan/empty.dump": 0}


def test_an_aborted_write_leaves_no_blob_and_no_staged_block(storage, azure_container):
    writer = storage.open_writer("plan/big.dump")
    write_in_pieces(writer, os.urandom(2 * MiB + 10))
    writer.abort()
    assert azurite.committed_blobs(azure_container) == []
    assert azurite.uncommitted_blobs(azure_container) == []
    assert storage.list_partials() == []


KILLED_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from catalog.engine.storage.azure import AzureStorage

    endpoint, container, account, key = sys.argv[1:5]
    storage = AzureStorage(container, "team", account, endpoint, key, block_size=1 << 20)
    writer = storage.open_writer("plan/killed.dump")
    writer.write(os.urandom((2 << 20) + 100))
    while writer._staged < 2:
        time.sleep(0.05)
    print("staged", flush=True)
    time.sleep(60)
    """
)


def test_a_killed_write_leaves_a_partial_that_is_listed_and_removed(storage, azure_container):
    """A worker killed mid-backup: its staged blocks cost space until Azure
    discards them a week later; the orphan scan lists and removes them."""
    storage.put_bytes("plan/kept.dump", b"kept")
    arguments = [azure_container[name] for name in ("endpoint_url", "container", "account_name", "account_key")]
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, *arguments], cwd=ROOT, stdout=subprocess.PIPE)
    try:
        assert writer.stdout.readline() == b"staged\n"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()

    partials = storage.list_partials()
    assert [(p["key"], p["base"], p["size"]) for p in partials] == [("plan/killed.dump", "plan/killed.dump", 2 * MiB)]
    assert partials[0]["started"] > datetime.now(UTC) - timedelta(minutes=5)
    assert storage.list_sizes() == {"plan/kept.dump": 4}  # a partial is not an object

    storage.remove_partial(partials[0])
    assert storage.list_partials() == [] and azurite.uncommitted_blobs(azure_container) == []
    assert storage.get_bytes("plan/kept.dump") == b"kept"


def test_removing_a_partial_never_deletes_a_committed_object_of_that_name(storage, azure_container):
    storage.put_bytes("plan/one.dump", b"committed")
    storage.remove_partial({"key": "plan/one.dump", "base": "plan/one.dump"})
    storage.cleanup_partials("plan/one.dump")
    assert storage.get_bytes("plan/one.dump") == b"committed"


def test_probe_delete_and_listings_stay_inside_the_prefix(storage, azure_container):
    storage.probe()
    assert azurite.committed_blobs(azure_container) == [] and azurite.uncommitted_blobs(azure_container) == []
    azurite.container_client(azure_container).upload_blob("elsewhere/x.dump", b"not ours")
    storage.put_bytes("plan/a.dump", b"1")
    storage.put_bytes("plan/b.dump", b"22")
    storage.put_bytes("other/c.dump", b"333")

    assert storage.list_keys() == ["other/c.dump", "plan/a.dump", "plan/b.dump"]
    assert storage.list_keys("plan/") == ["plan/a.dump", "plan/b.dump"]
    assert storage.list_sizes() == {"other/c.dump": 3, "plan/a.dump": 1, "plan/b.dump": 2}
    storage.delete("plan/a.dump")
    storage.delete("plan/a.dump")  # already gone: nothing to say
    assert not storage.exists("plan/a.dump")
    assert azurite.committed_blobs(azure_container) == ["elsewhere/x.dump", "team/other/c.dump", "team/plan/b.dump"]


@pytest.mark.parametrize("key", ["../escape", "/etc/passwd", "a/../../b", ""])
def test_keys_outside_the_prefix_are_refused(storage, key):
    with pytest.raises(StorageError, match="outside the destination"):
        storage.open_writer(key)


def test_a_sas_token_for_the_container_is_enough(azure_container):
    """No account name, no key: the blob service URL and a container SAS."""
    sas = azurite.container_sas(azure_container)
    storage = AzureStorage(azure_container["container"], endpoint_url=azure_container["endpoint_url"], sas_token=sas)
    storage.probe()
    storage.put_bytes("x.dump", b"via SAS")
    assert storage.get_bytes("x.dump") == b"via SAS"


def test_blocks_grow_so_that_fifty_thousand_hold_more_than_two_terabytes(azure_container):
    assert block_size_for(1) == block_size_for(10_000) == 8 * MiB and block_size_for(10_001) == 16 * MiB
    assert sum(block_size_for(n) for n in range(1, 50_001)) > 2.3 * (1 << 40)
    assert block_size_for(50_000) == 128 * MiB

    storage = storage_in(azure_container, blocks_per_size=2)
    payload = os.urandom(7 * MiB)
    writer = storage.open_writer("growing.dump")
    write_in_pieces(writer, payload, MiB)
    assert writer.commit() == len(payload) and writer._buffers <= 2
    blob = azurite.container_client(azure_container).get_blob_client("growing.dump")
    assert [block.size // MiB for block in blob.get_block_list("committed")[0]] == [1, 1, 2, 2, 1]
    assert storage.get_bytes("growing.dump") == payload


def test_memory_stays_at_a_few_blocks_whatever_the_object_size(azure_container):
    """64 MiB through the writer and back through the reader: Python's own
    allocations stay at a few blocks (the two block buffers are memory maps,
    given back after each block) and a few read chunks (the SDK holds about
    9 bytes per byte of the chunk it reads, see GET_SIZE), never near the
    object's size."""
    storage = storage_in(azure_container, get_size=MiB)
    size = 64 * MiB
    tracemalloc.start()
    try:
        writer = storage.open_writer("big.dump")
        for _ in range(size // MiB):
            writer.write(os.urandom(MiB))
        assert writer.commit() == size
        _, written_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        read = sum(len(chunk) for chunk in storage.open_reader("big.dump"))
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert read == size and writer._buffers == 2
    assert written_peak < 8 * MiB, written_peak
    assert read_peak < 12 * MiB, read_peak


@pytest.fixture
def proxy(azurite_server):
    proxy = FaultyProxy(azurite_server["endpoint_url"])
    yield proxy
    proxy.stop()


def through(proxy, container, **options):
    """The test container, reached through the fault-injecting proxy."""
    return storage_in(container, endpoint_url=f"{proxy.url}/{azurite.ACCOUNT}", **options)


def test_a_read_cut_mid_way_resumes_where_it_stopped(proxy, azure_container):
    payload = os.urandom(2 * GET_SIZE + 777)
    storage = through(proxy, azure_container)
    storage.put_bytes("big.dump", payload)

    reader = storage.open_reader("big.dump")
    first = next(reader)
    # The next ranged GETs are cut half-way through their body: the SDK's own
    # tries of the chunk fail, then the read resumes from where it stopped.
    proxy.plan.add("reset_mid_body", op="get_object", key_suffix="big.dump", times=3)
    rest = b"".join(reader)

    assert first + rest == payload
    cut = [seen for seen in proxy.plan.requests("get_object") if seen.action == "reset_mid_body"]
    assert len(cut) == 3


def test_a_read_that_keeps_breaking_gives_up_in_words(proxy, azure_container):
    storage = through(proxy, azure_container, max_attempts=2)
    storage.put_bytes("big.dump", os.urandom(GET_SIZE + 1))
    reader = storage.open_reader("big.dump")
    next(reader)
    proxy.plan.down()
    with pytest.raises(StorageError, match="Lost the connection to the Azure blob service at http://127.0.0.1"):
        b"".join(reader)


def failure(action):
    """The StorageError an action raises, and all the text a log of it would show."""
    with pytest.raises(StorageError) as caught:
        action()
    return str(caught.value), "".join(traceback.format_exception(caught.value))


def test_errors_say_what_is_wrong_and_never_show_a_secret(azure_container, azurite_server):
    wrong_key = "V3Jvbmcga2V5IGZvciB0aGUgdGVzdA=="
    sas = azurite.container_sas(azure_container)
    read_only = azurite.container_sas(azure_container, "rl")
    expired = azurite.container_sas(azure_container, hours=-1)
    secrets = [wrong_key, sas, read_only, expired, azurite.ACCOUNT_KEY]
    endpoint = azure_container["endpoint_url"]
    cases = [
        (storage_in(azure_container, account_key=wrong_key).probe, "Azure rejected the credentials for container"),
        (
            AzureStorage(azure_container["container"], endpoint_url=endpoint, sas_token=expired).probe,
            "the account key or SAS token is wrong or has expired",
        ),
        (
            AzureStorage(azure_container["container"], endpoint_url=endpoint, sas_token=read_only).probe,
            "Azure denied access to container .*: the credentials lack a permission",
        ),
        (
            storage_in({**azure_container, "container": "no-such-container"}).probe,
            "Azure container no-such-container does not exist in storage account devstoreaccount1",
        ),
        (
            storage_in(azure_container, endpoint_url="http://127.0.0.1:9/devstoreaccount1", max_attempts=2).probe,
            "Cannot reach the Azure blob service at http://127.0.0.1:9/devstoreaccount1",
        ),
        (lambda: storage_in(azure_container).get_bytes("gone.dump"), "The object is missing from container"),
        (
            lambda: AzureStorage(azure_container["container"], endpoint_url=endpoint),
            "No account key or SAS token is set for Azure container",
        ),
        (
            lambda: AzureStorage(azure_container["container"], endpoint_url=f"{endpoint}?{sas}", sas_token=sas),
            "must not carry a query",
        ),
    ]
    for action, expected in cases:
        message, logged = failure(action)
        assert re.search(expected, message), (expected, message)
        # Neither a key nor a SAS token, nor a token's signature alone (as a URL would show it).
        assert not [secret for secret in secrets if secret in logged or secret.split("sig=")[-1] in logged]


def test_immutability_is_refused_rather_than_pretended(storage, azure_container):
    """Azurite accepts an immutability policy on upload and ignores it, and
    refuses to set one afterwards (its README lists immutability policies and
    legal holds as not supported), so Strongroom cannot prove a lock on Azure
    holds and does not offer it. Should this start to fail, Azurite has
    learned immutability: time to offer it."""
    from azure.core.exceptions import HttpResponseError
    from azure.storage.blob import ImmutabilityPolicy

    with pytest.raises(StorageError, match="cannot lock copies"):
        storage.open_writer("plan/locked.dump", retain_until=datetime.now(UTC) + timedelta(days=1))
    blob = azurite.container_client(azure_container).get_blob_client("probe-lock")
    blob.upload_blob(b"x")
    with pytest.raises(HttpResponseError, match="not implemented"):
        blob.set_immutability_policy(
            ImmutabilityPolicy(expiry_time=datetime.now(UTC) + timedelta(days=1), policy_mode="Unlocked")
        )
    blob.delete_blob()  # nothing held it


def test_an_object_replaced_while_it_is_read_is_not_mixed_with_the_new_one(storage):
    storage.put_bytes("plan/one.dump", os.urandom(2 * GET_SIZE))
    reader = storage.open_reader("plan/one.dump")
    next(reader)
    storage.put_bytes("plan/one.dump", os.urandom(2 * GET_SIZE))
    with pytest.raises(StorageError, match="The object changed on the server while it was read from container"):
        next(reader)

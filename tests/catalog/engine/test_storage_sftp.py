"""SFTP storage against a real OpenSSH server (tests/harness/sftp.py): what is
written is what the server's disk holds and what is read back, nothing
half-written is ever visible, reads survive a cut connection, the host key
is checked before anything is sent, and every failure says what is wrong
without a secret in it."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from catalog.engine.errors import StorageError
from catalog.engine.storage.base import PROBE_KEY, READ_CHUNK
from catalog.engine.storage.sftp import FSYNC, PIPELINE_DEPTH, POSIX_RENAME, REQUEST_SIZE, SftpStorage, fingerprint
from tests.harness.disk import tmpfs
from tests.harness.pg import free_port
from tests.harness.sftp import TcpRelay, files_under
from tests.support import wait_for

ROOT = Path(__file__).resolve().parents[3]


def storage_for(place, **options):
    """An SftpStorage on a harness directory, its host key pinned; options override."""
    settings = {
        "server": place["server"],
        "port": place["server_port"],
        "directory": place["path"],
        "username": place["username"],
        "password": place.get("password"),
        "private_key": place.get("private_key"),
        "host_key": place["host_key"],
        "max_attempts": 3,
        "connect_timeout": 5,
        "read_timeout": 10,
    }
    return SftpStorage(**{**settings, **options})


@pytest.fixture
def relay(sftp_server):
    relay = TcpRelay(sftp_server.server.port)
    yield relay
    relay.stop()


def write_in_pieces(writer, payload, piece=1 << 20):
    for start in range(0, len(payload), piece):
        writer.write(payload[start : start + piece])
    return writer.commit()


def test_it_round_trips_an_object_of_many_pipelined_requests(sftp_password_dir):
    storage = storage_for(sftp_password_dir)
    # More than two pipelines' worth in flight, and not a whole number of requests.
    payload = os.urandom(2 * PIPELINE_DEPTH * REQUEST_SIZE + READ_CHUNK + 12345)

    writer = storage.open_writer("nightly/2026/big.dump")
    assert writer.temp.startswith(f"{storage.root}/nightly/2026/big.dump.partial-")
    assert write_in_pieces(writer, payload) == len(payload)

    local = sftp_password_dir["local"]
    assert files_under(local) == ["nightly/2026/big.dump"]
    assert (local / "nightly/2026/big.dump").read_bytes() == payload
    assert oct((local / "nightly/2026/big.dump").stat().st_mode & 0o777) == "0o600"
    assert oct((local / "nightly").stat().st_mode & 0o777) == "0o700"
    chunks = list(storage.open_reader("nightly/2026/big.dump"))
    assert b"".join(chunks) == payload and max(len(chunk) for chunk in chunks) <= READ_CHUNK
    assert storage.read_head("nightly/2026/big.dump", 100) == payload[:100]
    assert storage.size("nightly/2026/big.dump") == len(payload)


def test_the_object_appears_by_an_atomic_rename_only_on_commit(sftp_password_dir):
    storage = storage_for(sftp_password_dir)
    local = sftp_password_dir["local"]
    (local / "one.dump").write_bytes(b"the old copy")
    writer = storage.open_writer("one.dump")
    writer.write(b"new")
    assert (local / "one.dump").read_bytes() == b"the old copy"  # replaced only on commit, in one step
    assert writer.commit() == 3
    assert files_under(local) == ["one.dump"] and (local / "one.dump").read_bytes() == b"new"
    with storage.session() as connection:
        assert {FSYNC, POSIX_RENAME} <= connection.sftp.extensions  # what the server offered, kept


def test_an_empty_object_is_stored_empty(sftp_password_dir):
    storage = storage_for(sftp_password_dir)
    assert storage.open_writer("empty.dump").commit() == 0
    assert (sftp_password_dir["local"] / "empty.dump").read_bytes() == b""
    assert storage.get_bytes("empty.dump") == b"" and list(storage.open_reader("empty.dump")) == []


def test_abort_leaves_nothing(sftp_password_dir):
    storage = storage_for(sftp_password_dir)
    writer = storage.open_writer("nightly/2026/x.dump")
    writer.write(os.urandom(300_000))
    assert len(files_under(sftp_password_dir["local"])) == 1  # the temporary file
    writer.abort()
    assert list(sftp_password_dir["local"].iterdir()) == []  # nor the directories made for it
    assert storage.list_partials() == []


KILLED_WRITER = """
import json, os, sys
from catalog.engine.storage.sftp import SftpStorage
storage = SftpStorage(**json.loads(sys.argv[1]))
writer = storage.open_writer("nightly/killed.dump")
writer.write(os.urandom(200_000))
print(writer.temp, flush=True)
sys.stdin.read()
"""


def test_a_write_killed_midway_leaves_a_partial_that_is_listed_and_removed(sftp_password_dir):
    storage = storage_for(sftp_password_dir)
    options = {k: getattr(storage, k) for k in ("server", "port", "directory", "username", "password", "host_key")}
    worker = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, json.dumps(options)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    temp = worker.stdout.readline().strip()
    on_disk = sftp_password_dir["local"] / os.path.relpath(temp, storage.root)
    wait_for(lambda: on_disk.stat().st_size == 200_000, timeout=10)
    worker.kill()  # the worker dies between two writes: no abort, no clean-up
    worker.wait()

    [partial] = storage.list_partials()
    assert f"{storage.root}/{partial['key']}" == temp
    assert partial["base"] == "nightly/killed.dump" and partial["size"] > 0 and partial["started"] is not None
    assert storage.list_sizes() == {}  # a partial is not an object
    storage.remove_partial(partial)
    assert storage.list_partials() == [] and list(sftp_password_dir["local"].iterdir()) == []


def test_cleanup_partials_removes_only_that_objects_leftovers(sftp_server, sftp_password_dir):
    storage = storage_for(sftp_password_dir)
    local = sftp_password_dir["local"]
    (local / "plan").mkdir()
    for name in ("a.dump.partial-1111", "a.dump.partial-2222", "ab.dump.partial-3333", "a.dump"):
        (local / "plan" / name).write_bytes(b"x")
    sftp_server.chown(local)
    storage.cleanup_partials("plan/a.dump")
    assert files_under(local) == ["plan/a.dump", "plan/ab.dump.partial-3333"]


def test_probe_writes_reads_and_deletes_in_one_connection(sftp_server, sftp_password_dir):
    before = sftp_server.server.log_text().count("Accepted password")
    storage_for(sftp_password_dir).probe()
    assert list(sftp_password_dir["local"].iterdir()) == []
    assert sftp_server.server.log_text().count("Accepted password") == before + 1
    assert PROBE_KEY == ".strongroom-probe"


def test_delete_removes_empty_directories_up_to_but_not_the_destination(sftp_password_dir):
    storage = storage_for(sftp_password_dir)
    storage.put_bytes("plan/2026/one.dump", b"1")
    storage.put_bytes("plan/2025/two.dump", b"2")
    storage.delete("plan/2026/one.dump")
    assert files_under(sftp_password_dir["local"]) == ["plan/2025/two.dump"]
    assert not (sftp_password_dir["local"] / "plan" / "2026").exists()
    storage.delete("plan/2025/two.dump")
    storage.delete("plan/2025/two.dump")  # already gone: nothing to do
    assert sftp_password_dir["local"].is_dir() and list(sftp_password_dir["local"].iterdir()) == []
    assert not storage.exists("plan/2025/two.dump")


def test_it_lists_keys_and_sizes_apart_from_partials(sftp_password_dir):
    storage = storage_for(sftp_password_dir)
    storage.put_bytes("nightly/a.dump", b"a" * 10)
    storage.put_bytes("nightly/a.dump.manifest.json", b"{}")
    storage.put_bytes("weekly/b.dump", b"b" * 3)
    (sftp_password_dir["local"] / "weekly" / "c.dump.partial-abcd").write_bytes(b"half")
    os.symlink("/etc/passwd", sftp_password_dir["local"] / "weekly" / "link")  # not followed

    assert storage.list_sizes() == {"nightly/a.dump": 10, "nightly/a.dump.manifest.json": 2, "weekly/b.dump": 3}
    assert storage.list_keys("nightly/") == ["nightly/a.dump", "nightly/a.dump.manifest.json"]
    assert [p["key"] for p in storage.list_partials()] == ["weekly/c.dump.partial-abcd"]


def test_a_read_cut_midway_goes_on_from_where_it_stopped(sftp_password_dir, relay):
    storage = storage_for(sftp_password_dir)
    payload = os.urandom(6 * READ_CHUNK + 777)
    storage.put_bytes("big.dump", payload)
    through_relay = storage_for(sftp_password_dir, port=relay.port)

    reader = through_relay.open_reader("big.dump")
    first = next(reader)
    relay.cut()  # the link drops: every connection open now is reset
    rest = b"".join(reader)

    assert first + rest == payload
    assert relay.accepted == 2  # the first connection and one more, which read from where the first stopped


def test_a_read_that_keeps_breaking_gives_up_in_words(sftp_password_dir, relay):
    storage = storage_for(sftp_password_dir)
    storage.put_bytes("big.dump", os.urandom(3 * READ_CHUNK))
    reader = storage_for(sftp_password_dir, port=relay.port, max_attempts=2).open_reader("big.dump")
    next(reader)
    relay.down = True
    relay.cut()
    with pytest.raises(StorageError, match=r"gave up after 2 attempts") as caught:
        b"".join(reader)
    assert f"127.0.0.1:{relay.port}" in str(caught.value)
    assert sftp_password_dir["password"] not in str(caught.value)


def test_writing_64_mib_holds_memory_to_a_few_requests(sftp_password_dir):
    storage = storage_for(sftp_password_dir)
    piece = os.urandom(1 << 20)
    tracemalloc.start()
    try:
        writer = storage.open_writer("big.dump")
        for _ in range(64):
            writer.write(piece)
        assert writer.commit() == 64 << 20
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB"
    assert (sftp_password_dir["local"] / "big.dump").stat().st_size == 64 << 20


@pytest.mark.parametrize("name", ["ed25519", "ecdsa-pem", "rsa", "rsa-pem"])
def test_it_signs_in_with_each_kind_of_private_key(sftp_server, sftp_key_dir, name):
    key = sftp_server.keys[name]
    storage = storage_for(sftp_key_dir, private_key=key.private_key.replace("\n", "\r\n"), passphrase=key.passphrase)
    storage.put_bytes("a.dump", b"signed in with a key")
    assert (sftp_key_dir["local"] / "a.dump").read_bytes() == b"signed in with a key"


def assert_no_secret(message, *secrets):
    for secret in secrets:
        if secret:
            assert secret not in message
            for line in secret.splitlines():
                if len(line) > 20:
                    assert line not in message


def test_a_wrong_password_says_authentication_failed(sftp_server, sftp_password_dir):
    with pytest.raises(StorageError) as caught:
        storage_for(sftp_password_dir, password="not-the-password").probe()
    message = str(caught.value)
    assert f"refused the sign-in of user {sftp_server.user}: authentication failed" in message
    assert_no_secret(message, "not-the-password", sftp_server.password)


def test_a_key_that_is_not_authorized_says_so(sftp_server, sftp_key_dir, tmp_path):
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    private = other.read_text()
    with pytest.raises(StorageError, match="authentication failed .wrong key, or the key is not authorized") as caught:
        storage_for(sftp_key_dir, private_key=private).probe()
    assert_no_secret(str(caught.value), private)


@pytest.mark.parametrize(
    ("name", "passphrase", "words"),
    [
        ("rsa", "", "The SFTP private key is encrypted: give its passphrase"),
        ("rsa", "wrong phrase", "cannot be read (wrong passphrase, or not an OpenSSH or PEM private key"),
        ("rsa-pem", "wrong phrase", "cannot be read (wrong passphrase, or not an OpenSSH or PEM private key"),
        ("garbage", "", "cannot be read (not an OpenSSH or PEM private key of type ed25519, ECDSA or RSA)"),
    ],
)
def test_an_unusable_private_key_is_named_without_its_contents(sftp_server, sftp_key_dir, name, passphrase, words):
    text = sftp_server.keys[name].private_key if name != "garbage" else "-----BEGIN NONSENSE-----\nAAAA\n"
    with pytest.raises(StorageError, match=words.replace("(", r"\(").replace(")", r"\)")) as caught:
        storage_for(sftp_key_dir, private_key=text, passphrase=passphrase).probe()
    assert_no_secret(str(caught.value), text, passphrase)


def test_a_missing_directory_is_named(sftp_server, sftp_password_dir):
    storage = storage_for(sftp_password_dir, directory="no/such/place")
    for attempt in (storage.probe, lambda: storage.open_writer("plan/x.dump"), storage.list_sizes):
        with pytest.raises(StorageError, match="The directory no/such/place does not exist on SFTP server 127.0.0.1"):
            attempt()


def test_a_directory_the_user_may_not_write_says_permission_denied(sftp_server, sftp_password_dir):
    locked = sftp_server.home / f"{sftp_password_dir['path']}-root"
    locked.mkdir(mode=0o755)  # root's
    try:
        with pytest.raises(StorageError, match=f"Permission denied on SFTP server .* to user {sftp_server.user}"):
            storage_for(sftp_password_dir, directory=locked.name).probe()
    finally:
        shutil.rmtree(locked)


def test_a_full_disk_on_the_server_says_so_and_leaves_nothing(sftp_server, sftp_password_dir):
    local = sftp_password_dir["local"]
    with tmpfs(local / "small", size="256k"):
        sftp_server.chown(local / "small")
        storage = storage_for(sftp_password_dir, directory=f"{sftp_password_dir['path']}/small")
        writer = storage.open_writer("x.dump")
        with pytest.raises(StorageError, match="Disk full on SFTP server 127.0.0.1:[0-9]+: no space left in"):
            write_in_pieces(writer, os.urandom(1 << 20))
        assert list((local / "small").iterdir()) == []


def test_an_unreachable_server_says_so(sftp_password_dir):
    port = free_port()
    with pytest.raises(StorageError, match=f"SFTP server 127.0.0.1:{port} refused the connection") as caught:
        storage_for(sftp_password_dir, port=port).probe()
    assert_no_secret(str(caught.value), sftp_password_dir["password"])
    with pytest.raises(StorageError, match="Cannot find SFTP server no-such-host.invalid"):
        storage_for(sftp_password_dir, server="no-such-host.invalid").probe()


def test_a_server_that_never_answers_times_out_in_words(sftp_password_dir):
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, says nothing
        port = silent.getsockname()[1]
        with pytest.raises(StorageError, match=f"SFTP server 127.0.0.1:{port} did not answer .* within 1 s"):
            storage_for(sftp_password_dir, port=port, connect_timeout=1).probe()


def test_an_unknown_host_key_is_pinned_through_the_callback_or_refused(sftp_server, sftp_password_dir):
    seen = []
    storage = storage_for(sftp_password_dir, host_key=None, on_new_host_key=lambda line: seen.append(line) or line)
    storage.probe()
    assert seen == [sftp_server.server.host_key_line()]
    assert storage.host_key == seen[0]
    bits, digest, kind = sftp_server.server.fingerprint()  # as ssh-keygen -l says it
    assert fingerprint(seen[0]) == f"{bits} {digest} {kind}"

    with pytest.raises(StorageError, match="no host key is pinned for it") as caught:
        storage_for(sftp_password_dir, host_key=None).probe()
    assert digest in str(caught.value)


def sshd_log_after(server, start, words="[preauth]"):
    """What sshd logged since `start` characters, once `words` is in it."""
    wait_for(lambda: words in server.log_text()[start:], timeout=5)
    return server.log_text()[start:]


def test_a_changed_host_key_is_refused_before_signing_in(sftp_server, sftp_password_dir):
    other = sftp_server.start_server("ecdsa")  # another key, and of another type
    start = len(sftp_server.server.log_text())
    storage = storage_for(sftp_password_dir, host_key=other.host_key_line())

    with pytest.raises(StorageError) as caught:
        storage.probe()

    message = str(caught.value)
    pinned, offered = other.fingerprint(), sftp_server.server.fingerprint()
    assert f"it offers {' '.join(offered)}, but {' '.join(pinned)} is pinned for it" in message
    assert "Nothing was sent to it" in message and "Forget the pinned host key" in message
    log = sshd_log_after(sftp_server.server, start)
    assert "Accepted" not in log and "Failed" not in log  # no password was tried
    assert list(sftp_password_dir["local"].iterdir()) == []

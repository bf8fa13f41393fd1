"""A real OpenSSH server for the SFTP tests, started once per session.

Debian's /usr/sbin/sshd on a free loopback port, with a throwaway host key
(ssh-keygen) and an sshd_config of its own in a temporary directory, serving
only internal-sftp to one throwaway OS user that the harness makes (useradd,
its home under the temporary directory, a password set with chpasswd) and
removes at the end. The user signs in with its password or with one of the
harness's keys (ed25519, ECDSA, RSA; OpenSSH and PEM files, with and without a
passphrase), whose public halves are in an authorized_keys file of the
harness's own. Nothing here reads or writes anyone's ~/.ssh.

useradd and sshd's privilege separation need root: without root, sshd or
useradd the tests that need the server are skipped, saying which.

A TcpRelay stands between a client and a server where a test needs to cut a
connection for real (a read broken mid-way) or to put another server behind
the same address (a server re-keyed)."""

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.harness.pg import free_port

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"
PRIVSEP_DIR = "/run/sshd"  # sshd refuses to start without its privilege separation directory

SSHD_CONFIG = """\
ListenAddress 127.0.0.1
Port {port}
HostKey {host_key}
PidFile {base}/sshd-{port}.pid
AuthorizedKeysFile {base}/authorized_keys/%u
AllowUsers {user}
PermitRootLogin no
UsePAM no
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication yes
# The home is under a temporary directory whose owner is root, not the user.
StrictModes no
Subsystem sftp internal-sftp
ForceCommand internal-sftp
UseDNS no
# Many short connections from one address in a row, some with a wrong password.
MaxStartups 100
MaxAuthTries 20
LogLevel VERBOSE
"""


def missing_requirement():
    """Why the SFTP server cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "the SFTP tests make an OS user (useradd) and start sshd, which need root"
    for tool in (SSHD, "useradd", "userdel", "chpasswd", SSH_KEYGEN):
        if shutil.which(tool) is None:
            return f"{tool} is missing (Debian packages openssh-server, openssh-client and passwd)"
    return None


def keygen(path, kind, passphrase="", pem=False, bits=None):
    """A new key pair at `path` and `path`.pub."""
    command = [SSH_KEYGEN, "-q", "-t", kind, "-N", passphrase, "-C", f"strongroom-test-{kind}", "-f", str(path)]
    if bits:
        command += ["-b", str(bits)]
    if pem:
        command += ["-m", "PEM"]
    subprocess.run(command, check=True, capture_output=True)
    return path


def fingerprint(public_key_path):
    """What `ssh-keygen -l` says of a public key: ("256", "SHA256:…", "(ED25519)")."""
    out = subprocess.run([SSH_KEYGEN, "-l", "-f", str(public_key_path)], check=True, capture_output=True, text=True)
    words = out.stdout.split()
    return words[0], words[1], words[-1]


@dataclass
class ClientKey:
    """A private key the SFTP user may sign in with."""

    name: str
    private_key: str
    passphrase: str = ""


@dataclass
class SshServer:
    """One sshd process: its port, host key and log."""

    base: Path
    user: str
    host_key: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen = None

    @property
    def log(self):
        return self.base / f"sshd-{self.port}.log"

    def start(self):
        config = self.base / f"sshd-{self.port}.config"
        config.write_text(SSHD_CONFIG.format(port=self.port, host_key=self.host_key, base=self.base, user=self.user))
        os.makedirs(PRIVSEP_DIR, mode=0o755, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"sshd did not start: {self.log.read_text()}")
            time.sleep(0.05)
        return self

    def answers(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                return sock.recv(8).startswith(b"SSH-2.0")
        except OSError:
            return False

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def host_key_line(self):
        """The server's public host key as a pinned line: "ssh-ed25519 AAAA…"."""
        kind, blob = Path(f"{self.host_key}.pub").read_text().split()[:2]
        return f"{kind} {blob}"

    def fingerprint(self):
        return fingerprint(f"{self.host_key}.pub")

    def log_text(self):
        return self.log.read_text(errors="replace")


class SftpHarness:
    """The throwaway user, its keys, and the sshd serving it."""

    def __init__(self):
        # Not pytest's tmp_path: that is root's alone (0700), and the user must reach its home.
        self.base = Path(tempfile.mkdtemp(prefix="sr-sftp-"))
        self.base.chmod(0o755)
        self.user = f"srsftp{secrets.token_hex(3)}"
        self.password = f"Sftp-{secrets.token_urlsafe(12)}"
        self.home = self.base / "home"
        self.keys = {}
        self.servers = []
        self.server = None

    def start(self):
        self.make_user()
        self.make_client_keys()
        self.server = self.start_server("ed25519")
        return self

    def make_user(self):
        self.home.mkdir()
        self.home.chmod(0o755)
        subprocess.run(
            ["useradd", "--no-create-home", "--home-dir", str(self.home), "--shell", "/usr/sbin/nologin", self.user],
            check=True,
            capture_output=True,
        )
        subprocess.run(["chpasswd"], input=f"{self.user}:{self.password}\n", text=True, check=True)
        self.chown(self.home)

    def chown(self, path):
        """Makes `path` and everything under it the user's, as if the user had made them."""
        entry = pwd.getpwnam(self.user)
        for each in [Path(path), *Path(path).rglob("*")]:
            os.chown(each, entry.pw_uid, entry.pw_gid, follow_symlinks=False)

    def make_client_keys(self):
        """ed25519 and ECDSA without a passphrase, RSA with one in the OpenSSH and the PEM format."""
        directory = self.base / "client-keys"
        directory.mkdir(mode=0o700)
        made = {
            "ed25519": (keygen(directory / "ed25519", "ed25519"), ""),
            "ecdsa-pem": (keygen(directory / "ecdsa", "ecdsa", pem=True), ""),
            "rsa": (keygen(directory / "rsa", "rsa", passphrase="rsa phrase", bits=2048), "rsa phrase"),
        }
        pem = directory / "rsa-pem"
        shutil.copy(made["rsa"][0], pem)
        shutil.copy(f"{made['rsa'][0]}.pub", f"{pem}.pub")
        # The same RSA key rewritten as a PEM file under another passphrase.
        subprocess.run(
            [SSH_KEYGEN, "-q", "-p", "-m", "PEM", "-P", "rsa phrase", "-N", "pem phrase", "-f", str(pem)],
            check=True,
            capture_output=True,
        )
        made["rsa-pem"] = (pem, "pem phrase")
        # sshd reads the file as the user: readable by all, as ~/.ssh/authorized_keys usually is.
        authorized = self.base / "authorized_keys"
        authorized.mkdir()
        authorized.chmod(0o755)
        lines = {Path(f"{path}.pub").read_text() for path, _ in made.values()}
        (authorized / self.user).write_text("".join(sorted(lines)))
        (authorized / self.user).chmod(0o644)
        self.keys = {name: ClientKey(name, path.read_text(), phrase) for name, (path, phrase) in made.items()}

    def start_server(self, key_kind):
        """Another sshd for the same user, with a host key of its own."""
        host_key = keygen(self.base / f"host-{key_kind}-{secrets.token_hex(3)}", key_kind)
        server = SshServer(self.base, self.user, host_key).start()
        self.servers.append(server)
        return server

    def new_directory(self, name=None):
        """A fresh directory in the user's home: (its name relative to the home, its path)."""
        name = name or f"dest-{secrets.token_hex(4)}"
        path = self.home / name
        path.mkdir(mode=0o700)
        self.chown(path)
        return name, path

    def stop(self):
        for server in self.servers:
            server.stop()
        self.remove_user()
        shutil.rmtree(self.base, ignore_errors=True)

    def remove_user(self):
        """userdel refuses (8) while a session of the user lingers, its client
        not gone yet: waits a little for it, then removes the user anyway."""
        deadline = time.monotonic() + 5
        while subprocess.run(["userdel", self.user], capture_output=True).returncode == 8:
            if time.monotonic() > deadline:
                subprocess.run(["userdel", "--force", self.user], capture_output=True)
                return
            time.sleep(0.2)


def files_under(root):
    """Every file under `root`, as sorted paths relative to it (dotfiles too)."""
    root = Path(root)
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


class TcpRelay:
    """Forwards loopback TCP connections to a server's port. `cut()` resets
    every connection open now (new ones go through), `retarget(port)` sends
    new connections to another server, `down` refuses new ones by resetting them."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.down = False
        self.connections = []
        self.accepted = 0
        self.lock = threading.Lock()
        self.stopping = False
        threading.Thread(target=self._accept, name="tcp-relay", daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
            if self.down:
                reset(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                reset(client)
                continue
            upstream.settimeout(None)
            with self.lock:
                self.connections.append((client, upstream))
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=pump, args=(source, target), daemon=True).start()

    def cut(self):
        with self.lock:
            pairs, self.connections = self.connections, []
        for pair in pairs:
            for sock in pair:
                reset(sock)

    def retarget(self, port):
        self.upstream_port = port

    def stop(self):
        self.stopping = True
        self.cut()
        with contextlib.suppress(OSError):
            self.listener.close()


def pump(source, target):
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def reset(sock):
    """Closes with a TCP reset, as a dropped link or a killed server would look."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


@pytest.fixture(scope="session")
def sftp_server():
    """The session's SFTP harness: `.server` (port, host key), `.user`, `.password`, `.keys`, `.home`."""
    if problem := missing_requirement():
        pytest.skip(problem)
    harness = SftpHarness()
    try:
        harness.start()
    except BaseException:
        harness.stop()
        raise
    yield harness
    harness.stop()


def connection(harness, directory, **secrets_):
    """What a destination needs to reach `directory` (relative to the home or absolute)."""
    return {
        "server": "127.0.0.1",
        "server_port": harness.server.port,
        "username": harness.user,
        "path": str(directory),
        "host_key": harness.server.host_key_line(),
        **secrets_,
    }


@pytest.fixture
def sftp_password_dir(sftp_server):
    """A fresh directory reached by password, named relative to the user's home; `local` is its path here."""
    name, path = sftp_server.new_directory()
    return {**connection(sftp_server, name, password=sftp_server.password), "local": path}


@pytest.fixture
def sftp_key_dir(sftp_server):
    """A fresh directory reached with the ed25519 key, named by its absolute path; `local` is its path here."""
    _, path = sftp_server.new_directory()
    key = sftp_server.keys["ed25519"]
    return {**connection(sftp_server, path, private_key=key.private_key), "local": path}

"""A directory on an SFTP server (OpenSSH, or any server speaking SFTP 3).

A copy is written beside its key under a temporary name (<key>.partial-<random>)
in pipelined requests, fsynced on the server (fsync@openssh.com, where the
server offers it), renamed onto its key in one step (posix-rename@openssh.com)
and its size confirmed. A read goes on from where it stopped when the
connection breaks.

The server's host key is checked before a password or key is sent: against the
key pinned for the destination, or, on the first connection, handed to
`on_new_host_key`, which pins it (or not) and says which key holds. Nothing
here reads or writes ~/.ssh/known_hosts, and no key is accepted silently.

Each operation opens its own connection and closes it when done (a writer or
reader keeps one for its life): storages are made per use, and a paramiko
connection left open would keep its thread and the server's session for ever.
"""

import base64
import contextlib
import errno
import hashlib
import io
import logging
import posixpath
import secrets
import socket
import stat
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

import paramiko
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from paramiko.message import Message
from paramiko.sftp import CMD_DATA, CMD_EXTENDED, CMD_INIT, CMD_READ, CMD_VERSION, CMD_WRITE, int64

from catalog.engine.errors import StorageError
from catalog.engine.storage.base import PROBE_KEY, READ_CHUNK, Partial, check_key
from catalog.engine.storage.local import PARTIAL_MARK

# Requests of 32 KiB, 64 in flight: what OpenSSH's own sftp does (-B 32768 -R 64),
# which every server takes. Memory: the requests in flight and the SSH window.
REQUEST_SIZE = 32 << 10
PIPELINE_DEPTH = 64
# The SSH channel's window: how much the server may send before we read it.
# Twice what the read pipeline asks for, so reads never wait on it.
WINDOW = 2 * PIPELINE_DEPTH * REQUEST_SIZE
FSYNC = "fsync@openssh.com"
POSIX_RENAME = "posix-rename@openssh.com"
STATVFS = "statvfs@openssh.com"
# The key algorithms that prove a host key of each type, for types whose name differs.
HOST_KEY_ALGORITHMS = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256")}
KEY_TYPE_NAMES = {"ssh-ed25519": "ED25519", "ssh-rsa": "RSA"}
# paramiko logs every connection and sign-in at INFO (each operation here opens
# one), and a failed handshake with a traceback from its own thread, while the
# caller gets every failure as a StorageError in words: its lines go to a
# logger of ours that stays quiet unless LOGGING asks for it.
SSH_LOG = "catalog.engine.storage.sftp.ssh"
logging.getLogger(SSH_LOG).setLevel(logging.CRITICAL)


# --- host keys ---------------------------------------------------------------


def host_key_line(key: paramiko.PKey) -> str:
    """A public key as it is pinned: "ssh-ed25519 AAAA…" (no comment)."""
    return f"{key.get_name()} {key.get_base64()}"


def key_blob(line: str) -> bytes:
    """The key itself from a line "type base64 [comment]"."""
    parts = line.split()
    if len(parts) < 2:
        raise ValueError("not a public key line")
    return base64.b64decode(parts[1], validate=True)


def same_key(one: str, other: str) -> bool:
    try:
        return key_blob(one) == key_blob(other)
    except ValueError:
        return False


def fingerprint(line: str) -> str:
    """A public key as `ssh-keygen -l` shows it, without the comment: "256 SHA256:… (ED25519)"."""
    kind = line.split()[0] if line.split() else "?"
    name = KEY_TYPE_NAMES.get(kind, "ECDSA" if kind.startswith("ecdsa-") else kind.upper())
    try:
        blob = key_blob(line)
    except ValueError:
        return f"an unreadable key ({name})"
    try:
        bits = str(paramiko.PKey.from_type_string(kind, blob).get_bits())
    except Exception:  # a key of a type paramiko does not know still has a fingerprint
        bits = "?"
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"{bits} SHA256:{digest} ({name})"


def load_private_key(text: str, passphrase: str | None) -> paramiko.PKey:
    """An ed25519, ECDSA or RSA private key from an OpenSSH or PEM file's text."""
    data = text.replace("\r\n", "\n").strip().encode() + b"\n"  # a browser sends a textarea's lines with CRLF
    password = passphrase.encode() if passphrase else None
    try:
        loaded = _parse_private_key(data, password)
    except TypeError as exc:  # encrypted without a passphrase, or a passphrase for a key that has none
        if password is None:
            raise StorageError("The SFTP private key is encrypted: give its passphrase") from exc
        loaded, password = _parse_private_key(data, None), None
    except (ValueError, UnsupportedAlgorithm) as exc:
        hint = "wrong passphrase, or " if password else ""
        raise StorageError(
            f"The SFTP private key cannot be read ({hint}not an OpenSSH or PEM private key of type "
            "ed25519, ECDSA or RSA)"
        ) from exc
    key_class: Any
    if isinstance(loaded, ed25519.Ed25519PrivateKey):
        key_class = paramiko.Ed25519Key
    elif isinstance(loaded, ec.EllipticCurvePrivateKey):
        key_class = paramiko.ECDSAKey
    elif isinstance(loaded, rsa.RSAPrivateKey):
        key_class = paramiko.RSAKey
    else:
        raise StorageError("The SFTP private key is of a type Strongroom cannot use: give an ed25519, ECDSA or RSA key")
    key: paramiko.PKey = key_class.from_private_key(io.StringIO(data.decode()), password=password)
    return key


def _parse_private_key(data: bytes, password: bytes | None) -> Any:
    try:
        return serialization.load_ssh_private_key(data, password=password)
    except ValueError:
        if b"OPENSSH PRIVATE KEY" in data:
            raise
        return serialization.load_pem_private_key(data, password=password)


class Unreachable(StorageError):
    """The server could not be reached or hung up before signing in: worth trying again later."""


# --- the SFTP session ----------------------------------------------------------


class SftpSession(paramiko.SFTPClient):  # type: ignore[misc]  # paramiko ships no type hints
    """paramiko's SFTP client, keeping the extensions the server announces
    (paramiko reads them and throws them away)."""

    extensions: set[str]

    def _send_version(self) -> int:
        init = Message()
        init.add_int(3)
        self._send_packet(CMD_INIT, init)
        kind, data = self._read_packet()
        if kind != CMD_VERSION:
            raise paramiko.SFTPError("Incompatible sftp protocol")
        reply = Message(data)
        version: int = reply.get_int()
        self.extensions = set()
        while reply.get_remainder():
            self.extensions.add(reply.get_text())
            reply.get_string()  # the extension's version or data
        return version

    def extended(self, name: str, *args: Any) -> Message:
        """An extension's request, answered (an error status raises OSError)."""
        _kind, reply = self._request(CMD_EXTENDED, name, *args)
        return reply


class Pipeline:
    """Requests in flight on one session, their replies taken in the order
    they were sent, whatever order they arrive in. paramiko's own pipelined
    writes leave the replies of the last writes unread, so an error there (a
    full disk) would be lost; here every reply is read and checked."""

    def __init__(self, sftp: SftpSession) -> None:
        self.sftp = sftp
        self.sent: deque[int] = deque()
        self.replies: dict[int, tuple[int, Message]] = {}

    def __len__(self) -> int:
        return len(self.sent)

    def send(self, kind: int, *args: Any) -> None:
        self.sent.append(self.sftp._async_request(self, kind, *args))

    def _async_response(self, kind: int, reply: Message, number: int) -> None:
        """paramiko hands each reply to the object that sent its request."""
        self.replies[number] = (kind, reply)

    def next_reply(self) -> tuple[int, Message]:
        number = self.sent.popleft()
        while number not in self.replies:
            self.sftp._read_response()
        return self.replies.pop(number)

    def next_status(self) -> None:
        """The next reply, a status: raises OSError unless it says OK."""
        _kind, reply = self.next_reply()
        self.sftp._convert_status(reply)

    def next_data(self) -> bytes:
        """The next reply, data (b"" at the end of the file)."""
        kind, reply = self.next_reply()
        if kind == CMD_DATA:
            data: bytes = reply.get_string()
            return data
        try:
            self.sftp._convert_status(reply)
        except EOFError:
            return b""
        raise paramiko.SFTPError("Expected data")


class Connection:
    def __init__(self, transport: paramiko.Transport, sftp: SftpSession) -> None:
        self.transport = transport
        self.sftp = sftp

    def alive(self) -> bool:
        return bool(self.transport.is_active())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.sftp.close()
        with contextlib.suppress(Exception):
            self.transport.close()


def is_disconnect(exc: BaseException, connection: Connection | None = None) -> bool:
    """Whether `exc` is the connection breaking rather than the server's answer."""
    if isinstance(exc, (EOFError, paramiko.SSHException, TimeoutError, ConnectionError)):
        return True
    return isinstance(exc, OSError) and connection is not None and not connection.alive()


def read_range(connection: Connection, handle: bytes, start: int, end: int) -> Iterator[bytes]:
    """Bytes `start` to `end` of an open file, asked for PIPELINE_DEPTH requests
    ahead and yielded in pieces of up to READ_CHUNK."""
    sftp = connection.sftp
    pipeline = Pipeline(sftp)
    asked: deque[tuple[int, int]] = deque()  # (offset, length) of each request in flight
    next_offset, buffer = start, bytearray()
    while asked or next_offset < end:
        while len(asked) < PIPELINE_DEPTH and next_offset < end:
            length = min(REQUEST_SIZE, end - next_offset)
            pipeline.send(CMD_READ, handle, int64(next_offset), length)
            asked.append((next_offset, length))
            next_offset += length
        offset, length = asked.popleft()
        data = pipeline.next_data()
        while len(data) < length:  # a short answer: the rest is asked for before going on
            more = read_at(sftp, handle, offset + len(data), length - len(data))
            if not more:
                raise StorageError("The object ended sooner than its size said (was it changed while being read?)")
            data += more
        buffer += data
        if len(buffer) >= READ_CHUNK:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


def read_at(sftp: SftpSession, handle: bytes, offset: int, length: int) -> bytes:
    pipeline = Pipeline(sftp)
    pipeline.send(CMD_READ, handle, int64(offset), length)
    return pipeline.next_data()


def rename_over(sftp: SftpSession, temp: str, final: str) -> None:
    """A plain SFTP rename, which refuses to replace a file: a manifest
    rewritten in place (a key rotation) replaces the old one in two steps."""
    try:
        sftp.rename(temp, final)
        return
    except OSError:
        try:
            sftp.stat(final)
        except OSError:
            raise  # the rename's own error: nothing was in the way
    sftp.remove(final)
    sftp.rename(temp, final)


# --- storage -------------------------------------------------------------------

NewHostKey = Callable[[str], str | None]


class SftpWriter:
    """One object written to a temporary name on the server, renamed onto its
    key by commit(). `connection` is the writer's own unless `borrowed`."""

    def __init__(self, storage: "SftpStorage", key: str, connection: Connection, borrowed: bool = False) -> None:
        self.storage = storage
        self.key = key
        self.final = storage.path_for(key)
        self.temp = f"{self.final}{PARTIAL_MARK}{secrets.token_hex(4)}"
        self.connection = connection
        self.borrowed = borrowed
        self.size = 0
        self._done = False
        try:
            storage.make_parents(connection, key)
            self._file = connection.sftp.open(self.temp, "wb")
            # Backups are the service user's alone, on the server as on a local disk.
            self._file.chmod(0o600)
        except StorageError:
            self._close_connection()
            raise
        except Exception as exc:
            self._close_connection()
            raise storage.error(exc, f"creating {self.temp}", connection) from exc
        self._pipeline = Pipeline(connection.sftp)
        if not borrowed:  # closed even if neither commit() nor abort() is ever called
            weakref.finalize(self, connection.close).atexit = False

    def write(self, data: bytes) -> None:
        try:
            for start in range(0, len(data), REQUEST_SIZE):
                piece = data[start : start + REQUEST_SIZE]
                self._pipeline.send(CMD_WRITE, self._file.handle, int64(self.size + start), piece)
                if len(self._pipeline) > PIPELINE_DEPTH:
                    self._pipeline.next_status()
        except Exception as exc:
            message = self.storage.write_error_text(exc, self.connection)
            self.abort()
            raise StorageError(message) from exc
        self.size += len(data)

    def commit(self) -> int:
        doing = f"storing {self.final}"
        sftp = self.connection.sftp
        try:
            while len(self._pipeline):
                self._pipeline.next_status()
            if FSYNC in sftp.extensions:
                sftp.extended(FSYNC, self._file.handle)
            self._file.close()
            if POSIX_RENAME in sftp.extensions:
                sftp.posix_rename(self.temp, self.final)  # replaces an object already there in one step
            else:
                rename_over(sftp, self.temp, self.final)
            stored = sftp.stat(self.final).st_size
        except Exception as exc:
            message = self.storage.write_error_text(exc, self.connection)
            self.abort()
            raise StorageError(message) from exc
        self._done = True
        if stored != self.size:
            with contextlib.suppress(Exception):
                sftp.remove(self.final)
            self._close_connection()
            raise StorageError(f"SFTP server {self.storage.where()} stored {stored} bytes of {self.size} for {doing}")
        self._close_connection()
        return self.size

    def abort(self) -> None:
        """Removes the temporary file, over a new connection if this one broke."""
        if self._done:
            return
        self._done = True
        with contextlib.suppress(Exception):
            self._file.close()
        try:
            if self.connection.alive():
                self._remove_temp(self.connection)
            else:
                with self.storage.session() as connection:
                    self._remove_temp(connection)
        except Exception:  # noqa: S110 - left behind, the orphan scan lists it as a partial
            pass
        finally:
            self._close_connection()

    def _remove_temp(self, connection: Connection) -> None:
        connection.sftp.remove(self.temp)
        self.storage.remove_empty_parents(connection, self.key)

    def _close_connection(self) -> None:
        if not self.borrowed:
            self.connection.close()


class SftpStorage:
    """Objects as files under `directory` on the server (relative: from the
    user's home). `host_key` is the pinned one ("ssh-ed25519 AAAA…") or None;
    `on_new_host_key` is told a key seen the first time and answers the key
    pinned now (None: nothing pinned, the key holds for this storage only).
    Without it an unknown key is refused."""

    def __init__(
        self,
        server: str,
        directory: str = "",
        port: int = 22,
        username: str = "",
        password: str | None = None,
        private_key: str | None = None,
        passphrase: str | None = None,
        host_key: str | None = None,
        on_new_host_key: NewHostKey | None = None,
        max_attempts: int = 3,
        connect_timeout: float = 10,
        read_timeout: float = 60,
    ) -> None:
        self.server = server
        self.port = port
        self.directory = directory
        self.root = directory.rstrip("/") or ("/" if directory.startswith("/") else ".")
        self.username = username
        self.password = password or None
        self.private_key = private_key or None
        self.passphrase = passphrase or None
        self.host_key = host_key or None
        self.on_new_host_key = on_new_host_key
        self.max_attempts = max_attempts
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._local = threading.local()  # the connection of an enclosing session(), per thread

    def describe(self) -> str:
        path = self.directory if self.directory.startswith("/") else f"/~/{self.directory}"
        return f"sftp://{self.username}@{self.server}:{self.port}{path}".rstrip("/")

    def where(self) -> str:
        return f"{self.server}:{self.port}"

    def path_for(self, key: str) -> str:
        return posixpath.join(self.root, check_key(key))

    # --- connecting

    def connect(self) -> Connection:
        where = self.where()
        try:
            sock = socket.create_connection((self.server, self.port), timeout=self.connect_timeout)
        except socket.gaierror as exc:
            raise Unreachable(f"Cannot find SFTP server {self.server}: the name does not resolve") from exc
        except ConnectionRefusedError as exc:
            raise Unreachable(f"SFTP server {where} refused the connection (nothing listens on that port)") from exc
        except TimeoutError as exc:
            raise Unreachable(f"Timed out connecting to SFTP server {where} ({self.connect_timeout} s)") from exc
        except OSError as exc:
            raise Unreachable(f"Cannot reach SFTP server {where}: {exc.strerror or exc}") from exc
        transport = paramiko.Transport(sock, default_window_size=WINDOW)
        transport.set_log_channel(SSH_LOG)
        try:
            return self._open_session(transport)
        except StorageError:
            transport.close()
            raise
        except Exception as exc:
            transport.close()
            raise Unreachable(self.connect_error_text(exc)) from exc

    def _open_session(self, transport: paramiko.Transport) -> Connection:
        transport.banner_timeout = transport.handshake_timeout = self.connect_timeout
        transport.auth_timeout = self.connect_timeout
        self._prefer_pinned_key_type(transport)
        transport.start_client(timeout=self.connect_timeout)
        if not transport.initial_kex_done:  # start_client returns quietly when its time is up
            raise transport.get_exception() or TimeoutError("no SSH handshake in time")
        self.check_host_key(transport.get_remote_server_key())
        self.authenticate(transport)
        try:
            sftp = SftpSession.from_transport(transport, window_size=WINDOW)
        except paramiko.SSHException:
            sftp = None
        if sftp is None:
            raise StorageError(f"SFTP server {self.where()} let user {self.username} in but offers no SFTP to it")
        sftp.get_channel().settimeout(self.read_timeout)
        return Connection(transport, sftp)

    def _prefer_pinned_key_type(self, transport: paramiko.Transport) -> None:
        """Asks first for a host key of the pinned key's type: a server with
        keys of several types then proves the one pinned."""
        if not self.host_key:
            return
        kind = self.host_key.split()[0]
        options = transport.get_security_options()
        first = [name for name in HOST_KEY_ALGORITHMS.get(kind, (kind,)) if name in options.key_types]
        options.key_types = [*first, *(name for name in options.key_types if name not in first)]

    def check_host_key(self, key: paramiko.PKey) -> None:
        """Before anything is sent: the key must be the pinned one, or, the
        first time, be accepted by on_new_host_key."""
        seen = host_key_line(key)
        if self.host_key is None:
            if self.on_new_host_key is None:
                raise StorageError(
                    f"SFTP server {self.where()} offers the host key {fingerprint(seen)}, and no host key is pinned "
                    "for it: refusing to sign in to a server that cannot be recognised"
                )
            self.host_key = self.on_new_host_key(seen) or seen
        if not same_key(self.host_key, seen):
            raise StorageError(self.mismatch_text(seen))

    def mismatch_text(self, seen: str) -> str:
        assert self.host_key is not None
        return (
            f"The host key of SFTP server {self.where()} has changed: it offers {fingerprint(seen)}, "
            f"but {fingerprint(self.host_key)} is pinned for it. Nothing was sent to it (no password, no key, "
            "no data). Someone may be intercepting the connection, or the server was re-keyed. If the new key "
            "is legitimate (ask the server's administrator to compare it with ssh-keygen -l -f on the server's "
            "host key), use “Forget the pinned host key” on the destination's page: the next connection pins "
            "the key the server offers then."
        )

    def authenticate(self, transport: paramiko.Transport) -> None:
        attempts: list[tuple[str, Callable[[], object]]] = []
        if self.private_key:
            key = load_private_key(self.private_key, self.passphrase)
            attempts.append(("key", lambda: transport.auth_publickey(self.username, key)))
        if self.password:
            attempts.append(("password", lambda: transport.auth_password(self.username, self.password)))
        if not attempts:
            raise StorageError("Give the SFTP user's password or a private key")
        accepted: list[str] | None = None
        for _name, attempt in attempts:
            try:
                attempt()
            except paramiko.BadAuthenticationType as exc:
                accepted = list(exc.allowed_types)
            except paramiko.AuthenticationException:
                pass
            if transport.is_authenticated():
                return
        tried = " or ".join(name for name, _ in attempts)
        if accepted is not None and not {"password", "publickey"} & set(accepted):
            raise StorageError(
                f"SFTP server {self.where()} does not let user {self.username} sign in with a {tried} "
                f"(it accepts: {', '.join(accepted) or 'nothing'})"
            )
        raise StorageError(
            f"SFTP server {self.where()} refused the sign-in of user {self.username}: authentication failed "
            f"(wrong {tried}, or the key is not authorized for that user)"
        )

    def connect_error_text(self, exc: BaseException) -> str:
        where = self.where()
        if isinstance(exc, TimeoutError) or "banner" in str(exc):
            return (
                f"SFTP server {where} did not answer as an SSH server within {self.connect_timeout} s "
                "(connection timed out)"
            )
        if isinstance(exc, (EOFError, ConnectionError)):
            return f"SFTP server {where} closed the connection during the SSH handshake"
        return f"The SSH handshake with SFTP server {where} failed: {exc}"

    @contextlib.contextmanager
    def session(self) -> Iterator[Connection]:
        """A connection for one operation, or the one an enclosing session() of this thread opened."""
        current: Connection | None = getattr(self._local, "connection", None)
        if current is not None:
            yield current
            return
        connection = self.connect()
        self._local.connection = connection
        try:
            yield connection
        finally:
            self._local.connection = None
            connection.close()

    # --- errors

    def error(self, exc: BaseException, doing: str, connection: Connection | None = None) -> StorageError:
        return StorageError(self.error_text(exc, doing, connection))

    def error_text(self, exc: BaseException, doing: str, connection: Connection | None = None) -> str:
        where = self.where()
        if isinstance(exc, StorageError):
            return str(exc)
        if isinstance(exc, TimeoutError):
            return f"SFTP server {where} stopped answering ({self.read_timeout} s read timeout) while {doing}"
        if is_disconnect(exc, connection):
            return f"Lost the connection to SFTP server {where} while {doing}"
        code = exc.errno if isinstance(exc, OSError) else None
        if code == errno.ENOENT:
            if connection is not None and (missing := self.missing_root_text(connection)):
                return missing
            return f"No such file or directory on SFTP server {where} while {doing}"
        if code in (errno.EACCES, errno.EPERM):
            return f"Permission denied on SFTP server {where} to user {self.username} while {doing}"
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        return f"SFTP server {where} failed while {doing}: {reason}"

    def write_error_text(self, exc: BaseException, connection: Connection) -> str:
        """A failed write in words; the server says only "Failure" when its disk is full, so its free space is asked."""
        doing = f"writing {self.root}"
        if not is_disconnect(exc, connection) and isinstance(exc, OSError) and exc.errno is None:
            free = self.free_bytes(connection)
            if free is not None and free < REQUEST_SIZE * PIPELINE_DEPTH:
                return f"Disk full on SFTP server {self.where()}: no space left in {self.root} ({free} bytes free)"
        return self.error_text(exc, doing, connection)

    def free_bytes(self, connection: Connection) -> int | None:
        """Bytes the user may still write in the directory (statvfs@openssh.com), if the server says."""
        if STATVFS not in connection.sftp.extensions:
            return None
        try:
            reply = connection.sftp.extended(STATVFS, self.root)
        except Exception:
            return None
        _block_size, fragment_size, _blocks, _free, available = (reply.get_int64() for _ in range(5))
        return int(fragment_size * available)

    def missing_root_text(self, connection: Connection) -> str | None:
        """Why the destination's directory cannot be used, when it cannot."""
        try:
            attributes = connection.sftp.stat(self.root)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return f"The directory {self.root} does not exist on SFTP server {self.where()}"
            return None
        if not stat.S_ISDIR(attributes.st_mode or 0):
            return f"{self.root} on SFTP server {self.where()} is not a directory"
        return None

    # --- the Storage interface

    def open_writer(self, key: str, retain_until: datetime | None = None) -> SftpWriter:
        return SftpWriter(self, key, self.connect())

    def put_bytes(self, key: str, data: bytes, retain_until: datetime | None = None) -> None:
        with self.session() as connection:
            writer = SftpWriter(self, key, connection, borrowed=True)
            writer.write(data)
            writer.commit()

    def make_parents(self, connection: Connection, key: str) -> None:
        """Makes the directories between the destination's directory (which
        must exist) and the object, as the service user's alone."""
        parts = PurePosixPath(key).parts[:-1]
        if not parts or self.is_directory(connection, posixpath.join(self.root, *parts)):
            return
        directory = self.root
        for part in parts:
            directory = posixpath.join(directory, part)
            try:
                connection.sftp.mkdir(directory, 0o700)
            except OSError as exc:
                if is_disconnect(exc, connection) or not self.is_directory(connection, directory):
                    raise self.error(exc, f"making the directory {directory}", connection) from exc

    @staticmethod
    def is_directory(connection: Connection, path: str) -> bool:
        try:
            return stat.S_ISDIR(connection.sftp.stat(path).st_mode or 0)
        except OSError:
            return False

    def get_bytes(self, key: str) -> bytes:
        return b"".join(self.open_reader(key))

    def open_reader(self, key: str) -> Iterator[bytes]:
        """The object's chunks. A read that breaks is taken up again from where
        it stopped over a new connection, up to max_attempts in all, provided
        the file is still the one being read (same size and time)."""
        path = self.path_for(key)
        doing = f"reading {path}"
        holder = [self.connect()]
        remote: paramiko.SFTPFile | None
        try:
            remote, size, mtime = self._open_for_reading(holder[0], path)
        except BaseException:
            holder[0].close()
            raise

        def chunks() -> Iterator[bytes]:
            nonlocal remote
            offset, failures = 0, 0
            try:
                while True:
                    try:
                        if remote is None:
                            holder[0] = self.connect()
                            remote = self._reopen(holder[0], path, size, mtime)
                        for chunk in read_range(holder[0], remote.handle, offset, size):
                            offset += len(chunk)
                            yield chunk
                        return
                    except Exception as exc:
                        if not (isinstance(exc, Unreachable) or is_disconnect(exc, holder[0])):
                            raise self.error(exc, doing, holder[0]) from exc
                        failures += 1
                        if failures >= self.max_attempts:
                            raise StorageError(
                                f"{self.error_text(exc, doing, holder[0])}; gave up after {failures} attempts"
                            ) from exc
                    holder[0].close()
                    remote = None
                    time.sleep(min(0.5 * 2 ** (failures - 1), 10))  # back off, as the S3 reads do
            finally:
                holder[0].close()

        reader = chunks()
        # Closed even when the reader is dropped unread (a started one closes in its finally).
        weakref.finalize(reader, lambda: holder[0].close()).atexit = False
        return reader

    def _open_for_reading(self, connection: Connection, path: str) -> tuple[paramiko.SFTPFile, int, int]:
        """(file, size, mtime) of a file opened for reading."""
        try:
            remote = connection.sftp.open(path, "rb")
            attributes = remote.stat()
        except Exception as exc:
            raise self.error(exc, f"opening {path}", connection) from exc
        return remote, int(attributes.st_size or 0), int(attributes.st_mtime or 0)

    def _reopen(self, connection: Connection, path: str, size: int, mtime: int) -> paramiko.SFTPFile:
        """The file again after a reconnection, if it is still the one being read."""
        remote, again_size, again_mtime = self._open_for_reading(connection, path)
        if (again_size, again_mtime) != (size, mtime):
            raise StorageError(f"{path} on SFTP server {self.where()} changed while it was being read")
        return remote

    def read_head(self, key: str, length: int) -> bytes:
        """The first `length` bytes of an object."""
        path = self.path_for(key)
        with self.session() as connection:
            remote, size, _mtime = self._open_for_reading(connection, path)
            try:
                return b"".join(read_range(connection, remote.handle, 0, min(length, size)))
            except Exception as exc:
                raise self.error(exc, f"reading {path}", connection) from exc
            finally:
                with contextlib.suppress(Exception):
                    remote.close()

    def _stat(self, key: str) -> paramiko.SFTPAttributes | None:
        path = self.path_for(key)
        with self.session() as connection:
            try:
                return connection.sftp.stat(path)
            except OSError as exc:
                if exc.errno == errno.ENOENT and not is_disconnect(exc, connection):
                    return None
                raise self.error(exc, f"looking up {path}", connection) from exc

    def exists(self, key: str) -> bool:
        attributes = self._stat(key)
        return attributes is not None and stat.S_ISREG(attributes.st_mode or 0)

    def size(self, key: str) -> int:
        attributes = self._stat(key)
        if attributes is None:
            raise StorageError(f"{self.path_for(key)} does not exist on SFTP server {self.where()}")
        return int(attributes.st_size or 0)

    def delete(self, key: str) -> None:
        path = self.path_for(key)
        with self.session() as connection:
            try:
                connection.sftp.remove(path)
            except OSError as exc:
                if exc.errno != errno.ENOENT or is_disconnect(exc, connection):
                    raise self.error(exc, f"deleting {path}", connection) from exc
            self.remove_empty_parents(connection, key)

    def remove_empty_parents(self, connection: Connection, key: str) -> None:
        """Removes the directories above an object that are now empty, up to
        (not including) the destination's directory; rmdir refuses a full one."""
        parents = PurePosixPath(key).parents
        for parent in list(parents)[:-1]:  # the last is "." (the destination's directory)
            try:
                connection.sftp.rmdir(posixpath.join(self.root, str(parent)))
            except OSError:
                return

    def cleanup_partials(self, key: str) -> None:
        final = PurePosixPath(check_key(key))
        with self.session() as connection:
            directory = posixpath.join(self.root, str(final.parent))
            try:
                names = connection.sftp.listdir(directory)
            except OSError as exc:
                if exc.errno == errno.ENOENT and not is_disconnect(exc, connection):
                    return
                raise self.error(exc, f"listing {directory}", connection) from exc
            for name in names:
                if name.startswith(f"{final.name}{PARTIAL_MARK}"):
                    with contextlib.suppress(FileNotFoundError):
                        connection.sftp.remove(posixpath.join(directory, name))
            self.remove_empty_parents(connection, key)

    def list_keys(self, prefix: str = "") -> list[str]:
        return sorted(key for key in self.list_sizes() if key.startswith(prefix))

    def list_sizes(self) -> dict[str, int]:
        """{key: size} of every complete object (partial files are listed apart)."""
        return {key: attributes.st_size or 0 for key, attributes in self._files() if PARTIAL_MARK not in key}

    def list_partials(self) -> list[Partial]:
        """Temporary files of writes that never finished."""
        return [
            {
                "key": key,
                "base": key.split(PARTIAL_MARK)[0],
                "size": attributes.st_size or 0,
                "started": datetime.fromtimestamp(attributes.st_mtime, UTC) if attributes.st_mtime else None,
            }
            for key, attributes in self._files()
            if PARTIAL_MARK in key
        ]

    def remove_partial(self, partial: Partial) -> None:
        path = self.path_for(partial["key"])
        with self.session() as connection:
            try:
                connection.sftp.remove(path)
            except OSError as exc:
                if exc.errno != errno.ENOENT or is_disconnect(exc, connection):
                    raise self.error(exc, f"removing {path}", connection) from exc
            self.remove_empty_parents(connection, partial["key"])

    def _files(self) -> list[tuple[str, paramiko.SFTPAttributes]]:
        """(key, attributes) of every regular file under the directory (symlinks are not followed)."""
        found: list[tuple[str, paramiko.SFTPAttributes]] = []
        with self.session() as connection:
            pending = [""]
            while pending:
                relative = pending.pop()
                directory = posixpath.join(self.root, relative) if relative else self.root
                try:
                    entries = connection.sftp.listdir_attr(directory)
                except Exception as exc:
                    raise self.error(exc, f"listing {directory}", connection) from exc
                for entry in entries:
                    key = posixpath.join(relative, entry.filename) if relative else entry.filename
                    if stat.S_ISDIR(entry.st_mode or 0):
                        pending.append(key)
                    elif stat.S_ISREG(entry.st_mode or 0):
                        found.append((key, entry))
        return found

    def probe(self) -> None:
        with self.session() as connection:
            if missing := self.missing_root_text(connection):
                raise StorageError(missing)
            payload = secrets.token_bytes(64)
            self.put_bytes(PROBE_KEY, payload)
            if self.read_head(PROBE_KEY, len(payload) + 1) != payload:
                raise StorageError(f"The probe read back from {self.describe()} differs from what was written")
            self.delete(PROBE_KEY)

"""Azure Blob Storage: objects streamed as staged blocks (no temporary file),
made visible only by committing their block list, whose size is confirmed
after the commit.

Staged blocks that are never committed stay on the account, attached to the
blob's name, for up to a week before Azure discards them; until then they
cost space. An aborted write removes its own, and the orphan scan lists those
of a write that was killed (list_partials).

Immutability (version-level WORM) is not offered: it could not be tested, as
Azurite does not implement it (docs/DEPLOYMENT.md).
"""

import contextlib
import logging
import mmap
import queue
import random
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from azure.core import MatchConditions
from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    DecodeError,
    HttpResponseError,
    IncompleteReadError,
    ResourceModifiedError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.storage.blob import BlobBlock, BlobServiceClient, ContainerClient, ExponentialRetry

from catalog.engine.errors import StorageError
from catalog.engine.storage.base import PROBE_KEY, Partial, ViewFile, check_key

BLOCK_SIZE = 8 << 20
# A blob has at most 50,000 blocks, which at 8 MiB each would stop an object at
# 390 GiB. The block size doubles every BLOCKS_PER_SIZE blocks, up to 16 times
# the first: 10,000 blocks each of 8, 16, 32, 64 and 128 MiB hold 2.4 TiB, and
# the two block buffers grow only for objects past 78 GiB.
MAX_BLOCKS = 50_000
BLOCKS_PER_SIZE = 10_000
MAX_DOUBLINGS = 4
# A read is a series of ranged GETs of this size (the SDK's own). The SDK reads
# each into memory through list() of a stream whose len() is the chunk's, so for
# a moment it also holds a list of that many slots: about 9 bytes per byte of a
# chunk, ~38 MB here, whatever the object's size.
GET_SIZE = 4 << 20
AUTH_CODES = ("AuthenticationFailed", "InvalidAuthenticationInfo", "NoAuthenticationInformation")
PERMISSION_CODES = (
    "AuthorizationFailure",
    "AuthorizationPermissionMismatch",
    "AuthorizationResourceTypeMismatch",
    "AuthorizationServiceMismatch",
    "AuthorizationSourceIPMismatch",
    "AuthorizationProtocolMismatch",
    "InsufficientAccountPermissions",
)
# The SDK logs every request and response, headers and all, at INFO: quiet
# here unless something goes wrong (a logging configuration can still lower it).
HTTP_LOG = logging.getLogger(f"{__name__}.http")
HTTP_LOG.setLevel(logging.WARNING)
# What breaks a read mid-way and is worth resuming; anything else (a missing
# blob, a changed one, refused credentials) would fail again the same way.
BROKEN_READ = (ServiceRequestError, ServiceResponseError, IncompleteReadError, DecodeError)


def block_size_for(number: int, first: int = BLOCK_SIZE, blocks_per_size: int = BLOCKS_PER_SIZE) -> int:
    """The size of block `number` (from 1) of an object."""
    return first << min(MAX_DOUBLINGS, (number - 1) // blocks_per_size)


def error_code(exc: HttpResponseError) -> str:
    """The service's error code (ContainerNotFound …), which the storage SDK adds to its errors."""
    code = getattr(exc, "error_code", None) or ""
    return str(getattr(code, "value", code))  # the SDK gives some as members of its StorageErrorCode


def broken_read(exc: BaseException) -> bool:
    """Whether a read broke in transit. A connection cut mid-body comes as an
    HttpResponseError with no status (there was no answer to judge) around
    the transport's error, itself wrapped again once the SDK's own tries of
    the chunk are spent."""
    if isinstance(exc, BROKEN_READ):
        return True
    cause = getattr(exc, "inner_exception", None)
    return isinstance(exc, HttpResponseError) and exc.status_code is None and cause is not None


def describe_azure_error(exc: Exception, storage: "AzureStorage") -> str:
    """The error in words naming the container, never a key or token: the
    SDK's own messages can hold the request URL, and with it a SAS token."""
    where = f"container {storage.container} of {storage.account_display}"
    endpoint = storage.endpoint_display
    if isinstance(exc, (ServiceRequestTimeoutError, ServiceResponseTimeoutError)):
        return f"Timed out waiting for the Azure blob service at {endpoint} ({where})"
    if isinstance(exc, ServiceRequestError):
        return f"Cannot reach the Azure blob service at {endpoint}"
    if isinstance(exc, (ServiceResponseError, IncompleteReadError, DecodeError)):
        return f"Lost the connection to the Azure blob service at {endpoint} ({where})"
    if isinstance(exc, HttpResponseError):
        return describe_http_error(exc, storage, where)
    if isinstance(exc, ValueError):  # e.g. an account key that is not base64
        return f"The Azure credentials of {where} cannot be used: the account key or SAS token is malformed"
    return f"Azure error on {where}: {type(exc).__name__}"


def describe_http_error(exc: HttpResponseError, storage: "AzureStorage", where: str) -> str:
    # The SDK wraps a body it could not read (after its own retries) in an HttpResponseError.
    if broken_read(exc):
        return f"Lost the connection to the Azure blob service at {storage.endpoint_display} ({where})"
    code = error_code(exc)
    status = exc.status_code or 0
    if code == "ContainerNotFound":
        return f"Azure container {storage.container} does not exist in {storage.account_display}"
    if code == "BlobNotFound" or (status == 404 and not code):
        return f"The object is missing from {where}"
    if code in ("InvalidResourceName", "OutOfRangeInput") and status == 400:
        return (
            f"{storage.container} is not a valid Azure container name "
            "(3 to 63 lowercase letters, digits and single hyphens)"
        )
    if rejected_credentials(exc, code):
        return f"Azure rejected the credentials for {where}: the account key or SAS token is wrong or has expired"
    if code in PERMISSION_CODES or status == 403:
        return (
            f"Azure denied access to {where}: the credentials lack a permission "
            "(Strongroom needs read, write, delete and list)"
        )
    if isinstance(exc, ResourceModifiedError) or code == "ConditionNotMet":
        return f"The object changed on the server while it was read from {where}"
    retried = f" (gave up after {storage.max_attempts} attempts)" if status >= 500 or status == 408 else ""
    return f"Azure error on {where}: {code or status or type(exc).__name__} {exc.reason or ''}".rstrip() + retried


def rejected_credentials(exc: HttpResponseError, code: str) -> bool:
    """Whether the service could not authenticate the request (a wrong key, a
    SAS token that is altered or expired) rather than refused what it asked.
    Azure says AuthenticationFailed; Azurite says AuthorizationFailure, and
    both say so in the same words."""
    if code in AUTH_CODES or (isinstance(exc, ClientAuthenticationError) and code not in PERMISSION_CODES):
        return True
    return exc.status_code == 403 and "failed to authenticate" in (exc.reason or "").lower()


class AzureWriter:
    """Blocks staged from a background thread, so the pipeline keeps
    producing while the previous block is in flight; commit() commits the
    block list, which makes the object visible at once and whole.

    Memory stays at two block buffers: one being filled here while the other
    is staged (bigger ones for the later blocks of a very large object, see
    block_size_for). A full block waits for the one before it to be staged,
    and that backpressure reaches the dump through the pipeline's bounded
    queues. The buffers are anonymous memory maps, reused block after block,
    whose pages go back to the system as soon as their block is staged."""

    BUFFERS = 2

    def __init__(self, storage: "AzureStorage", key: str) -> None:
        self.storage = storage
        self.key = storage.full_key(key)
        self.blob = storage.container_client.get_blob_client(self.key)
        self.size = 0
        # Block IDs must be unique within the blob and all of one length; the
        # writer's own prefix keeps two writers of one name from mixing blocks.
        self._prefix = secrets.token_hex(4)
        self._block_ids: list[str] = []
        self._staged = 0  # blocks the service took
        self._buffer: mmap.mmap | None = None  # the block being filled, or none yet
        self._block_size = storage.block_size  # the size of that block
        self._filled = 0  # bytes of it that belong to the block
        self._buffers = 0  # buffers made so far, at most BUFFERS
        self._error: str | None = None
        # (block ID, buffer, length): at most one block handed over and not yet taken
        self._queue: queue.Queue[tuple[str, mmap.mmap, int] | None] = queue.Queue(maxsize=1)
        self._free: queue.Queue[mmap.mmap] = queue.Queue()  # buffers whose block is staged
        self._thread: threading.Thread | None = None
        self._done = False

    def write(self, data: bytes) -> None:
        self.size += len(data)
        rest = memoryview(data)
        while rest:
            buffer = self._buffer if self._buffer is not None else self._next_buffer()
            room = self._block_size - self._filled
            piece, rest = rest[:room], rest[room:]
            end = self._filled + len(piece)
            buffer[self._filled : end] = piece
            self._filled = end
            if end == self._block_size:
                self._queue_block()

    def _next_buffer(self) -> mmap.mmap:
        """A buffer for the next block: a new one while there are fewer than
        BUFFERS, else the first whose block is staged (waiting for it), made
        anew when the blocks have grown past it."""
        number = len(self._block_ids) + 1
        if number > MAX_BLOCKS:
            raise StorageError(f"The object is larger than the {MAX_BLOCKS} blocks of an Azure blob can hold")
        self._block_size = block_size_for(number, self.storage.block_size, self.storage.blocks_per_size)
        if self._buffers < self.BUFFERS:
            self._buffers += 1
            self._buffer = self._new_buffer()
        else:
            self._buffer = self._free.get()
            if len(self._buffer) < self._block_size:
                self._buffer.close()
                self._buffer = self._new_buffer()
        return self._buffer

    def _new_buffer(self) -> mmap.mmap:
        # Private: pages given back with MADV_DONTNEED are really freed.
        return mmap.mmap(-1, self._block_size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)

    def _queue_block(self) -> None:
        """Hands the block being filled to the staging thread."""
        if self._buffer is None or not self._filled:
            return
        if self._error:
            raise StorageError(self._error)
        if self._thread is None:
            self._thread = threading.Thread(target=self._stage_blocks, name="azure-stage", daemon=True)
            self._thread.start()
        block_id = f"{self._prefix}-{len(self._block_ids) + 1:06d}"
        self._block_ids.append(block_id)
        self._queue.put((block_id, self._buffer, self._filled))
        self._buffer, self._filled = None, 0

    def _stage_blocks(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            block_id, buffer, length = item
            try:
                if self._error is None:
                    self.blob.stage_block(block_id, ViewFile(memoryview(buffer)[:length]), length=length)
                    self._staged += 1
            except Exception as exc:
                self._error = describe_azure_error(exc, self.storage)
            finally:
                buffer.madvise(mmap.MADV_DONTNEED)  # its pages go back now; written again, they come back zeroed
                self._free.put(buffer)  # given back even after a failure, so write() never waits for ever

    def _finish_blocks(self) -> None:
        """Waits until every block handed over is staged."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        self._release_buffers()
        if self._error:
            raise StorageError(self._error)

    def _release_buffers(self) -> None:
        buffers = [self._buffer] if self._buffer is not None else []
        while not self._free.empty():
            buffers.append(self._free.get())
        self._buffer = None
        for buffer in buffers:
            with contextlib.suppress(BufferError):  # still viewed by a body the SDK kept: goes with it
                buffer.close()

    def commit(self) -> int:
        try:
            self._queue_block()  # the last block, shorter than the others (none for an empty object)
            self._finish_blocks()
            # The commit is what makes the object exist: whole, or not at all. Committing
            # the same list again (a retry after a lost answer) gives the same object.
            self.blob.commit_block_list([BlobBlock(block_id) for block_id in self._block_ids])
            self._done = True
            stored = self.blob.get_blob_properties().size
        except StorageError:
            self.abort()
            raise
        except Exception as exc:
            self.abort()
            raise StorageError(describe_azure_error(exc, self.storage)) from None
        if stored != self.size:
            self.storage.delete_full_key(self.key)
            raise StorageError(f"Azure stored {stored} bytes of {self.size} for {self.key}")
        return self.size

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._error = self._error or "aborted"
        with contextlib.suppress(StorageError):
            self._finish_blocks()
        if self._staged:
            # Nothing to remove when no block got through (a server out of reach would only
            # make this wait through its retries again). A failure here, or a block staged
            # whose answer was lost, leaves blocks to the orphan scan, or to Azure after a week.
            with contextlib.suppress(StorageError):
                self.storage.discard_uncommitted(self.key)


class JitteredRetry(ExponentialRetry):
    """The SDK's retries (throttling, 5xx answers, timeouts, broken
    connections) with botocore's backoff: exponential with full jitter, up to
    1, 2, 4, 8 … 20 s. The SDK's own waits 15 s first, then 18, 24, 42 …"""

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        return random.uniform(0, min(20, 2 ** (settings["count"] - 1)))  # count is 1 before the first retry


class AzureStorage:
    def __init__(
        self,
        container: str,
        prefix: str = "",
        account_name: str | None = None,
        endpoint_url: str | None = None,
        account_key: str | None = None,
        sas_token: str | None = None,
        max_attempts: int = 3,
        connect_timeout: float = 10,
        read_timeout: float = 60,
        block_size: int = BLOCK_SIZE,
        blocks_per_size: int = BLOCKS_PER_SIZE,
        get_size: int = GET_SIZE,
    ) -> None:
        self.container = container
        self.prefix = prefix.strip("/")
        self.account_name = account_name or ""
        self.max_attempts = max_attempts
        self.block_size = block_size  # the first blocks'; later ones grow (block_size_for)
        self.blocks_per_size = blocks_per_size
        account_url = self.account_url(endpoint_url)
        self.endpoint_display = account_url
        self.account_display = f"storage account {self.account_name}" if self.account_name else account_url
        self.container_client: ContainerClient = BlobServiceClient(
            account_url,
            credential=self.credential(account_key, sas_token),
            # max_attempts counts the first try; the SDK counts retries.
            retry_policy=JitteredRetry(retry_total=max_attempts - 1),
            connection_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_single_get_size=get_size,
            max_chunk_get_size=get_size,
            logger=HTTP_LOG,
        ).get_container_client(container)

    def account_url(self, endpoint_url: str | None) -> str:
        """The blob service URL: the endpoint given, or the account's own."""
        if not endpoint_url:
            if not self.account_name:
                raise StorageError("Name the Azure storage account, or give its blob service URL")
            return f"https://{self.account_name}.blob.core.windows.net"
        parts = urlsplit(endpoint_url)
        if parts.query or parts.fragment or parts.username or parts.password:
            # A SAS token there would be shown on pages and in messages as part of the URL.
            raise StorageError(
                "The Azure blob service URL must not carry a query or credentials; give the SAS token in its own field"
            )
        return endpoint_url.rstrip("/")

    def credential(self, account_key: str | None, sas_token: str | None) -> Any:
        if account_key:
            if not self.account_name:
                raise StorageError("Name the Azure storage account: an account key signs requests in its name")
            return AzureNamedKeyCredential(self.account_name, account_key)
        if sas_token:
            return AzureSasCredential(sas_token.lstrip("?"))
        raise StorageError(f"No account key or SAS token is set for Azure container {self.container}")

    def describe(self) -> str:
        return f"azure://{self.account_name or self.endpoint_display}/{self.container}/{self.prefix}".rstrip("/")

    def full_key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, method: str, full_key: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.container_client.get_blob_client(full_key), method)(**kwargs)
        except AzureError as exc:
            raise StorageError(describe_azure_error(exc, self)) from None

    def open_writer(self, key: str, retain_until: datetime | None = None) -> AzureWriter:
        if retain_until is not None:
            raise StorageError("Azure destinations cannot lock copies against deletion in Strongroom")
        return AzureWriter(self, key)

    def put_bytes(self, key: str, data: bytes, retain_until: datetime | None = None) -> None:
        writer = self.open_writer(key, retain_until)
        writer.write(data)
        writer.commit()

    def get_bytes(self, key: str) -> bytes:
        return b"".join(self.open_reader(key))

    def open_reader(self, key: str) -> Iterator[bytes]:
        """The object's chunks. The SDK retries a request, and the body of a
        chunk a few times; a read that still breaks is resumed from where it
        stopped, by a ranged GET of the same object (If-Match its ETag), up to
        max_attempts in all."""
        full_key = self.full_key(key)
        download = self._call("download_blob", full_key)
        etag, size = download.properties.etag, download.size

        def chunks() -> Iterator[bytes]:
            nonlocal download
            offset, failures = 0, 0
            while True:
                try:
                    for chunk in download.chunks():
                        offset += len(chunk)
                        yield chunk
                    return
                except Exception as exc:
                    if not broken_read(exc):
                        raise StorageError(describe_azure_error(exc, self)) from None
                    failures += 1
                    if failures >= self.max_attempts:
                        raise StorageError(describe_azure_error(exc, self)) from None
                if offset >= size:
                    return
                time.sleep(min(0.5 * 2 ** (failures - 1), 10))  # back off, as the SDK does between requests
                download = self._call(
                    "download_blob", full_key, offset=offset, etag=etag, match_condition=MatchConditions.IfNotModified
                )

        return chunks()

    def read_head(self, key: str, length: int) -> bytes:
        """The first `length` bytes of an object, by a ranged GET."""
        full_key = self.full_key(key)
        try:
            data: bytes = self.container_client.get_blob_client(full_key).download_blob(0, length).readall()
        except HttpResponseError as exc:
            if exc.status_code == 416:  # an empty object has no first byte
                return b""
            raise StorageError(describe_azure_error(exc, self)) from None
        except AzureError as exc:
            raise StorageError(describe_azure_error(exc, self)) from None
        return data

    def exists(self, key: str) -> bool:
        # An object whose blocks are staged but not committed does not exist yet.
        exists: bool = self._call("exists", self.full_key(key))
        return exists

    def size(self, key: str) -> int:
        size: int = self._call("get_blob_properties", self.full_key(key)).size
        return size

    def delete(self, key: str) -> None:
        self.delete_full_key(self.full_key(key))

    def delete_full_key(self, full_key: str) -> None:
        try:
            self.container_client.delete_blob(full_key, delete_snapshots="include")
        except HttpResponseError as exc:
            if error_code(exc) != "BlobNotFound":  # already gone, as a delete of S3 says nothing then
                raise StorageError(describe_azure_error(exc, self)) from None
        except AzureError as exc:
            raise StorageError(describe_azure_error(exc, self)) from None

    def discard_uncommitted(self, full_key: str) -> None:
        """Removes the staged blocks of a name that has no committed object:
        deleting the blob takes them with it. A committed object of that name
        is left alone (its stray blocks go with Azure's week)."""
        if not self._call("exists", full_key):
            self.delete_full_key(full_key)

    def cleanup_partials(self, key: str) -> None:
        self.discard_uncommitted(self.full_key(key))

    def list_keys(self, prefix: str = "") -> list[str]:
        return sorted(self._list(prefix))

    def list_sizes(self) -> dict[str, int]:
        return {key: entry.size for key, entry in self._list().items()}

    def list_partials(self) -> list[Partial]:
        """Names with staged blocks and no committed object: writes that were
        killed before they committed or aborted. Listed with uncommitted blobs
        first, so that a write committing in between is not taken for one."""
        every = self._list(uncommitted=True)
        committed = self._list()
        return [
            {"key": key, "base": key, "size": self._staged_size(key), "started": entry.creation_time}
            for key, entry in sorted(every.items())
            if key not in committed
        ]

    def _staged_size(self, key: str) -> int:
        _, uncommitted = self._call("get_block_list", self.full_key(key), block_list_type="uncommitted")
        return sum(block.size for block in uncommitted)

    def remove_partial(self, partial: Partial) -> None:
        self.discard_uncommitted(self.full_key(partial["key"]))

    def _list(self, prefix: str = "", uncommitted: bool = False) -> dict[str, Any]:
        """{key relative to the prefix: listing entry} of the container."""
        base = f"{self.prefix}/" if self.prefix else ""
        include = ["uncommittedblobs"] if uncommitted else None
        try:
            entries = self.container_client.list_blobs(name_starts_with=base + prefix, include=include)
            return {entry.name[len(base) :]: entry for entry in entries}
        except AzureError as exc:
            raise StorageError(describe_azure_error(exc, self)) from None

    def probe(self) -> None:
        payload = secrets.token_bytes(64)
        self.put_bytes(PROBE_KEY, payload)
        if self.get_bytes(PROBE_KEY) != payload:
            raise StorageError(f"The probe read back from {self.describe()} differs from what was written")
        self.delete(PROBE_KEY)

"""S3 or any S3-compatible endpoint: objects streamed as a multipart upload
(no temporary file) whose size is confirmed after completion."""

import contextlib
import hashlib
import mmap
import queue
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from catalog.engine.errors import StorageError
from catalog.engine.storage.base import PROBE_KEY, READ_CHUNK, Partial, ViewFile, check_key

PART_SIZE = 8 << 20  # S3 parts must be at least 5 MiB, except the last
# An upload has at most 10,000 parts, which at 8 MiB each would stop an object
# at 78 GiB. The part size doubles every PARTS_PER_SIZE parts, up to 64 times
# the first: 1,500 parts each of 8, 16, 32, 64, 128 and 256 MiB, then 512 MiB,
# hold 1.2 TiB, and the two part buffers grow only for objects past 11 GiB.
MAX_PARTS = 10_000
PARTS_PER_SIZE = 1500
MAX_DOUBLINGS = 6


def part_size_for(number: int, first: int = PART_SIZE, parts_per_size: int = PARTS_PER_SIZE) -> int:
    """The size of part `number` (from 1) of a multipart upload."""
    return first << min(MAX_DOUBLINGS, (number - 1) // parts_per_size)


def describe_s3_error(exc: Exception, storage: "S3Storage") -> str:
    where = f"bucket {storage.bucket}"
    if isinstance(exc, botocore.exceptions.EndpointConnectionError):
        return f"Cannot reach S3 endpoint {storage.endpoint_url or 'AWS'}"
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return "No S3 credentials are set for this destination"
    if isinstance(exc, botocore.exceptions.ConnectTimeoutError):
        return f"Timed out connecting to S3 endpoint {storage.endpoint_url or 'AWS'}"
    if isinstance(exc, botocore.exceptions.ReadTimeoutError):
        return f"S3 endpoint {storage.endpoint_url or 'AWS'} stopped answering (read timeout) for {where}"
    if isinstance(exc, (botocore.exceptions.HTTPClientError, botocore.exceptions.IncompleteReadError)):
        return f"Lost the connection to S3 endpoint {storage.endpoint_url or 'AWS'} for {where}"
    if isinstance(exc, botocore.exceptions.ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket",) or (code == "404" and "Bucket" in str(exc)):
            return f"S3 bucket {storage.bucket} does not exist"
        if code in ("NoSuchKey", "404"):
            return f"The object is missing from {where}"
        if code in ("AccessDenied", "403", "AllAccessDisabled"):
            return f"S3 access denied for {where}"
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidClientTokenId"):
            return f"S3 rejected the credentials for {where} ({code})"
        message = exc.response.get("Error", {}).get("Message", "")
        if exc.response.get("ResponseMetadata", {}).get("MaxAttemptsReached"):
            message += f" (gave up after {storage.max_attempts} attempts)"
        return f"S3 error on {where}: {code} {message}".strip()
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return f"S3 error on {where}: {type(exc).__name__}"
    return f"S3 error on {where}: {exc}"


class PartBody(ViewFile):
    """A part as botocore reads it: in pieces of at most 256 KiB, as botocore
    asks for 1 MiB at a time and each piece read is one more copy in flight."""

    PIECE = 256 << 10


class S3Writer:
    """A multipart upload fed part by part from a background thread, so the
    pipeline keeps producing while the previous part is in flight.

    Memory stays at two part buffers: one being filled here while the other
    is uploaded (bigger ones for the later parts of a very large object, see
    part_size_for). A full part waits for the upload
    before it (that backpressure reaches the dump through the pipeline's
    bounded queues). The buffers are anonymous memory maps, reused part after
    part: the pages of one whose upload is over are handed back to the system
    at once (malloc keeps freed 8 MiB blocks for itself, so fresh bytes per
    part added up), and a page costs memory only once written, so a small
    object costs its own size."""

    BUFFERS = 2

    def __init__(self, storage: "S3Storage", key: str, retain_until: datetime | None = None) -> None:
        self.storage = storage
        self.key = storage.full_key(key)
        self.lock = storage.lock_arguments(retain_until)
        self.size = 0
        self._buffer: mmap.mmap | None = None  # the part being filled, or none yet
        self._part_size = storage.part_size  # the size of that part
        self._filled = 0  # bytes of it that belong to the part
        self._buffers = 0  # buffers made so far, at most BUFFERS
        self._parts: list[dict[str, Any]] = []
        self._upload_id: str | None = None
        self._error: str | None = None
        # (part number, buffer, length): at most one part handed over and not yet taken
        self._queue: queue.Queue[tuple[int, mmap.mmap, int] | None] = queue.Queue(maxsize=1)
        self._free: queue.Queue[mmap.mmap] = queue.Queue()  # buffers whose upload is over
        self._thread: threading.Thread | None = None
        self._part_number = 0
        self._done = False

    def _start(self) -> None:
        try:
            response = self.storage.client.create_multipart_upload(
                Bucket=self.storage.bucket, Key=self.key, **self.lock
            )
        except Exception as exc:
            raise StorageError(describe_s3_error(exc, self.storage)) from exc
        self._upload_id = response["UploadId"]
        self._thread = threading.Thread(target=self._upload_parts, name="s3-upload", daemon=True)
        self._thread.start()

    def _upload_parts(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            number, buffer, length = item
            try:
                if self._error is None:
                    self._upload_part(number, PartBody(memoryview(buffer)[:length]))
            except Exception as exc:
                self._error = describe_s3_error(exc, self.storage)
            finally:
                buffer.madvise(mmap.MADV_DONTNEED)  # its pages go back now; written again, they come back zeroed
                self._free.put(buffer)  # given back even after a failure, so write() never waits for ever

    def _upload_part(self, number: int, body: PartBody) -> None:
        response = self.storage.client.upload_part(
            Bucket=self.storage.bucket, Key=self.key, UploadId=self._upload_id, PartNumber=number, Body=body
        )
        self._parts.append({"PartNumber": number, "ETag": response["ETag"]})

    def write(self, data: bytes) -> None:
        self.size += len(data)
        rest = memoryview(data)
        while rest:
            buffer = self._buffer if self._buffer is not None else self._next_buffer()
            room = self._part_size - self._filled
            piece, rest = rest[:room], rest[room:]
            end = self._filled + len(piece)
            buffer[self._filled : end] = piece
            self._filled = end
            if end == self._part_size:
                self._queue_part()

    def _next_buffer(self) -> mmap.mmap:
        """A buffer for the next part: a new one while there are fewer than
        BUFFERS, else the first whose upload is over (waiting for it), made
        anew when the parts have grown past it."""
        number = self._part_number + 1
        if number > MAX_PARTS:
            raise StorageError(f"The object is larger than the {MAX_PARTS} parts of an S3 upload can hold (1.2 TiB)")
        self._part_size = part_size_for(number, self.storage.part_size, self.storage.parts_per_size)
        if self._buffers < self.BUFFERS:
            self._buffer = self._new_buffer()
            self._buffers += 1
        else:
            self._buffer = self._free.get()
            if len(self._buffer) < self._part_size:
                self._buffer.close()
                self._buffer = self._new_buffer()
        return self._buffer

    def _new_buffer(self) -> mmap.mmap:
        # Private: pages given back with MADV_DONTNEED are really freed (a shared
        # mapping would keep them, out of this process's RSS but not out of memory).
        return mmap.mmap(-1, self._part_size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)

    def _queue_part(self) -> None:
        """Hands the part being filled to the upload thread."""
        if self._buffer is None or not self._filled:
            return
        if self._upload_id is None:
            self._start()
        if self._error:
            raise StorageError(self._error)
        self._part_number += 1
        self._queue.put((self._part_number, self._buffer, self._filled))
        self._buffer, self._filled = None, 0

    def _release_buffers(self) -> None:
        """Unmaps the part buffers as soon as the object is done with (the upload
        thread has ended, so none is in flight). One still viewed by a body
        botocore kept goes when that does."""
        buffers = [self._buffer] if self._buffer is not None else []
        while not self._free.empty():
            buffers.append(self._free.get())
        self._buffer, self._filled = None, 0
        for buffer in buffers:
            with contextlib.suppress(BufferError):
                buffer.close()

    def _finish_parts(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
        self._release_buffers()
        if self._error:
            raise StorageError(self._error)

    def commit(self) -> int:
        client, bucket = self.storage.client, self.storage.bucket
        try:
            if self._upload_id is None:
                # Small object: one plain PUT is durable when it returns.
                body = PartBody(memoryview(self._buffer)[: self._filled]) if self._buffer is not None else b""
                client.put_object(Bucket=bucket, Key=self.key, Body=body, **self.lock)
                del body
                self._release_buffers()
            else:
                self._queue_part()  # the last part, shorter than the others
                self._finish_parts()
                self._complete(sorted(self._parts, key=lambda p: p["PartNumber"]))
                self._done = True
                # A CreateMultipartUpload retried after its answer was lost left another upload.
                # A failure is harmless here; the destination's orphan scan lists it.
                with contextlib.suppress(StorageError):
                    self.storage.abort_uploads(self.key)
            head = client.head_object(Bucket=bucket, Key=self.key)
            stored = head["ContentLength"]
            if self.lock:
                self.storage.confirm_lock(self.key, head, self.lock)
        except StorageError:
            self.abort()
            raise
        except Exception as exc:
            self.abort()
            raise StorageError(describe_s3_error(exc, self.storage)) from exc
        self._done = True
        if stored != self.size:
            self.storage.delete_full_key(self.key)
            raise StorageError(f"S3 stored {stored} bytes of {self.size} for {self.key}")
        return self.size

    def _complete(self, parts: list[dict[str, Any]]) -> None:
        """Completes the upload. When an attempt completed it but its answer
        was lost, a retry may be told NoSuchUpload (real S3 answers it again,
        others do not): the object is then ours if its ETag is the one S3
        derives from our parts' ETags, and anything else stays a failure."""
        client, bucket = self.storage.client, self.storage.bucket
        try:
            client.complete_multipart_upload(
                Bucket=bucket, Key=self.key, UploadId=self._upload_id, MultipartUpload={"Parts": parts}
            )
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                raise
            try:
                stored = client.head_object(Bucket=bucket, Key=self.key).get("ETag")
            except botocore.exceptions.ClientError:
                raise exc from None
            if stored != multipart_etag(parts):
                raise

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._error = self._error or "aborted"
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
        self._release_buffers()
        if self._upload_id is not None:
            with contextlib.suppress(Exception):
                self.storage.client.abort_multipart_upload(
                    Bucket=self.storage.bucket, Key=self.key, UploadId=self._upload_id
                )


def multipart_etag(parts: list[dict[str, Any]]) -> str:
    """The ETag S3 gives an object completed from these parts (unencrypted or SSE-S3)."""
    digests = b"".join(bytes.fromhex(part["ETag"].strip('"')) for part in parts)
    return f'"{hashlib.md5(digests).hexdigest()}-{len(parts)}"'


def _locked_until(head: dict[str, Any]) -> datetime:
    """The retain-until date a HEAD response reports (aware), or the epoch."""
    until = head.get("ObjectLockRetainUntilDate")
    return until if until is not None else datetime(1970, 1, 1, tzinfo=UTC)


class S3Storage:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        lock_mode: str | None = None,
        max_attempts: int = 3,
        connect_timeout: float = 10,
        read_timeout: float = 60,
        part_size: int = PART_SIZE,
        parts_per_size: int = PARTS_PER_SIZE,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        # With Object Lock the bucket is versioned: deleting must remove the
        # versions themselves, or a delete marker would hide a copy that still
        # takes space (and the lock would stop nothing).
        self.lock_mode = lock_mode
        self.max_attempts = max_attempts
        self.part_size = part_size  # the first parts'; later ones grow (part_size_for)
        self.parts_per_size = parts_per_size
        # botocore's standard retry mode tries again, with exponential backoff
        # and full jitter, after throttling, 5xx answers, timeouts and
        # connections that break before the response.
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region or None,
            aws_access_key_id=access_key_id or None,
            aws_secret_access_key=secret_access_key or None,
            config=Config(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                # total_max_attempts counts the first try; botocore's max_attempts would
                # count retries only, one more request than the error message says.
                retries={"total_max_attempts": max_attempts, "mode": "standard"},
            ),
        )

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def full_key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(Bucket=self.bucket, **kwargs)
        except Exception as exc:
            raise StorageError(describe_s3_error(exc, self)) from exc

    def lock_arguments(self, retain_until: datetime | None) -> dict[str, Any]:
        if not (self.lock_mode and retain_until):
            return {}
        return {"ObjectLockMode": self.lock_mode, "ObjectLockRetainUntilDate": retain_until}

    def open_writer(self, key: str, retain_until: datetime | None = None) -> S3Writer:
        return S3Writer(self, key, retain_until)

    def put_bytes(self, key: str, data: bytes, retain_until: datetime | None = None) -> None:
        lock = self.lock_arguments(retain_until)
        self._call("put_object", Key=self.full_key(key), Body=data, **lock)
        head = self._call("head_object", Key=self.full_key(key))
        if head["ContentLength"] != len(data):
            raise StorageError(f"S3 stored {head['ContentLength']} bytes of {len(data)} for {key}")
        if lock:
            self.confirm_lock(self.full_key(key), head, lock)

    def confirm_lock(self, full_key: str, head: dict[str, Any], lock: dict[str, Any]) -> None:
        """Makes sure the stored object really is locked until the date asked for.

        Some S3 servers ignore the lock headers of a multipart upload; then the
        retention is set explicitly, and if it still does not hold, the copy
        fails rather than pretending to be immutable."""
        wanted = lock["ObjectLockRetainUntilDate"]
        # Servers report whole seconds; a second's slack keeps that from failing a copy.
        if _locked_until(head) >= wanted - timedelta(seconds=1):
            return
        self._call(
            "put_object_retention",
            Key=full_key,
            Retention={"Mode": lock["ObjectLockMode"], "RetainUntilDate": wanted},
        )
        if _locked_until(self._call("head_object", Key=full_key)) < wanted - timedelta(seconds=1):
            raise StorageError(f"S3 did not apply Object Lock to {full_key} in bucket {self.bucket}")

    def get_bytes(self, key: str) -> bytes:
        return b"".join(self.open_reader(key))

    def open_reader(self, key: str) -> Iterator[bytes]:
        """The object's chunks. botocore retries a request, not a body: a read
        that breaks mid-way is resumed from where it stopped, by a ranged GET
        of the same object (If-Match its ETag), up to max_attempts in all."""
        full_key = self.full_key(key)
        response = self._call("get_object", Key=full_key)
        etag = response["ETag"]

        def chunks() -> Iterator[bytes]:
            nonlocal response
            offset, failures = 0, 0
            while True:
                body = response["Body"]
                try:
                    for chunk in body.iter_chunks(READ_CHUNK):
                        offset += len(chunk)
                        yield chunk
                    return
                except botocore.exceptions.BotoCoreError as exc:
                    failures += 1
                    if failures >= self.max_attempts:
                        raise StorageError(describe_s3_error(exc, self)) from exc
                except Exception as exc:
                    raise StorageError(describe_s3_error(exc, self)) from exc
                finally:
                    body.close()
                time.sleep(min(0.5 * 2 ** (failures - 1), 10))  # back off, as botocore does between requests
                response = self._call("get_object", Key=full_key, Range=f"bytes={offset}-", IfMatch=etag)

        return chunks()

    def read_head(self, key: str, length: int) -> bytes:
        """The first `length` bytes of an object, by a ranged GET."""
        body = self._call("get_object", Key=self.full_key(key), Range=f"bytes=0-{length - 1}")["Body"]
        try:
            data: bytes = body.read()
            return data
        except Exception as exc:
            raise StorageError(describe_s3_error(exc, self)) from exc
        finally:
            body.close()

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.full_key(key))
            return True
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise StorageError(describe_s3_error(exc, self)) from exc

    def size(self, key: str) -> int:
        size: int = self._call("head_object", Key=self.full_key(key))["ContentLength"]
        return size

    def delete(self, key: str) -> None:
        self.delete_full_key(self.full_key(key))

    def delete_full_key(self, full_key: str) -> None:
        if not self.lock_mode:
            self._call("delete_object", Key=full_key)
            return
        listing = self._call("list_object_versions", Prefix=full_key)
        versions = [
            entry["VersionId"]
            for entry in listing.get("Versions", []) + listing.get("DeleteMarkers", [])
            if entry["Key"] == full_key
        ]
        for version_id in versions:
            self._call("delete_object", Key=full_key, VersionId=version_id)

    def cleanup_partials(self, key: str) -> None:
        self.abort_uploads(self.full_key(key))

    def abort_uploads(self, full_key: str) -> None:
        """Aborts every unfinished multipart upload of exactly this key."""
        uploads = self._call("list_multipart_uploads", Prefix=full_key).get("Uploads", [])
        for upload in uploads:
            if upload["Key"] == full_key:
                self._call("abort_multipart_upload", Key=full_key, UploadId=upload["UploadId"])

    def list_keys(self, prefix: str = "") -> list[str]:
        return sorted(self._list("list_objects_v2", "Contents", prefix))

    def list_sizes(self) -> dict[str, int]:
        return {key: entry["Size"] for key, entry in self._list("list_objects_v2", "Contents").items()}

    def list_partials(self) -> list[Partial]:
        """Multipart uploads that were started and never completed or aborted."""
        uploads = self._list("list_multipart_uploads", "Uploads", many=True)
        return [
            {"key": key, "base": key, "upload_id": entry["UploadId"], "started": entry.get("Initiated")}
            for key, entries in uploads.items()
            for entry in entries
        ]

    def remove_partial(self, partial: Partial) -> None:
        self._call("abort_multipart_upload", Key=self.full_key(partial["key"]), UploadId=partial["upload_id"])

    def _list(self, operation: str, field: str, prefix: str = "", many: bool = False) -> dict[str, Any]:
        """{key relative to the prefix: listing entry (or entries)} of a paginated listing."""
        base = f"{self.prefix}/" if self.prefix else ""
        found: dict[str, Any] = {}
        try:
            pages = self.client.get_paginator(operation).paginate(Bucket=self.bucket, Prefix=base + prefix)
            for page in pages:
                for entry in page.get(field, []):
                    key = entry["Key"][len(base) :]
                    if many:
                        found.setdefault(key, []).append(entry)
                    else:
                        found[key] = entry
        except Exception as exc:
            raise StorageError(describe_s3_error(exc, self)) from exc
        return found

    def probe(self) -> None:
        payload = secrets.token_bytes(64)
        self.put_bytes(PROBE_KEY, payload)
        if self.get_bytes(PROBE_KEY) != payload:
            raise StorageError(f"The probe read back from {self.describe()} differs from what was written")
        self.delete(PROBE_KEY)
        if self.lock_mode:
            self.check_object_lock()

    def check_object_lock(self) -> None:
        try:
            config = self.client.get_object_lock_configuration(Bucket=self.bucket)["ObjectLockConfiguration"]
        except botocore.exceptions.ClientError as exc:
            if "ObjectLockConfiguration" in exc.response.get("Error", {}).get("Code", ""):
                config = {}
            else:
                raise StorageError(describe_s3_error(exc, self)) from exc
        if config.get("ObjectLockEnabled") != "Enabled":
            raise StorageError(
                f"Object Lock is not enabled on bucket {self.bucket}; it can only be turned on when the bucket "
                "is created; create a new bucket with Object Lock, or leave the Object Lock days empty"
            )
